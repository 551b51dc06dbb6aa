"""The attribution methods by name, without importing torch: what the CLI's argument parsing,
the language server's hover and status, and the method registry read. The implementations
(which import torch) are imported by `api.make_method` only when a method runs.

The figures the notes quote are not typed here: they are read from `benchmark_figures.json`,
which `whence-ls bench attribution --figures` writes (docs/bench-attribution.md shows the runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from types import SimpleNamespace


@dataclass(frozen=True)
class MethodEntry:
    name: str
    implementation: str  # "module:Class" under whence_ls.engine.attribution, imported when it runs
    # every row of a record comes from one pass (one forward, or one set of masked forwards):
    # callers ask for all rows at once, and an offered completion's rows can be computed ahead
    one_pass: bool
    cost: str  # what a row costs, in forwards
    # rows per call where not one pass (None: one, the gradient methods' row each): the language
    # server's background lane asks for this many at a time, the hovered token alone first
    rows_per_call: int | None = None


METHOD_CATALOGUE: tuple[MethodEntry, ...] = (
    MethodEntry("input_x_gradient", "input_x_gradient:InputXGradient", False, "one backward per row"),
    MethodEntry("gradient_norm", "gradient_norm:GradientNorm", False, "one backward per row"),
    MethodEntry("contrastive", "contrastive:Contrastive", False, "one backward per row"),
    MethodEntry("integrated_gradients", "integrated_gradients:IntegratedGradients", False, "one backward per step per row"),
    MethodEntry("attention_rollout", "rollout:AttentionRollout", True, "one forward for every row"),
    MethodEntry("value_norm", "value_norm:ValueNorm", True, "one forward for every row"),
    MethodEntry("occlusion", "occlusion:Occlusion", True, "one forward per source"),
    MethodEntry("ablation", "ablation:Ablation", True, "one forward per mask"),
    MethodEntry("calibrated_attention", "calibrated_attention:CalibratedAttention", True, "one forward for every row"),
    MethodEntry("stacked_attention", "stacked_attention:StackedAttention", True, "one forward for every row"),
    # not one pass: its rows cost a backward each (batched), so an offered completion's rows are
    # not made ahead (most offers are typed over), and a hovered token's row comes alone first
    MethodEntry("stacked_patching", "stacked_patching:StackedPatching", False,
                "the stacked rows read live, and a forward over the tail and a batched backward for up to 8 rows",
                rows_per_call=8),
    # not one pass either: its masked forwards are made on the first call for the whole record
    # (later calls look them up), and an offer's rows are not made ahead
    MethodEntry("stacked_leave_one_out", "stacked_leave_one_out:StackedLeaveOneOut", False,
                "the stacked rows read live, and a masked forward over the tail per line measured (batched, shared by "
                "every row of the record)", rows_per_call=8),
)
METHODS: tuple[str, ...] = tuple(entry.name for entry in METHOD_CATALOGUE)
_BY_NAME = {entry.name: entry for entry in METHOD_CATALOGUE}

# The calibrated attention estimator. In `whence-ls bench attribution` (40 held-out targets, 254
# tokens; docs/bench-attribution.md) it is level with value norm, the other one-forward method,
# and with gradient norm at a fraction of its cost; it is the default for its copy-head finding
# and its better copy cases. Issue 21 (`whence-ls bench attribution-estimators`, 24 targets):
# attribution patching (AtP*) ranks better but costs a backward per row, more than the verified
# rows that beat it; the estimator kept its place and gained the lexical copy prior.
# Issue 21 item 2 (`whence-ls bench attribution-learned`, trained on standard-library completions,
# scored on the unseen suite): a linear model stacked on the estimator's score, one forward's
# value-weighted attention and direct logit per third of the layers, and lexical features ranks
# better than the estimator alone (held out LDS 0.490 / top-1 47% against 0.433 / 41%). Its
# rows, like the estimator's, are read while the completion decodes (`live_stacked.py`; computed
# after it, an accepted token's row took 3.5-4.3 s with one core busy, read live 0.27-0.43 s
# against the estimator's 0.28-0.50 s, `whence-ls bench lsp --busy-cores 1 --attribution-method`),
# so it was the default where the model ships its scorer. A model with only a calibration gets
# the estimator; neither: gradient norm.
# Issue 21, eighth session (`whence-ls bench attribution-estimators`, 29 held-out targets): the
# stacked row mixed with attribution patching over the completion's tail (`stacked_patching.py`)
# ranks better again (LDS 0.57 against 0.48); its rows cost a short forward and a backward after
# the completion, so it is the default where the stacked scorer ships, and the stacked rows read
# live are its first half.
# Issue 21, ninth session (the same bench, the same 29 targets): the stacked row mixed with the
# measured effect of removing each of its top lines from the tail (`stacked_leave_one_out.py`)
# ranks better again (LDS 0.61 / top-1 58% against 0.57 / 51%) with no backward, so it is the
# default where the stacked scorer ships; patching stays a method to compare.
DEFAULT_METHOD = "stacked_leave_one_out"
CALIBRATED_METHOD = "calibrated_attention"
FALLBACK_METHOD = "gradient_norm"


def entry(name: str) -> MethodEntry | None:
    return _BY_NAME.get(name)


def one_pass(name: str) -> bool:
    """Whether `name` computes every row of a record in one pass (False for an unknown name)."""
    found = _BY_NAME.get(name)
    return found is not None and found.one_pass


def rows_per_call(name: str) -> int | None:
    """How many rows a call of `name` should be asked for when it is not one pass (None: one)."""
    found = _BY_NAME.get(name)
    return found.rows_per_call if found is not None else None


FIGURES_FILE = "benchmark_figures.json"


def benchmark_figures() -> dict[str, dict]:
    """The benchmark's figures per method (and per run: `ablation_32`, `verified`, ...)."""
    return json.loads(files(__package__).joinpath(FIGURES_FILE).read_text(encoding="utf-8"))["methods"]


