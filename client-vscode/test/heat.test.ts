import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatShare, heatColor, maxAbsScore, relativeIntensity, signOf } from '../src/heat';

function alphaOf(color: string): number {
  const match = /rgba\(\d+, \d+, \d+, ([\d.]+)\)/.exec(color);
  assert.ok(match, `not an rgba colour: ${color}`);
  return Number(match[1]);
}

test('relative intensity is |score| over the largest |score|, clamped, and 0 without a scale', () => {
  assert.equal(relativeIntensity(0.25, 0.5), 0.5);
  assert.equal(relativeIntensity(-0.5, 0.5), 1);
  assert.equal(relativeIntensity(0.9, 0.5), 1);
  assert.equal(relativeIntensity(0.3, 0), 0);
  assert.equal(relativeIntensity(Number.NaN, 1), 0);
});

test('stronger scores get more opaque colours, signs get different hues, zero is transparent', () => {
  const weak = heatColor('positive', 0.1);
  const strong = heatColor('positive', 0.9);
  assert.ok(alphaOf(strong) > alphaOf(weak));
  assert.notEqual(heatColor('positive', 0.5).split(',')[0], heatColor('negative', 0.5).split(',')[0]);
  assert.equal(heatColor('positive', 0), 'transparent');
  assert.equal(signOf(-0.01), 'negative');
  assert.equal(signOf(0), 'positive');
});

test('maxAbsScore ignores non-finite values and takes negatives by magnitude', () => {
  assert.equal(maxAbsScore([0.1, -0.7, Number.NaN, Number.POSITIVE_INFINITY, 0.3]), 0.7);
  assert.equal(maxAbsScore([]), 0);
});

test('shares print as signed percentages', () => {
  assert.equal(formatShare(0.1234), '+12.3%');
  assert.equal(formatShare(-0.05), '−5.0%');
  assert.equal(formatShare(0.0001), '+0.0%');
  assert.equal(formatShare(Number.NaN), 'n/a');
});
