"""`whence-ls bench completions`: how often the first line of a completion is right, on code
the project never saw in development: cursors in recent PyPI packages installed beside it.

Each cursor sits at a seeded random place of a code line (after its indentation, at most half
way in); the document is the file with the rest of that line removed, so the line's remainder
is what a user would want. Three ways answer each cursor on the same loaded model: whence-ls as
the server completes (token healing, block stopping, loop guards), the same without healing, and
plain `model.generate` on the same prompt, cut at the first newline. Reported: the share of
exactly right first lines and the mean edit similarity (difflib ratio) of the first line.
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

    from whence_ls.engine.generation import complete_at, generate, _context_window
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.stopping import BlockStopper

    lm = load_model(args.model, args.device)
    cursors = pick_cursors(package_files(tuple(args.packages)), args.cursors, args.seed)
    scores: dict[str, list[tuple[bool, float]]] = {"whence": [], "no_healing": [], "plain": []}
    started = time.perf_counter()
    examples = []
    for path, document, cursor, wanted in cursors:
        ours = complete_at(lm, document, cursor, language="python", max_new_tokens=args.max_new_tokens)
        budget = max(1, min(args.context_tokens, lm.max_context - args.max_new_tokens))
        context = _context_window(lm, document, cursor, budget, None)
        line_start = document.rfind("\n", 0, cursor) + 1
        stopper = BlockStopper(document[line_start:cursor], "python")
        unhealed = generate(lm, context, max_new_tokens=args.max_new_tokens, stopper=stopper)
        with torch.inference_mode():
            prompt = torch.tensor([context.token_ids], device=lm.device)
            out = lm.model.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id,
                                    stop_strings=["\n"], tokenizer=lm.tokenizer)  # only its first line is compared
        plain = lm.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
        for way, text in (("whence", ours.text), ("no_healing", unhealed.text), ("plain", plain)):
            got = first_line(text)
            scores[way].append((got == wanted.rstrip(), difflib.SequenceMatcher(None, got, wanted.rstrip()).ratio()))
        if len(examples) < args.show:
            examples.append((path, wanted, first_line(ours.text)))
    seconds = time.perf_counter() - started
    packages = sorted({p.parts[p.parts.index("site-packages") + 1] for p, *_ in cursors if "site-packages" in p.parts})
    print(f"model: {lm.name} on {lm.device_label}; {len(cursors)} cursors (seed {args.seed}) in {len(packages)} packages: "
          f"{', '.join(packages)}; up to {args.max_new_tokens} new tokens; {seconds:.0f} s")
    print("| way | first line exactly right | edit similarity (mean) |")
    print("|---|---|---|")
    labels = {"whence": "whence-ls (healing, block stop, loop guards)", "no_healing": "same, without token healing",
              "plain": "model.generate on the same prompt, cut at the first newline"}
    for way, label in labels.items():
        exact = sum(1 for ok, _ in scores[way] if ok)
        print(f"| {label} | {exact}/{len(scores[way])} ({exact / max(1, len(scores[way])):.0%}) | "
              f"{statistics.mean(s for _, s in scores[way]) if scores[way] else float('nan'):.2f} |")
    for path, wanted, got in examples:
        print(f"  {path.name}: wanted {wanted!r}, got {got!r}")
    return 0
