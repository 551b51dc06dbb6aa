// `whence/rowsReady`: the server announces rows of a record as they arrive, so views that show
// pending rows (the matrix panel, the context tint) refresh when there is something new instead
// of asking on a timer; for the record an open panel watches it carries the whole matrix, which
// the panel renders as it is. Pure, so it is tested without VS Code.

import type { AttributionMatrix, RowsReady } from './protocol';

/** The notification's payload, or undefined when it is not one (an unknown server, a bad message). */
export function parseRowsReady(payload: unknown): RowsReady | undefined {
  if (typeof payload !== 'object' || payload === null) {
    return undefined;
  }
  const body = payload as Record<string, unknown>;
  const indexes = body.tokenIndexes;
  if (
    typeof body.recordId !== 'string' ||
    typeof body.uri !== 'string' ||
    !Array.isArray(indexes) ||
    !indexes.every((index) => Number.isInteger(index)) ||
    typeof body.done !== 'number' ||
    typeof body.total !== 'number'
  ) {
    return undefined;
  }
  return {
    recordId: body.recordId,
    uri: body.uri,
    tokenIndexes: indexes as number[],
    done: body.done,
    total: body.total,
    ...(body.verified === true ? { verified: true } : {}),
    ...(typeof body.error === 'string' ? { error: body.error } : {}),
    ...(isMatrixOf(body.matrix, body.recordId) ? { matrix: body.matrix } : {}),
    ...(body.matrixFollows === true ? { matrixFollows: true } : {}),
  };
}

/** A pushed matrix is used only when it is whole and of the record the notification names. */
function isMatrixOf(matrix: unknown, recordId: string): matrix is AttributionMatrix {
  if (typeof matrix !== 'object' || matrix === null) {
    return false;
  }
  const { recordId: id, tokens, units, scores, view } = matrix as Record<string, unknown>;
  return (
    id === recordId &&
    Array.isArray(tokens) &&
    tokens.length > 0 &&
    Array.isArray(units) &&
    Array.isArray(scores) &&
    typeof view === 'object' &&
    view !== null &&
    Array.isArray((view as Record<string, unknown>).columns) &&
    Array.isArray((view as Record<string, unknown>).lines)
  );
}

/** Whether `rows` can change what a view of `recordId` shows (token `tokenIndex`, or any token). */
export function rowsConcern(rows: RowsReady, recordId: string, tokenIndex?: number): boolean {
  if (rows.recordId !== recordId) {
    return false;
  }
  // an error ends the wait for every row of the record
  return tokenIndex === undefined || rows.error !== undefined || rows.tokenIndexes.includes(tokenIndex);
}
