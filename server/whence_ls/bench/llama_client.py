"""llama.cpp for `whence-ls bench generate`: `llama_driver.py` run by the Python of a bench-only
environment with llama-cpp-python (`scripts/bench-llama-env.sh`), fed the same token ids."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from whence_ls.bench.divergence import Divergence


class Llama:
    def __init__(self, python: str, gguf: str, threads: int) -> None:
        driver = Path(__file__).with_name("llama_driver.py")
        # -I: the driver sits beside bench modules (typing.py) that must not shadow the stdlib
        self.process = subprocess.Popen([python, "-I", str(driver), gguf, str(threads)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        if not ready:
            raise SystemExit(f"whence-ls bench generate: llama.cpp did not start ({python} {driver} {gguf})")
        self.threads = json.loads(ready)["n_threads"]
        self.label = f"{os.path.basename(gguf)}, {self.threads} threads"

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def run(self, token_ids: list[int], n: int, outputs: dict, key: str) -> tuple[float, float]:
        answer = self._ask({"ids": list(token_ids), "n": n})
        outputs[key] = answer["tokens"]
        return answer["decode_tokens_per_s"], answer["prefill_ms"]

    def divergence(self, context: list[int], continuation: list[int], truth) -> Divergence | None:
        """KL from fp32 of llama.cpp's logits, teacher-forced on `continuation` (the reference
        log-probabilities go to the driver as a .npy file: numpy is in both environments)."""
        import numpy

        if not continuation:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "truth.npy")
            numpy.save(path, truth.numpy())
            answer = self._ask({"kl": True, "ids": context + continuation[:-1], "from": len(context) - 1, "truth": path})
        return Divergence(answer["mean_kl"], answer["argmax_changed"], answer["positions"])

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
