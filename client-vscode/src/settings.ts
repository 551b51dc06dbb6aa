// The server's settings (docs/lsp-protocol.md, "Settings") and how the client hands them over.
// The same keys live under the `whence` configuration section next to the client's own keys
// (`whence.server.*`, `whence.client.*`, `whence.trace.*`), which the server must not receive.

export type ServerSettings = {
  model: string | null;
  device: 'auto' | 'cpu' | 'cuda';
  /** Decoding weights on a CPU: fp32 (the model's own), fp16 or int8 (faster; measured by bench generate). */
  precision: 'fp32' | 'fp16' | 'int8';
  maxNewTokens: number;
  contextTokens: number;
  /** null: the engine's benchmarked default. */
  attributionMethod:
    | null
    | 'input_x_gradient'
    | 'gradient_norm'
    | 'integrated_gradients'
    | 'attention_rollout'
    | 'value_norm'
    | 'calibrated_attention'
    | 'stacked_attention'
    | 'stacked_patching'
    | 'stacked_leave_one_out'
    | 'ablation'
    | 'occlusion'
    | 'contrastive'
    | 'none';
  diagnosticsShare: number;
  traceIndex: string | null;
  /** null: the engine's default; 0: no prompt-lookup drafts (same completions either way). */
  draftTokens: number | null;
  /** Fill-in-the-middle template: auto (the model's family), off, or a family name. */
  fim: 'auto' | 'off' | 'starcoder' | 'qwen2.5-coder' | 'deepseek-coder' | 'codellama' | 'codestral';
  suffixTokens: number;
  /** Snippets of open and imported workspace files in the prompt. */
  repositoryContext: boolean;
  repositoryTokens: number;
  verifyRows: boolean;
  /** Model time before ghost text shows; past it the lines so far show and the rest follows (0: wait for all). */
  latencyBudgetMs: number;
  /** The longest prefill of context no cache holds; past it a shorter window is read and the full one warmed (0: always full). */
  coldPrefillMs: number;
  /** Model threads; null: fitted to the cores other processes leave free. */
  threads: number | null;
  /** Seconds after an accept at which its retention is recorded (besides each save and close). */
  retentionCheckpointsS: number[];
  /** Flag by this workspace's own edits once it has enough of them (off: the benchmark did not show a gain). */
  workspaceFlags: boolean;
};

/** Defaults exactly as the contract documents them; package.json repeats them (a test checks). */
export const SERVER_SETTING_DEFAULTS: Readonly<ServerSettings> = Object.freeze({
  model: null,
  device: 'auto',
  precision: 'fp16',
  maxNewTokens: 64,
  contextTokens: 1024,
  attributionMethod: null,
  diagnosticsShare: 0.15,
  traceIndex: null,
  draftTokens: null,
  fim: 'auto',
  suffixTokens: 128,
  repositoryContext: true,
  repositoryTokens: 384,
  verifyRows: true,
  latencyBudgetMs: 300,
  coldPrefillMs: 600,
  threads: null,
  retentionCheckpointsS: [30, 120, 600],
  workspaceFlags: false,
});

export const SERVER_SETTING_KEYS = Object.keys(SERVER_SETTING_DEFAULTS) as (keyof ServerSettings)[];

/** Client-only keys under `whence`: never sent to the server. */
export const CLIENT_SETTING_KEYS = ['server.command', 'client.tintContext', 'trace.server'] as const;

/**
 * Picks the server keys out of a configuration reader. An empty string for a nullable setting
 * means "not set" (the Settings UI cannot easily write null), so it becomes null.
 */
export function serverSettingsFrom(read: (key: string) => unknown): ServerSettings {
  const settings: Record<string, unknown> = {};
  for (const key of SERVER_SETTING_KEYS) {
    const value = read(key);
    const fallback = SERVER_SETTING_DEFAULTS[key];
    if (value === undefined) {
      settings[key] = fallback;
    } else if ((key === 'model' || key === 'traceIndex' || key === 'attributionMethod' || key === 'draftTokens' || key === 'threads') && (value === '' || value === null)) {
      settings[key] = null;
    } else {
      settings[key] = value;
    }
  }
  return settings as ServerSettings;
}

/**
 * Filters the object VS Code returns for the `whence` section down to server keys, for answers
 * to workspace/configuration.
 */
export function serverSectionOnly(section: unknown): unknown {
  if (typeof section !== 'object' || section === null) {
    return section;
  }
  const source = section as Record<string, unknown>;
  return serverSettingsFrom((key) => source[key]);
}
