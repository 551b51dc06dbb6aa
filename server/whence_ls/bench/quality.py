"""`whence-ls bench quality`: how often the first line of a completion is right, on code the
project never saw in development (cursors in recent PyPI packages installed beside it), and
whether its confidence flags point at the tokens that are wrong.

Each cursor sits at a seeded random place of a code line (after its indentation, at most half
way in); the document is the file with the rest of that line removed, so the line's remainder
is what a user would want, and the lines below stay (a FIM model sees them). The ways, on one
loaded model and the same cursors:

- whence-ls as the server completes: token healing, block stopping, loop guards, FIM when the
  model has a template, and repository context: snippets of the files the document imports and
  of its directory's other files (standing for open editors), chosen as the server chooses;
- the same without repository context; without FIM (FIM models only); without healing;
- plain `model.generate` on the same prompt as whence-ls's, cut at the first newline.

Reported: the share of exactly right first lines and the mean edit similarity (difflib ratio).
Confidence: on whence-ls's tokens up to and including the first one that departs from the file
(the tokens after it continue a wrong text, so whether they are "right" is not defined), the
AUROC of each score for "this token differs from the file": raw improbability 1 - p, entropy,
the margin to the runner-up, and the diagnostics' flag score (`engine/confidence.py`).
"""

from __future__ import annotations

import difflib
import random
import statistics
import time
from pathlib import Path

# pure-Python packages installed with the project's test extras that its code never reads
DEFAULT_PACKAGES = ("pygls", "lsprotocol", "cattrs", "huggingface_hub", "sentence_transformers", "jinja2",
                    "rich", "httpx2", "anyio", "pydantic", "networkx", "fsspec")


def package_files(packages: tuple[str, ...]) -> list[Path]:
    import importlib.util

    files = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        files += sorted(p for p in root.rglob("*.py")
                        if not any("test" in part for part in p.relative_to(root).parts) and p.stat().st_size > 2000)
    return files


def pick_cursors(files: list[Path], count: int, seed: int) -> list[tuple[Path, str, int, str]]:
    """(file, document without the rest of the line, cursor offset, the rest of the line)."""
    rng = random.Random(seed)
    cursors = []
    candidates = files[:]
    rng.shuffle(candidates)
    for path in candidates:
        if len(cursors) >= count:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.split("\n")
        choices = [i for i in range(30, len(lines)) if _is_code(lines[i]) and not _inside_string(lines[:i])]
        if not choices:
            continue
        number = rng.choice(choices)
        line = lines[number]
        indent = len(line) - len(line.lstrip())
        code = line.rstrip()
        column = indent + rng.randint(0, (len(code) - indent) // 2)
        start = sum(len(l) + 1 for l in lines[:number])
        document = text[: start + column] + text[start + len(line):]
        cursors.append((path, document, start + column, code[column:]))
    return cursors


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 20 and not stripped.startswith(("#", '"', "'", "@")) and not stripped.endswith(('"""', "'''"))


def _inside_string(before: list[str]) -> bool:
    """Whether a triple-quoted string (a docstring) is open at the end of `before`."""
    text = "\n".join(before)
    return (text.count('"""') + text.count("'''")) % 2 == 1


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].rstrip()


