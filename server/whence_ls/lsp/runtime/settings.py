"""The `whence` settings, from initializationOptions and workspace/configuration (same keys)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from whence_ls.engine.attribution.catalogue import METHODS

ATTRIBUTION_CHOICES = (*METHODS, "none")

# protocol key -> dataclass field
_KEYS = {
    "model": "model",
    "device": "device",
    "precision": "precision",
    "maxNewTokens": "max_new_tokens",
    "contextTokens": "context_tokens",
    "attributionMethod": "attribution_method",
    "diagnosticsShare": "diagnostics_share",
    "traceIndex": "trace_index",
    "draftTokens": "draft_tokens",
    "fim": "fim",
    "suffixTokens": "suffix_tokens",
    "repositoryContext": "repository_context",
    "repositoryTokens": "repository_tokens",
    "latencyBudgetMs": "latency_budget_ms",
    "coldPrefillMs": "cold_prefill_ms",
    "threads": "threads",
    "retentionCheckpointsS": "retention_checkpoints_s",
    "workspaceFlags": "workspace_flags",
    "verifyRows": "verify_rows",
}


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    device: str = "auto"
    # weights of the decoding forward on a CPU (`engine/fast_decode.py`): "fp16" (the default:
    # 2.7-2.9x model.generate, mean KL 2e-6 from fp32, the same greedy tokens in `bench
    # generate`), "fp32" (the model's own arithmetic, 1.2-1.5x) or "int8" (KL 0.005)
    precision: str = "fp16"
    max_new_tokens: int = 64
    context_tokens: int = 1024
    attribution_method: str | None = None  # None: the engine's default (set by its benchmark)
    diagnostics_share: float = 0.15
    trace_index: str | None = None
    draft_tokens: int | None = None  # None: the engine's default; 0: no prompt-lookup drafts
    fim: str = "auto"  # fill-in-the-middle: "auto" (the model's family), "off", or a family name
    suffix_tokens: int = 128  # code after the cursor shown to a FIM model
    repository_context: bool = True  # snippets of open and imported files in the prompt
    repository_tokens: int = 384
    # model time before ghost text is shown; past it the completion shows its lines so far and
    # the rest follows (0: wait for the whole completion). Chosen with `bench lsp --busy-cores`
    latency_budget_ms: int = 300
    # the longest a completion prefills context no cache holds (a jump to another part of a
    # file, a file just opened); past it the window is cut shorter for this completion and the
    # full one is warmed for the next (0: always the full window). Chosen with `bench lsp
    # --busy-cores`: a cold 1024-token window took 1.7-2.4 s to prefill with one core busy
    cold_prefill_ms: int = 600
    threads: int | None = None  # torch threads; None: fitted to the cores other processes leave free
    # seconds after an accept at which its retention is recorded (besides each save and close)
    retention_checkpoints_s: tuple[float, ...] = (30.0, 120.0, 600.0)
    # flag by this workspace's calibration once it has enough rewritten tokens; off by default:
    # `whence-ls bench retention` did not show it beating the global flag (docs/benchmarks.md)
    workspace_flags: bool = False
    # random-subset ablation of accepted and hovered records in the background, after the estimate
    verify_rows: bool = True

    def prompt_options(self):
        from whence_ls.engine.prompt import PromptOptions

        return PromptOptions(fim=self.fim, suffix_tokens=self.suffix_tokens,
                             repository_tokens=self.repository_tokens if self.repository_context else 0)

    def model_key(self) -> tuple[str | None, str, str]:
        """What identifies the loaded model: a change here means a reload."""
        return self.model, self.device, self.precision

    def merged(self, raw: Any) -> tuple["Settings", list[str]]:
        """These settings with the known keys of `raw` applied; bad values are skipped and
        reported (one message each) so a typo in one key never loses the others."""
        if not isinstance(raw, dict):
            return self, []
        if isinstance(raw.get("whence"), dict):  # initializationOptions may nest the section
            raw = raw["whence"]
        changes: dict[str, Any] = {}
        problems: list[str] = []
        for key, name in _KEYS.items():
            if key not in raw:
                continue
            value = raw[key]
            problem = _check(name, value)
            if problem:
                problems.append(f"whence.{key}: {problem}; keeping {getattr(self, name)!r}")
                continue
            changes[name] = tuple(float(v) for v in value) if name == "retention_checkpoints_s" else value
        return replace(self, **changes), problems

    def to_json(self) -> dict[str, Any]:
        return {key: list(v) if isinstance(v := getattr(self, name), tuple) else v for key, name in _KEYS.items()}


def _check(name: str, value: Any) -> str | None:
    if name in ("model", "trace_index"):
        return None if value is None or (isinstance(value, str) and value.strip()) else "expected a path or null"
    if name == "device":
        return None if value in ("auto", "cpu", "cuda") else "expected auto, cpu or cuda"
    if name == "precision":
        return None if value in ("fp32", "fp16", "int8", "onnx-int8", "onnx-fp32") else \
            "expected fp32, fp16, int8, onnx-int8 or onnx-fp32"
    if name == "max_new_tokens":
        return None if _is_int(value) and 1 <= value <= 1024 else "expected an integer from 1 to 1024"
    if name == "context_tokens":
        return None if _is_int(value) and 16 <= value <= 32768 else "expected an integer from 16 to 32768"
    if name == "attribution_method":
        return None if value is None or value in ATTRIBUTION_CHOICES else f"expected one of {', '.join(ATTRIBUTION_CHOICES)}"
    if name == "draft_tokens":
        return None if value is None or _is_int(value) and 0 <= value <= 16 else "expected an integer from 0 to 16, or null"
    if name == "fim":
        from whence_ls.engine.prompt import FIM_CHOICES

        return None if value in FIM_CHOICES else f"expected one of {', '.join(FIM_CHOICES)}"
    if name in ("suffix_tokens", "repository_tokens"):
        return None if _is_int(value) and 0 <= value <= 8192 else "expected an integer from 0 to 8192"
    if name in ("latency_budget_ms", "cold_prefill_ms"):
        return None if _is_int(value) and 0 <= value <= 60000 else "expected an integer from 0 to 60000 (milliseconds)"
    if name == "threads":
        return None if value is None or _is_int(value) and 1 <= value <= 256 else "expected an integer from 1 to 256, or null"
    if name in ("repository_context", "workspace_flags", "verify_rows"):
        return None if isinstance(value, bool) else "expected true or false"
    if name == "retention_checkpoints_s":
        ok = isinstance(value, list) and 0 < len(value) <= 8 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 86400 for v in value)
        return None if ok else "expected a list of 1 to 8 numbers of seconds, each from 0 to 86400"
    if name == "diagnostics_share":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
        return None if ok else "expected a number from 0 to 1"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
