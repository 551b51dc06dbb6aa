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

test('the matrix a notification carries for a watched record is kept only when it is whole and of that record', () => {
  const matrix = {
    recordId: 'rec-1', method: 'm', tokens: [{ text: 'x', range: { start: { line: 0, character: 0 }, end: { line: 0, character: 1 } }, prob: 1 }],
    units: [], scores: [null], view: { columns: [], places: [], codes: [], lines: [], rowStates: ['computing'], truth: [null], summary: '', pending: 1 },
  };
  assert.deepEqual(parseRowsReady({ ...sample, matrix })?.matrix, matrix);
  // not this record's, not whole, or not there: the notification stands, without a matrix
  assert.equal(parseRowsReady({ ...sample, matrix: { ...matrix, recordId: 'rec-2' } })?.matrix, undefined);
  assert.equal(parseRowsReady({ ...sample, matrix: { ...matrix, view: undefined } })?.matrix, undefined);
  assert.equal(parseRowsReady({ ...sample, matrix: { ...matrix, tokens: [] } })?.matrix, undefined);
  assert.deepEqual(parseRowsReady({ ...sample, matrix: 'x' }), sample);
  assert.equal(parseRowsReady({ ...sample, matrixFollows: true })?.matrixFollows, true);
  assert.equal(parseRowsReady({ ...sample, matrixFollows: 1 })?.matrixFollows, undefined);
});