def run(args) -> int:
    import torch

    from whence_ls.engine.confidence import flag_score
    from whence_ls.engine.generation import complete_at, generate
    from whence_ls.engine.windows import PromptShape, context_window
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.prompt import PromptOptions, fim_template
    from whence_ls.engine.stopping import BlockStopper

    lm = load_model(args.model, args.device)
    files = package_files(tuple(args.packages))
    cursors = pick_cursors(files, args.cursors, args.seed)
    has_fim = fim_template(lm.tokenizer) is not None
    ways = ["whence", "no_repository"] + (["no_fim"] if has_fim else []) + ["no_healing", "plain"]
    if args.ways:
        ways = [way for way in ways if way in args.ways or way == "whence"]
    scores: dict[str, list[tuple[bool, float]]] = {way: [] for way in ways}
    confidence: list[tuple[int, dict[str, float]]] = []  # (label, scores) per judged token
    with_snippets = 0
    started = time.perf_counter()
    examples = []
    for path, document, cursor, wanted in cursors:
        snippets = repository_snippets(path, document, args.repository_tokens)
        with_snippets += bool(snippets)
        options = PromptOptions(file_path=_shown(path), repository_tokens=args.repository_tokens,
                                repository_name=_package_of(path))
        run_args = dict(language="python", max_new_tokens=args.max_new_tokens, context_tokens=args.context_tokens)
        answers = {"whence": complete_at(lm, document, cursor, prompt=options, snippets=snippets, **run_args)}
        if "no_repository" in ways:
            answers["no_repository"] = complete_at(lm, document, cursor, prompt=options, snippets=None, **run_args)
        if "no_fim" in ways:
            no_fim = PromptOptions(fim="off", file_path=options.file_path, repository_tokens=args.repository_tokens,
                                   repository_name=options.repository_name)
            answers["no_fim"] = complete_at(lm, document, cursor, prompt=no_fim, snippets=snippets, **run_args)
        budget = max(1, min(args.context_tokens, lm.max_context - args.max_new_tokens))
        shape = PromptShape(options, snippets, "python", lm.max_context - args.max_new_tokens)
        context = context_window(lm, document, cursor, budget, None, shape)
        line_start = document.rfind("\n", 0, cursor) + 1
        stopper = BlockStopper(document[line_start:cursor], "python", suffix=document[cursor : cursor + 4096])
        if "no_healing" in ways:
            answers["no_healing"] = generate(lm, context, max_new_tokens=args.max_new_tokens, stopper=stopper)
        plain = ""
        if "plain" in ways:
            with torch.inference_mode():
                prompt = torch.tensor([context.token_ids], device=lm.device)
                out = lm.model.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=False,
                                        pad_token_id=lm.tokenizer.pad_token_id, stop_strings=["\n"],
                                        tokenizer=lm.tokenizer)  # only its first line is compared
            plain = lm.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
        for way in ways:
            text = plain if way == "plain" else answers[way].text
            got = first_line(text)
            scores[way].append((got == wanted.rstrip(), difflib.SequenceMatcher(None, got, wanted.rstrip()).ratio()))
        truth = wanted.rstrip() + document[cursor:]
        confidence += judged_tokens(answers["whence"], truth, flag_score)
        if len(examples) < args.show:
            examples.append((path, wanted, first_line(answers["whence"].text)))
    seconds = time.perf_counter() - started
    packages = sorted({_package_of(p) for p, *_ in cursors})
    print(f"model: {lm.name} on {lm.device_label}; {len(cursors)} cursors (seed {args.seed}) in {len(packages)} packages: "
          f"{', '.join(packages)}; {with_snippets} with repository snippets; FIM: "
          f"{fim_template(lm.tokenizer).family if has_fim else 'none (the tokenizer has no template)'}; up to "
          f"{args.max_new_tokens} new tokens; {seconds:.0f} s")
    print("| way | first line exactly right | edit similarity (mean) |")
    print("|---|---|---|")
    labels = {"whence": "whence-ls (healing, block stop, loop guards, FIM if any, repository context)",
              "no_repository": "same, without repository context", "no_fim": "same, without FIM",
              "no_healing": "same as whence-ls, without token healing",
              "plain": "model.generate on whence-ls's prompt, cut at the first newline"}
    for way in ways:
        exact = sum(1 for ok, _ in scores[way] if ok)
        print(f"| {labels[way]} | {exact}/{len(scores[way])} ({exact / max(1, len(scores[way])):.0%}) | "
              f"{statistics.mean(s for _, s in scores[way]) if scores[way] else float('nan'):.2f} |")
    wrong = sum(label for label, _ in confidence)
    print(f"\nconfidence: {len(confidence)} judged tokens, {wrong} departing from the file")
    print("| score | AUROC for 'this token differs from the file' |")
    print("|---|---|")
    for name in ("improbability", "entropy", "margin", "flag"):
        print(f"| {name} | {auroc([s[name] for _, s in confidence], [label for label, _ in confidence]):.3f} |")
    for path, wanted, got in examples:
        print(f"  {path.name}: wanted {wanted!r}, got {got!r}")
    return 0


def judged_tokens(record, truth: str, flag_score) -> list[tuple[int, dict[str, float]]]:
    """(1 if the token departs from `truth`, scores) for the visible tokens up to and including
    the first departure."""
    import math

    judged = []
    position = 0
    for index, token in enumerate(record.tokens):
        if not token.text:
            continue
        end = position + len(token.text)
        departs = record.text[:end] != truth[:end]
        runner = token.runner_up()
        scores = {
            "improbability": 1.0 - token.prob,
            "entropy": token.entropy,
            "margin": 1.0 - (token.prob - (math.exp(runner.logprob) if runner else 0.0)),
            "flag": flag_score(record, index),
        }
        judged.append((int(departs), scores))
        position = end
        if departs:
            break
    return judged


def auroc(scores: list[float], labels: list[int]) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    if not positives or not negatives:
        return float("nan")
    order = sorted(negatives)
    import bisect

    total = 0.0
    for s in positives:
        below = bisect.bisect_left(order, s)
        ties = bisect.bisect_right(order, s) - below
        total += below + 0.5 * ties
    return total / (len(positives) * len(negatives))


def repository_snippets(path: Path, document: str, tokens: int):
    """What the server would show for this file in its package: the files it imports and its
    directory's other modules (standing for the editors a user has open), ranked as the server
    ranks them."""
    from whence_ls.engine.repository import blocks_of, imported_files, is_under, rank_blocks

    package_root = _package_root(path)
    search_root = package_root.parent
    files = [f for f in imported_files(document, path, [search_root], "python") if is_under(f, package_root)]
    siblings = sorted(p for p in path.parent.glob("*.py") if p != path and p.name != "__init__.py")[:6]
    blocks = []
    for file in dict.fromkeys(files + siblings):
        try:
            blocks += blocks_of(_shown(file), file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    return rank_blocks(blocks, document, tokens * 4)


def _package_root(path: Path) -> Path:
    parts = path.parts
    if "site-packages" in parts:
        return Path(*parts[: parts.index("site-packages") + 2])
    return path.parent


def _package_of(path: Path) -> str:
    return _package_root(path).name


def _shown(path: Path) -> str:
    root = _package_root(path)
    try:
        return path.relative_to(root.parent).as_posix()
    except ValueError:
        return path.name

