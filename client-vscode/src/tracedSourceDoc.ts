// How a traced source (whence/tracedSource) becomes a read-only virtual document: its title,
// which carries the license so that it is visible before anyone copies from it, and the matched
// lines to highlight.

import type { TracedSource } from './protocol';

export const TRACE_SCHEME = 'whence-trace';

function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter((part) => part.length > 0);
  return parts.length > 0 ? parts[parts.length - 1] : 'traced source';
}

/** Tab title: "posixpath.py [PSF-2.0] L12-30". A slash would start a new path segment, so none. */
export function tracedSourceTitle(source: TracedSource): string {
  const license = (source.license || 'NOASSERTION').replace(/[\\/]/g, '∕');
  const span = source.startLine === source.endLine ? `L${source.startLine}` : `L${source.startLine}-${source.endLine}`;
  return `${baseName(source.path)} [${license}] ${span}`;
}

/** 0-based, inclusive line span to highlight, clamped to the content. */
export function matchedLines(source: TracedSource): { first: number; last: number } {
  const lineCount = Math.max(1, source.content.split(/\r\n|\n/).length);
  const first = Math.min(Math.max(0, source.startLine - 1), lineCount - 1);
  const last = Math.min(Math.max(first, source.endLine - 1), lineCount - 1);
  return { first, last };
}
