"""`whence-ls bench retention`'s analysis on saved tokens (`--load`): it must find a gain where
a workspace has a habit the global flag cannot see, and report none where it has not."""

from __future__ import annotations

import json
import random
import subprocess
import sys


def synthetic(habit: bool, seed: int) -> dict:
    rng = random.Random(seed)
    data = {}
    for package in ("alpha", "beta", "gamma"):
        cursors = []
        for _ in range(60):
            tokens = []
            for _ in range(8):
                kind = rng.choice(["name", "number", "operator"])
                flag = rng.random()
                departs = (kind == "number") if habit and package == "alpha" else rng.random() < flag
                tokens.append({"kind": kind, "flag": flag, "entropy": flag * 2, "first": False, "departs": int(departs),
                               "first_departure": 1})
            cursors.append(tokens)
        data[package] = cursors
    return {"packages": list(data), "seed": seed, "tokens": data}


def run_load(tmp_path, data) -> str:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, "-m", "whence_ls", "bench", "retention", "--load", str(path), "--splits", "6"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def gain_of(out: str, package: str) -> float:
    row = next(line for line in out.splitlines() if line.startswith(f"| {package} |"))
    return float(row.split("|")[6].split()[0])


def test_a_workspace_habit_is_learned_and_reported(tmp_path):
    out = run_load(tmp_path, synthetic(True, 1))
    assert gain_of(out, "alpha") > 0.2  # numbers always rewritten there: the global flag is blind to it
    assert abs(gain_of(out, "beta")) < 0.05  # the flag score is the truth there: nothing to learn
    assert "| fitting cursors |" in out


def test_no_habit_no_gain_and_the_verdict_says_off(tmp_path):
    out = run_load(tmp_path, synthetic(False, 2))
    assert all(abs(gain_of(out, p)) < 0.05 for p in ("alpha", "beta", "gamma"))
    assert "it stays off by default" in out
