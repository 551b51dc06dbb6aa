"""Learned one-pass estimators (issue 21): per (generated token, source) scores from one forward's
head features (`engine/attribution/head_features.py`) and lexical features, trained on the truth
of standard-library targets (`bench attribution --target-set training --dump`) and scored on the
held-out suite's (`bench attribution --dump`), never the other way round.

Every model is trained as AT2 trains its estimator: per row (a generated token), the Pearson
correlation, over the row's random masks, between the outcome the scores predict (the sum of the
kept sources' scores) and the actual log-odds, averaged over rows; optionally plus a cross-entropy
that puts the truth's top source first. Hyperparameters are chosen by cross-validation over the
training targets alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HEAD_PARTS = ("attention", "value", "logit")
SCALARS = ("copy_latest", "copy_any", "overlap", "recency", "is_last", "distance", "tokens", "lines",
           "calibrated", "calibrated_rank", "value_total", "value_rank")
# one-forward summaries: each part summed over the heads of a third of the layers, normalised per row
from whence_ls.engine.attribution.stacked_attention import GROUPS, THIRDS  # noqa: E402
SUMMARIES = ("calibrated", "calibrated_rank", "value_total", "value_rank", "logit_total", "logit_rank", "attention_total")


def load(dump_dir: str, feature_dir: str, calibration_weights: np.ndarray) -> list[dict]:
    from whence_ls.engine.attribution.ablation import fit_effects

    targets = []
    for path in sorted(Path(feature_dir).glob("target*.npz")):
        truth_path = Path(dump_dir) / path.name
        if not truth_path.exists():
            continue
        truth = np.load(truth_path)
        found = dict(np.load(path))
        masks, outcomes = truth["truth_masks"], truth["truth_outcomes"]
        targets.append({"number": int(path.stem[len("target"):]), "masks": masks, "outcomes": outcomes,
                        "effects": fit_effects(masks, outcomes), "copy": truth["copy_columns"],
                        "heads": {p: found[p].astype(np.float64) for p in HEAD_PARTS},
                        "scalars": scalar_features(found, calibration_weights),
                        "forward_s": float(found["forward_s"]), "features_s": float(found["features_s"])})
    return targets


from whence_ls.engine.attribution.stacked_attention import _normalised, scalar_features  # noqa: E402  (training reads what serving reads)


# -- metrics (the suite's definitions) ---------------------------------------------------------


def metrics(targets: list[dict], scores_of) -> dict:
    from whence_ls.bench.attribution import MIN_EFFECT, _spearman, rank

    lds, top1, top3, copy, fe = [], [], [], [], []
    for target in targets:
        matrix = scores_of(target)
        for r in range(matrix.shape[0]):
            ranking = rank(matrix[r], False)
            value = _spearman(target["masks"].astype(np.float64) @ matrix[r], target["outcomes"][:, r])
            if value is not None:
                lds.append(value)
            effect = target["effects"][r]
            if effect.max() >= MIN_EFFECT:
                best = int(effect.argmax())
                top1.append(ranking[0] == best)
                top3.append(best in ranking[:3])
            if target["copy"][r].any():
                copy.append(bool(target["copy"][r][ranking[0]]))
        fe.append(target["features_s"] / target["forward_s"])

    def mean(values):
        return float(np.mean(values)) if values else None

    return {"lds": mean(lds), "top1": mean(top1), "top3": mean(top3), "copy": mean(copy), "rows": len(lds),
            "ranked": len(top1), "copy_cases": len(copy), "targets": len(targets), "fe_median": float(np.median(fe)) if fe else None}


# -- the models --------------------------------------------------------------------------------


class Spec:
    """Which features a model reads and how: `heads` (subset of HEAD_PARTS), `scalars` (subset of
    SCALARS), `hidden` (0: linear; else a one-hidden-layer MLP over the scalars plus the linear
    head score), `decay` (L2), `top_weight` (weight of the top-source cross-entropy)."""

    def __init__(self, heads=("attention",), scalars=(), hidden=0, decay=1e-3, top_weight=0.0, steps=300):
        self.heads, self.scalars, self.hidden = tuple(heads), tuple(scalars), hidden
        self.decay, self.top_weight, self.steps = decay, top_weight, steps

    def label(self) -> str:
        parts = ["+".join(self.heads) or "no heads"]
        if self.scalars:
            parts.append("lexical" if self.scalars == LEXICAL else "scalars" if self.scalars == SCALARS
                         else "scalars+thirds" if self.scalars == SCALARS + THIRDS + SUMMARIES[4:]
                         else next((f"scalars+{n} layer groups" for n in GROUPS if self.scalars == SCALARS + GROUPS[n] + SUMMARIES[4:]),
                                   ",".join(self.scalars)))
        if self.hidden:
            parts.append(f"mlp{self.hidden}")
        parts.append(f"decay {self.decay:g}")
        if self.top_weight:
            parts.append(f"top-CE {self.top_weight:g}")
        return " | ".join(parts)


def _design(targets: list[dict], spec: Spec, scale: dict | None):
    """Per target: head features [R, S, Dh] (each part divided by its training RMS) and scalar
    features [R, S, Ds]."""
    if scale is None:
        scale = {p: float(np.sqrt(np.mean(np.concatenate([t["heads"][p].ravel() for t in targets]) ** 2)) or 1.0)
                 for p in spec.heads}
    designs = []
    for t in targets:
        heads = np.concatenate([t["heads"][p] / scale[p] for p in spec.heads], axis=-1) if spec.heads else None
        scalars = np.stack([t["scalars"][s] for s in spec.scalars], axis=-1) if spec.scalars else None
        designs.append((heads, scalars))
    return designs, scale


class Model:
    def __init__(self, spec: Spec, scale: dict, state: dict):
        self.spec, self.scale, self.state = spec, scale, state

    def scores(self, target: dict) -> np.ndarray:
        import torch

        designs, _ = _design([target], self.spec, self.scale)
        heads, scalars = designs[0]
        with torch.no_grad():
            return _forward(self.state, heads, scalars, self.spec).numpy()


def _forward(state, heads, scalars, spec):
    import torch

    out = 0.0
    if heads is not None:
        out = torch.as_tensor(heads, dtype=torch.float32) @ state["head"]
    if scalars is not None:
        x = torch.as_tensor(scalars, dtype=torch.float32)
        if spec.hidden:
            x_in = torch.cat([x, out.unsqueeze(-1)], -1) if heads is not None else x
            out = out + torch.relu(x_in @ state["w1"] + state["b1"]) @ state["w2"] + x @ state["lin"]
        else:
            out = out + x @ state["lin"]
    return out


def train(targets: list[dict], spec: Spec, seed: int = 0) -> Model:
    import torch

    from whence_ls.bench.attribution import MIN_EFFECT

    torch.manual_seed(seed)
    designs, scale = _design(targets, spec, None)
    state = {}
    if spec.heads:
        state["head"] = torch.zeros(designs[0][0].shape[-1], requires_grad=True)
    if spec.scalars:
        ds = len(spec.scalars)
        state["lin"] = torch.zeros(ds, requires_grad=True)
        if spec.hidden:
            width = ds + (1 if spec.heads else 0)
            state["w1"] = (torch.randn(width, spec.hidden) * 0.3).requires_grad_()
            state["b1"] = torch.zeros(spec.hidden, requires_grad=True)
            state["w2"] = (torch.randn(spec.hidden) * 0.1).requires_grad_()
    if spec.heads:  # start from uniform attention weights, not zero (Pearson of 0 has no gradient)
        with torch.no_grad():
            state["head"][:] = 0.01
    elif spec.scalars:
        with torch.no_grad():
            state["lin"][:] = 0.1
    # every row of every target in one padded batch: [N, S_max, D] features, [N, k, S_max] masks
    count = sum(t["outcomes"].shape[1] for t in targets)
    widest = max(t["masks"].shape[1] for t in targets)
    k = targets[0]["masks"].shape[0]
    head_x = torch.zeros(count, widest, designs[0][0].shape[-1]) if spec.heads else None
    scalar_x = torch.zeros(count, widest, designs[0][1].shape[-1]) if spec.scalars else None
    masks = torch.zeros(count, k, widest)
    outcomes = torch.zeros(count, k)
    best = torch.zeros(count, dtype=torch.long)
    meaningful = torch.zeros(count, dtype=torch.bool)
    valid = torch.zeros(count, widest, dtype=torch.bool)
    n = 0
    for t, (heads, scalars) in zip(targets, designs):
        rows, width = t["outcomes"].shape[1], t["masks"].shape[1]
        if head_x is not None:
            head_x[n:n + rows, :width] = torch.as_tensor(heads, dtype=torch.float32)
        if scalar_x is not None:
            scalar_x[n:n + rows, :width] = torch.as_tensor(scalars, dtype=torch.float32)
        masks[n:n + rows, :, :width] = torch.as_tensor(t["masks"], dtype=torch.float32).unsqueeze(0)
        outcomes[n:n + rows] = torch.as_tensor(t["outcomes"], dtype=torch.float32).T
        best[n:n + rows] = torch.as_tensor(t["effects"].argmax(1))
        meaningful[n:n + rows] = torch.as_tensor(t["effects"].max(1) >= MIN_EFFECT)
        valid[n:n + rows, :width] = True
        n += rows
    keep = outcomes.std(1) > 1e-6
    y = outcomes - outcomes.mean(1, keepdim=True)
    y = y / (y.norm(dim=1, keepdim=True) + 1e-8)
    params = list(state.values())
    optimiser = torch.optim.Adam(params, lr=0.02)
    for _ in range(spec.steps):
        optimiser.zero_grad()
        scores = _forward(state, head_x, scalar_x, spec) * valid  # [N, S]
        predicted = torch.einsum("nks,ns->nk", masks, scores)
        p = predicted - predicted.mean(1, keepdim=True)
        corr = (p * y).sum(1) / (p.norm(dim=1) + 1e-8)
        loss = -corr[keep].mean()
        if spec.top_weight and bool(meaningful.any()):
            z = scores[meaningful]
            z = z / (z.std(1, keepdim=True) + 1e-6)  # a ranking, whatever the scale Pearson left it at
            z = z.masked_fill(~valid[meaningful], -1e4)
            loss = loss + spec.top_weight * torch.nn.functional.cross_entropy(z, best[meaningful])
        penalty = sum((q ** 2).sum() for name, q in state.items() if name != "b1")
        (loss + spec.decay * penalty).backward()
        optimiser.step()
    return Model(spec, scale, {k: v.detach().clone() for k, v in state.items()})


def with_copy_prior(model_scores: np.ndarray, target: dict, weight: float) -> np.ndarray:
    return _normalised(model_scores) + weight * target["scalars"]["copy_latest"]


def cross_validate(targets: list[dict], spec: Spec, folds: int = 4) -> dict:
    """Rows of every training target scored by a model that never saw its target."""
    scored = {}
    for fold in range(folds):
        held = [t for k, t in enumerate(targets) if k % folds == fold]
        model = train([t for k, t in enumerate(targets) if k % folds != fold], spec)
        for t in held:
            scored[t["number"]] = model.scores(t)
    return scored


PRIOR_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


def best_prior(targets: list[dict], scored: dict) -> float:
    def key(weight):
        m = metrics(targets, lambda t: with_copy_prior(scored[t["number"]], t, weight))
        return (round(m["lds"], 3), m["top1"])

    return max(PRIOR_GRID, key=key)


def save_model(model: Model, prior: float, path: Path, info: dict) -> None:
    """A linear model over scalar features, as `stacked_attention.StackedScorer` reads it."""
    from whence_ls.engine.attribution.calibration import SHIPPED_DIR
    from whence_ls.engine.attribution.stacked_attention import FORMAT

    if model.spec.heads or model.spec.hidden:
        raise ValueError("only a linear model over scalar features can be saved as a stacked scorer")
    calibration = json.loads((SHIPPED_DIR / "smollm2-135m-instruct.json").read_text(encoding="utf-8"))
    data = {"format": FORMAT, "model": calibration["model"], "fingerprint": calibration["fingerprint"],
            "features": list(model.spec.scalars), "weights": [round(float(w), 6) for w in model.state["lin"]],
            "prior": prior, "info": info}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# -- the command ---------------------------------------------------------------------------------

SHIPPED_PRIOR = 0.5  # calibrated_attention.LATEST_OCCURRENCE_PRIOR when this ran

HEAD_SETS = (("attention",), ("attention", "value"), ("attention", "value", "logit"), ("value",), ("logit",))
LEXICAL = ("copy_latest", "copy_any", "overlap", "recency", "is_last", "distance", "tokens", "lines")


def variants(quick: bool, per_head_only: bool = False) -> list[Spec]:
    if per_head_only:  # AT2 proper: per-head weights, Pearson loss, no stacking
        return [Spec(heads=heads, decay=decay) for heads in HEAD_SETS[:3] for decay in (1e-3, 1e-2, 1e-1)]
    found = [Spec(heads=(), scalars=SCALARS, decay=d) for d in (1e-4, 1e-3, 1e-2)]
    found += [Spec(heads=(), scalars=SCALARS + THIRDS + SUMMARIES[4:], decay=d) for d in (1e-4, 1e-3, 1e-2)]
    found += [Spec(heads=(), scalars=("calibrated", "copy_latest") + THIRDS + SUMMARIES[4:], decay=1e-3)]
    found += [Spec(heads=(), scalars=SCALARS + THIRDS + SUMMARIES[4:], decay=1e-3, top_weight=0.3)]
    found += [Spec(heads=(), scalars=SCALARS + THIRDS + SUMMARIES[4:], hidden=8, decay=1e-2)]
    found += [Spec(heads=("attention",), scalars=("calibrated", "copy_latest"), decay=1e-2)]
    for n in GROUPS:
        found += [Spec(heads=(), scalars=SCALARS + GROUPS[n] + SUMMARIES[4:], decay=d) for d in (1e-3, 1e-2, 3e-2)]
    if quick:
        return found
    for heads in HEAD_SETS[: 3 if quick else None]:
        for decay in (1e-4, 1e-3, 1e-2):
            found.append(Spec(heads=heads, decay=decay))
    for heads in (("attention",), ("attention", "value", "logit")):
        found.append(Spec(heads=heads, scalars=LEXICAL, decay=1e-3))
        found.append(Spec(heads=heads, scalars=LEXICAL, decay=1e-3, top_weight=0.3))
        found.append(Spec(heads=heads, scalars=LEXICAL, hidden=16, decay=1e-3))
    found.append(Spec(heads=(), scalars=SCALARS, hidden=16, decay=1e-3))
    found.append(Spec(heads=(), scalars=SCALARS, hidden=16, decay=1e-3, top_weight=0.3))
    found.append(Spec(heads=(), scalars=SCALARS, decay=1e-3))
    return found


def _calibration_weights() -> np.ndarray:
    from whence_ls.engine.attribution.calibration import SHIPPED_DIR

    data = json.loads((SHIPPED_DIR / "smollm2-135m-instruct.json").read_text(encoding="utf-8"))
    return np.asarray(data["weights"], dtype=np.float64)


def _row(name: str, m: dict, extra: str = "") -> str:
    def pct(v):
        return "—" if v is None else f"{100 * v:.0f}%"

    return (f"| {name}{extra} | {m['lds']:.3f} | {pct(m['top1'])} | {pct(m['top3'])} | {pct(m['copy'])} (n={m['copy_cases']}) "
            f"| {m['fe_median']:.2f} | {m['targets']} / {m['rows']} |")


HEADER = "| estimator | LDS | top-1 | top-3 | copy | FE (CPU, median) | targets / rows |\n|---|---|---|---|---|---|---|"


def paired(targets: list[dict], new, old, draws: int = 2000) -> str:
    """The new estimator's gain over the old on the same rows, with a 95% interval from
    resampling targets (rows of one target are not independent)."""
    from whence_ls.bench.attribution import MIN_EFFECT, _spearman, rank

    per_target = []
    for t in targets:
        a, b = new(t), old(t)
        lds, top1 = [], []
        for r in range(a.shape[0]):
            x = _spearman(t["masks"].astype(np.float64) @ a[r], t["outcomes"][:, r])
            y = _spearman(t["masks"].astype(np.float64) @ b[r], t["outcomes"][:, r])
            if x is not None and y is not None:
                lds.append(x - y)
            if t["effects"][r].max() >= MIN_EFFECT:
                best = int(t["effects"][r].argmax())
                top1.append(float(rank(a[r], False)[0] == best) - float(rank(b[r], False)[0] == best))
        per_target.append((sum(lds), len(lds), sum(top1), len(top1)))
    values = np.array(per_target)
    generator = np.random.default_rng(0)

    def gain(sample):
        return sample[:, 0].sum() / max(1, sample[:, 1].sum()), sample[:, 2].sum() / max(1, sample[:, 3].sum())

    boot = np.array([gain(values[generator.integers(0, len(values), len(values))]) for _ in range(draws)])
    (lds, top1), low, high = gain(values), np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
    return (f"paired gain over the default on the held-out rows: LDS {lds:+.3f} (95% {low[0]:+.3f} .. {high[0]:+.3f}), "
            f"top-1 {100 * top1:+.0f} points ({100 * low[1]:+.0f} .. {100 * high[1]:+.0f}); targets resampled")


def _write_figures(stacked: dict, calibrated: dict, train_targets: int) -> None:
    """The stacked estimator's held-out figures, and the calibrated estimator's on the same rows,
    where the method notes read them."""
    # the file's path without importing the catalogue, whose notes need these very figures
    PACKAGE_FIGURES = Path(__file__).parents[1] / "engine" / "attribution" / "benchmark_figures.json"
    saved = json.loads(PACKAGE_FIGURES.read_text(encoding="utf-8"))
    run = (f"bench attribution-learned: trained on {train_targets} standard-library targets, scored on "
           f"{stacked['targets']} unseen suite targets, {stacked['rows']} tokens")
    for name, m in (("stacked_attention", stacked), ("calibrated_attention_same_rows", calibrated)):
        saved["methods"][name] = {"run": run, **{k: round(m[k], 3) for k in ("lds", "top1", "top3", "copy")},
                                  "targets": m["targets"], "rows": m["rows"], "fe": round(m["fe_median"], 2)}
    PACKAGE_FIGURES.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")


def run(args) -> int:
    import sys
    import time

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    if args.features:
        from whence_ls.bench.attribution_training import features_for_dump
        from whence_ls.engine.loading import load_model

        lm = load_model(args.model, "cpu")
        count = args.targets or (120 if args.target_set == "training" else 40)
        features_for_dump(lm, args.features[0], args.features[1], target_set=args.target_set, count=count, log=log)
    if not args.train:
        return 0
    weights = _calibration_weights()
    train_set = load(*args.train.split(","), weights)
    held = load(*args.heldout.split(","), weights) if args.heldout else []
    log(f"{len(train_set)} training targets, {len(held)} held-out")

    def shipped(t):
        return with_copy_prior(t["scalars"]["calibrated"], t, SHIPPED_PRIOR)

    cv_lines, held_lines, results = [HEADER], [HEADER], []
    for name, fn in (("calibrated_attention + copy prior 0.5 (the default)", shipped),
                     ("calibrated_attention alone", lambda t: t["scalars"]["calibrated"])):
        cv_lines.append(_row(name, metrics(train_set, fn)))
        if held:
            held_lines.append(_row(name, metrics(held, fn)))
    for spec in variants(args.quick, args.per_head):
        scored = cross_validate(train_set, spec)
        prior = best_prior(train_set, scored) if args.prior is None else args.prior
        cv = metrics(train_set, lambda t: with_copy_prior(scored[t["number"]], t, prior))
        cv_plain = metrics(train_set, lambda t: scored[t["number"]])
        cv_lines.append(_row(spec.label(), cv_plain))
        cv_lines.append(_row(spec.label(), cv, f" + copy prior {prior:g}"))
        log(f"{spec.label()}: cv LDS {cv['lds']:.3f} top-1 {cv['top1']:.2f}")
        entry = {"spec": spec, "prior": prior, "cv": cv}
        if held:
            model = train(train_set, spec)
            entry["model"] = model
            entry["held"] = metrics(held, lambda t: with_copy_prior(model.scores(t), t, prior))
            held_lines.append(_row(spec.label(), metrics(held, model.scores)))
            held_lines.append(_row(spec.label(), entry["held"], f" + copy prior {prior:g}"))
        results.append(entry)
    print("## cross-validated on the training targets (4 folds)\n" + "\n".join(cv_lines))
    if held:
        print("\n## held out (trained on every training target)\n" + "\n".join(held_lines))
    def by_cv(e):
        return (round(e["cv"]["lds"], 3), e["cv"]["top1"])

    best = max(results, key=by_cv)
    print(f"\nchosen by cross-validation: {best['spec'].label()} + copy prior {best['prior']:g}")
    # what can ship as a stacked scorer: a linear model over scalar features
    linears = [e for e in results if not e["spec"].heads and not e["spec"].hidden]
    if not linears:
        return 0
    linear = max(linears, key=by_cv)
    print(f"the best linear scalar model by cross-validation: {linear['spec'].label()} + copy prior {linear['prior']:g}"
          + (f"; held out: LDS {linear['held']['lds']:.3f}, top-1 {linear['held']['top1']:.0%}" if held else ""))
    if held:
        print(paired(held, lambda t: with_copy_prior(linear["model"].scores(t), t, linear["prior"]), shipped))
    if args.save and held:
        info = {"train_targets": len(train_set), "train_rows": linear["cv"]["rows"], "decay": linear["spec"].decay,
                "cv": {k: linear["cv"][k] for k in ("lds", "top1", "top3", "copy")},
                "heldout": {k: linear["held"][k] for k in ("lds", "top1", "top3", "copy", "rows", "targets")},
                "command": "whence-ls bench attribution-learned --train TRAIN_DUMP,TRAIN_FEATURES --heldout DUMP,FEATURES --quick --save PATH"}
        save_model(linear["model"], linear["prior"], Path(args.save), info)
        print(f"saved to {args.save}")
    if args.figures and held:
        _write_figures(linear["held"], metrics(held, shipped), len(train_set))
    return 0
