import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LspRange, ScoredUnit } from '../src/protocol';
import { tintBuckets, tintColor, tintLevel } from '../src/tintBuckets';

function range(line: number, start: number, end: number): LspRange {
  return { start: { line, character: start }, end: { line, character: end } };
}

test('units land in bands proportional to their score relative to the strongest', () => {
  const units: ScoredUnit[] = [
    { range: range(0, 0, 3), score: 0.6 }, // strongest: top band
    { range: range(0, 4, 7), score: 0.3 }, // half: middle band
    { range: range(1, 0, 2), score: -0.1 }, // negative, a sixth of the strongest
    { range: range(2, 0, 5), score: 0.01 }, // below 5% of the strongest: untinted
    { range: range(3, 0, 5), score: 0 },
  ];
  const buckets = tintBuckets(units, { levels: 6, minRelative: 0.05 });
  assert.deepEqual(
    buckets.map((bucket) => [bucket.sign, bucket.level, bucket.ranges.length]),
    [
      ['positive', 3, 1],
      ['positive', 6, 1],
      ['negative', 1, 1],
    ],
  );
  assert.deepEqual(buckets[1].ranges[0], range(0, 0, 3));
  const tinted = buckets.flatMap((bucket) => bucket.ranges);
  assert.ok(!tinted.some((r) => r.start.line === 2 || r.start.line === 3), 'weak and zero units must stay untinted');
});

test('equal scores share one band, and no band is ever empty', () => {
  const units: ScoredUnit[] = [0, 1, 2].map((line) => ({ range: range(line, 0, 1), score: 0.2 }));
  const buckets = tintBuckets(units);
  assert.equal(buckets.length, 1);
  assert.equal(buckets[0].ranges.length, 3);
  assert.deepEqual(tintBuckets([]), []);
  assert.deepEqual(tintBuckets([{ range: range(0, 0, 1), score: 0 }]), []);
});

test('levels are clamped to 1..levels and band colours grow with the level', () => {
  assert.equal(tintLevel(0.0001, 6), 1);
  assert.equal(tintLevel(1, 6), 6);
  assert.equal(tintLevel(0.5, 6), 3);
  const alpha = (color: string) => Number(/([\d.]+)\)$/.exec(color)![1]);
  assert.ok(alpha(tintColor('positive', 6, 6)) > alpha(tintColor('positive', 1, 6)));
});