# One honest line per method; `{method.figure}` is filled from the benchmark's file.
_NOTE_TEMPLATES: dict[str, str] = {
    "calibrated_attention": "per-head attention weights fitted to random-subset ablation on stdlib code, one forward for "
    "every row, plus a bonus for the line where the token's identifier last occurred; on unseen code (24 targets, 154 "
    "tokens) LDS {calibrated_attention.lds:.2f}, its top line is the ablation's top line for "
    "{calibrated_attention.top1:.0%} of tokens ({calibrated_attention.top3:.0%} within its top 3; the 32-mask ablation "
    "itself: {ablation_reference.lds:.2f}, {ablation_reference.top1:.0%}), and an earlier occurrence for "
    "{calibrated_attention.copy:.0%} of copied identifiers",
    "stacked_attention": "a linear model fitted to random-subset ablation of the model's own completions of stdlib "
    "code, over one forward's calibrated attention, value-weighted attention and direct logit (per third of the "
    "layers) and the lines' identifiers and places; on unseen code ({stacked_attention.targets} targets, "
    "{stacked_attention.rows} tokens) LDS {stacked_attention.lds:.2f}, its top line is the ablation's top line for "
    "{stacked_attention.top1:.0%} of tokens ({stacked_attention.top3:.0%} within its top 3; the calibrated estimator "
    "on the same tokens {calibrated_attention_same_rows.lds:.2f}, {calibrated_attention_same_rows.top1:.0%}), and an "
    "earlier occurrence for {stacked_attention.copy:.0%} of copied identifiers",
    "stacked_patching": "the stacked estimator's row mixed with attribution patching (AtP*: each head's attention "
    "renormalised without the line, weighted by the gradient of the token's log-odds) over the completion and the "
    "{stacked_patching.tail} context tokens before it; on unseen code ({stacked_patching.targets} targets, "
    "{stacked_patching.rows} tokens) LDS {stacked_patching.lds:.2f}, its top line is the ablation's top line for "
    "{stacked_patching.top1:.0%} of tokens ({stacked_patching.top3:.0%} within its top 3; the stacked estimator alone "
    "on the same tokens {stacked_attention_same_rows.lds:.2f}, {stacked_attention_same_rows.top1:.0%}), and an "
    "earlier occurrence for {stacked_patching.copy:.0%} of copied identifiers",
    "stacked_leave_one_out": "the stacked estimator's row mixed with the measured effect of removing each of its "
    "strongest lines, one at a time, from the completion and the {stacked_leave_one_out.tail} context tokens before "
    "it; on unseen code ({stacked_leave_one_out.targets} targets, {stacked_leave_one_out.rows} tokens) LDS "
    "{stacked_leave_one_out.lds:.2f}, its top line is the ablation's top line for {stacked_leave_one_out.top1:.0%} of "
    "tokens ({stacked_leave_one_out.top3:.0%} within its top 3; the stacked estimator alone on the same tokens "
    "{stacked_attention_same_rows.lds:.2f}, {stacked_attention_same_rows.top1:.0%}), and an earlier occurrence for "
    "{stacked_leave_one_out.copy:.0%} of copied identifiers",
    "ablation": "random-subset ablation (ContextCite's design), one forward per mask: the reference; with 32 masks LDS "
    "{ablation_32.lds:.2f}, top line {ablation_32.top1:.0%} against an independent ablation; 16 masks: "
    "{ablation_16.lds:.2f}, {ablation_16.top1:.0%}",
    "value_norm": "attention weighted by value norms, one forward for every row: LDS {value_norm.lds:.2f}, top line "
    "{value_norm.top1:.0%} ({value_norm.top3:.0%} within 3)",
    "gradient_norm": "gradient size per source, one backward per row: LDS {gradient_norm.lds:.2f}, top line "
    "{gradient_norm.top1:.0%} ({gradient_norm.top3:.0%} within 3); a 32-token matrix costs "
    "~{gradient_norm.matrix_fe:.0f} forwards, the estimator's {calibrated_attention.matrix_fe:.1f}",
    "input_x_gradient": "signed input x gradient: LDS {input_x_gradient.lds:.2f} (its signs point the wrong way), top "
    "line by size {input_x_gradient.top1:.0%}",
    "contrastive": "why this token and not the runner-up: gradient of the logit margin (not in the line benchmark)",
    "integrated_gradients": "64 steps, space baseline; in the line benchmark (16 steps, 5 tokens only) LDS "
    "{integrated_gradients.lds:.2f} at ~{integrated_gradients.row_fe:.0f} forwards per row",
    "attention_rollout": "not faithful: LDS {attention_rollout.lds:.2f}, top line {attention_rollout.top1:.0%}; shown for "
    "comparison only",
    "occlusion": "the drop when one source is blanked (leave-one-out), one forward per source; misses what a repeated "
    "identifier says on several lines (not in the line benchmark)",
}

