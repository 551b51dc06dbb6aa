// What the status bar says for each server state. Besides the server's own states
// (whence/status), the client has two of its own: before the server has said anything, and after
// its process is gone.

import type { WhenceStatus } from './protocol';

export type ClientStatus =
  | WhenceStatus
  | { state: 'starting'; message?: string | null }
  | { state: 'stopped'; message?: string | null };

export interface StatusPresentation {
  /** Status bar text, with a codicon. */
  text: string;
  /** Plain-text tooltip, one fact a line. */
  tooltip: string;
  /** Errors get the error background, so that a dead server is noticed. */
  isError: boolean;
}

function clampPercent(progress: number | null | undefined): number | undefined {
  if (typeof progress !== 'number' || !Number.isFinite(progress)) {
    return undefined;
  }
  return Math.max(0, Math.min(100, Math.round(progress)));
}

export function presentStatus(status: ClientStatus): StatusPresentation {
  const lines: string[] = [];
  const model = 'model' in status ? status.model : undefined;
  const device = 'device' in status ? status.device : undefined;
  if (model) {
    lines.push(`Model: ${model}`);
  }
  if (device) {
    lines.push(`Device: ${device}`);
  }
  if (status.message) {
    lines.push(status.message);
  }
  const stats = 'stats' in status ? status.stats : undefined;
  if (stats) {
    lines.push(
      `Records: ${stats.records ?? 0} · attribution rows pending: ${stats.attributionPending ?? 0} · completion cache hits: ${stats.completionCacheHits ?? 0}`,
    );
  }
  const lastMs = 'lastCompletionMs' in status ? status.lastCompletionMs : undefined;
  if (typeof lastMs === 'number' && Number.isFinite(lastMs)) {
    lines.push(`Last completion: ${Math.round(lastMs)} ms`);
  }
  lines.push('Click to open the whence server log.');
  const tooltip = lines.join('\n');

  switch (status.state) {
    case 'starting':
      return { text: '$(loading~spin) whence: starting', tooltip, isError: false };
    case 'loading': {
      const percent = clampPercent((status as WhenceStatus).progress);
      const suffix = percent === undefined ? '' : ` ${percent}%`;
      return { text: `$(loading~spin) whence: loading model${suffix}`, tooltip, isError: false };
    }
    case 'ready': {
      const activity = 'activity' in status ? status.activity : undefined;
      if (activity) {
        return { text: `$(sync~spin) whence: ${activity}`, tooltip, isError: false };
      }
      return { text: `$(check) whence: ${device || 'ready'}`, tooltip, isError: false };
    }
    case 'error':
      return { text: '$(error) whence: error', tooltip, isError: true };
    case 'stopped':
      return { text: '$(debug-disconnect) whence: stopped', tooltip, isError: true };
  }
}

/** Validates a whence/status payload from the wire; unknown shapes become an error status. */
export function parseStatus(payload: unknown): WhenceStatus {
  if (typeof payload === 'object' && payload !== null) {
    const candidate = payload as Record<string, unknown>;
    if (candidate.state === 'loading' || candidate.state === 'ready' || candidate.state === 'error') {
      return candidate as unknown as WhenceStatus;
    }
  }
  return { state: 'error', message: `Unexpected whence/status payload: ${JSON.stringify(payload)}` };
}
