// One colour scale for every place the client shows attribution (the matrix webview and the
// editor tinting), so that the same score looks the same in both. Scores are signed: positive
// (the unit pushed towards the token) is warm, negative (pushed away) is cool.

export type ScoreSign = 'positive' | 'negative';

const WARM = [232, 121, 22] as const;
const COOL = [38, 125, 230] as const;

/** |score| relative to the largest |score| in view, in 0..1; 0 when there is nothing to compare. */
export function relativeIntensity(score: number, maxAbs: number): number {
  if (!Number.isFinite(score) || !Number.isFinite(maxAbs) || maxAbs <= 0) {
    return 0;
  }
  return Math.min(1, Math.abs(score) / maxAbs);
}

export function signOf(score: number): ScoreSign {
  return score < 0 ? 'negative' : 'positive';
}

/**
 * A translucent colour for a signed intensity. The floor keeps the weakest non-zero cell visible
 * against the editor background; zero stays fully transparent so that "no influence" reads as
 * blank rather than as faint colour.
 */
export function heatColor(sign: ScoreSign, intensity: number, maxAlpha = 0.85, minAlpha = 0.08): string {
  if (!(intensity > 0)) {
    return 'transparent';
  }
  const [r, g, b] = sign === 'negative' ? COOL : WARM;
  const alpha = minAlpha + (maxAlpha - minAlpha) * Math.min(1, intensity);
  return `rgba(${r}, ${g}, ${b}, ${alpha.toFixed(3)})`;
}

/** Largest |score| over all numbers given, ignoring non-finite ones. */
export function maxAbsScore(values: Iterable<number>): number {
  let max = 0;
  for (const value of values) {
    if (Number.isFinite(value) && Math.abs(value) > max) {
      max = Math.abs(value);
    }
  }
  return max;
}

/** A row's share as a signed percentage, e.g. "+12.3%"; the sign matters, so it is always shown. */
export function formatShare(score: number): string {
  if (!Number.isFinite(score)) {
    return 'n/a';
  }
  const percent = score * 100;
  const rounded = Math.abs(percent) < 0.05 ? 0 : percent;
  return `${rounded < 0 ? '−' : '+'}${Math.abs(rounded).toFixed(1)}%`;
}