# One short sentence per method, for the hover: what the scores mean and how true they are.
_SHORT_NOTE_TEMPLATES: dict[str, str] = {
    "calibrated_attention": "on unseen code its top line is the line whose removal matters most for "
    "{calibrated_attention.top1:.0%} of tokens ({calibrated_attention.top3:.0%} within its top 3); for a copied "
    "identifier, the line it last occurred on comes first",
    "stacked_attention": "on unseen code its top line is the line whose removal matters most for "
    "{stacked_attention.top1:.0%} of tokens ({stacked_attention.top3:.0%} within its top 3); for a copied identifier, "
    "the line it last occurred on comes first",
    "stacked_patching": "on unseen code its top line is the line whose removal matters most for "
    "{stacked_patching.top1:.0%} of tokens ({stacked_patching.top3:.0%} within its top 3)",
    "stacked_leave_one_out": "on unseen code its top line is the line whose removal matters most for "
    "{stacked_leave_one_out.top1:.0%} of tokens ({stacked_leave_one_out.top3:.0%} within its top 3); its strongest "
    "lines were each removed once to measure it",
    "ablation": "measured by removing random halves of the lines: {ablation_32.top1:.0%} top-line agreement on unseen code",
    "gradient_norm": "its top line is the one that matters most for {gradient_norm.top1:.0%} of tokens on unseen code",
    "input_x_gradient": "its top line is the one that matters most for {input_x_gradient.top1:.0%} of tokens on unseen code",
    "contrastive": "what favoured this token over the runner-up",
    "integrated_gradients": "integrated gradients (64 steps); slow",
    "attention_rollout": "not faithful ({attention_rollout.top1:.0%} top-line agreement); shown for comparison",
    "value_norm": "its top line is the one that matters most for {value_norm.top1:.0%} of tokens on unseen code",
    "occlusion": "the drop when one line is blanked",
    # verified rows (`verification.py`), whatever the estimate's method (the estimate's own figures
    # are in its sentence: the ones measured beside verification were of an earlier default)
    "verified": "32 random halves of the lines removed; on unseen code LDS {verified.lds:.2f} and the top line is the "
    "held-out ablation's for {verified.top1:.0%} of tokens (the 32-mask reference {ablation_reference.lds:.2f}, "
    "{ablation_reference.top1:.0%})",
}


def render_notes(templates: dict[str, str], figures: dict[str, dict]) -> dict[str, str]:
    runs = {name: SimpleNamespace(**values) for name, values in figures.items()}
    return {method: template.format(**runs) for method, template in templates.items()}


_FIGURES = benchmark_figures()
METHOD_NOTES: dict[str, str] = render_notes(_NOTE_TEMPLATES, _FIGURES)
METHOD_SHORT_NOTES: dict[str, str] = render_notes(_SHORT_NOTE_TEMPLATES, _FIGURES)
