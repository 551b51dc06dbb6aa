import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRowsReady, rowsConcern } from '../src/rowsReady';

const sample = { recordId: 'rec-1', uri: 'file:///w/a.py', tokenIndexes: [0, 3], done: 2, total: 5 };

test('a rowsReady payload is read as sent, and anything else is refused', () => {
  assert.deepEqual(parseRowsReady(sample), sample);
  assert.deepEqual(parseRowsReady({ ...sample, error: 'boom' }), { ...sample, error: 'boom' });
  assert.equal(parseRowsReady(null), undefined);
  assert.equal(parseRowsReady({ ...sample, recordId: 7 }), undefined);
  assert.equal(parseRowsReady({ ...sample, tokenIndexes: ['0'] }), undefined);
  assert.equal(parseRowsReady({ ...sample, done: undefined }), undefined);
});

test('rows concern a view of their record: any token for the matrix, the named token for the tint', () => {
  const rows = parseRowsReady(sample)!;
  assert.equal(rowsConcern(rows, 'rec-1'), true);
  assert.equal(rowsConcern(rows, 'rec-2'), false);
  assert.equal(rowsConcern(rows, 'rec-1', 3), true);
  assert.equal(rowsConcern(rows, 'rec-1', 1), false);
  // a failure ends the wait of every token of the record
  assert.equal(rowsConcern({ ...rows, tokenIndexes: [], error: 'boom' }, 'rec-1', 1), true);
});

test('verified rows are announced as such, and concern the views of their record like any rows', () => {
  const verified = parseRowsReady({ ...sample, verified: true });
  assert.deepEqual(verified, { ...sample, verified: true });
  assert.equal(parseRowsReady({ ...sample, verified: 'yes' })?.verified, undefined);
  assert.equal(rowsConcern(verified!, 'rec-1'), true);
  assert.equal(rowsConcern(verified!, 'rec-1', 3), true);
  assert.equal(rowsConcern(verified!, 'rec-1', 1), false);
});
