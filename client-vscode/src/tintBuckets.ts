// Turns a token's attribution over context units into a few groups of editor ranges, one group
// per (sign, strength level). VS Code decorations are styled per decoration type, not per range,
// so proportional tinting means a small fixed set of types, each used for the ranges in its band.

import { heatColor, maxAbsScore, relativeIntensity, ScoreSign, signOf } from './heat';
import type { LspRange, ScoredUnit } from './protocol';

export interface TintBucket {
  sign: ScoreSign;
  /** 1..levels; higher is stronger. */
  level: number;
  ranges: LspRange[];
}

export interface TintOptions {
  /** Number of strength bands per sign. */
  levels: number;
  /**
   * Units below this fraction of the strongest unit are left untinted: with a thousand context
   * units, the long tail would otherwise wash the whole editor in a faint colour.
   */
  minRelative: number;
}

export const DEFAULT_TINT_OPTIONS: TintOptions = { levels: 6, minRelative: 0.05 };

export function tintLevel(intensity: number, levels: number): number {
  return Math.max(1, Math.min(levels, Math.ceil(intensity * levels)));
}

/** The background colour of one band, shared by the decoration types and the tests. */
export function tintColor(sign: ScoreSign, level: number, levels: number): string {
  return heatColor(sign, level / levels, 0.55, 0.1);
}

/** Groups scored units into bands; buckets are ordered by sign, then level, and never empty. */
export function tintBuckets(units: readonly ScoredUnit[], options: TintOptions = DEFAULT_TINT_OPTIONS): TintBucket[] {
  const maxAbs = maxAbsScore(units.map((unit) => unit.score));
  const byKey = new Map<string, TintBucket>();
  for (const unit of units) {
    const intensity = relativeIntensity(unit.score, maxAbs);
    if (intensity <= 0 || intensity < options.minRelative) {
      continue;
    }
    const sign = signOf(unit.score);
    const level = tintLevel(intensity, options.levels);
    const key = `${sign}:${level}`;
    let bucket = byKey.get(key);
    if (!bucket) {
      bucket = { sign, level, ranges: [] };
      byKey.set(key, bucket);
    }
    bucket.ranges.push(unit.range);
  }
  return [...byKey.values()].sort((a, b) =>
    a.sign === b.sign ? a.level - b.level : a.sign === 'positive' ? -1 : 1,
  );
}
