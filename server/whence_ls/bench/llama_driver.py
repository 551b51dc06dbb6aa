"""Greedy decoding with llama.cpp for `whence-ls bench generate`, run by the Python of the
bench-only environment that has llama-cpp-python (it imports nothing of whence-ls).

    python llama_driver.py MODEL.gguf THREADS   then, per line on stdin: {"ids": [...], "n": N}
    answers per line on stdout: {"decode_tokens_per_s", "prefill_ms", "tokens"}

The prompt is given as token ids, so llama.cpp decodes exactly what whence-ls decodes.
"""

import json
import sys
import time


def main() -> int:
    from llama_cpp import Llama

    model_path, threads = sys.argv[1], int(sys.argv[2])
    model = Llama(model_path=model_path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    print(json.dumps({"ready": True, "n_threads": threads}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        ids, n = request["ids"], request["n"]
        model.reset()
        started = time.perf_counter()
        model.eval(ids)
        token = int(model.sample(temp=0.0, top_k=1))
        prefill = time.perf_counter() - started
        tokens = [token]
        started = time.perf_counter()
        for _ in range(n - 1):
            model.eval([token])
            token = int(model.sample(temp=0.0, top_k=1))
            tokens.append(token)
        decode = time.perf_counter() - started
        print(json.dumps({"decode_tokens_per_s": (n - 1) / max(decode, 1e-9), "prefill_ms": 1000 * prefill, "tokens": tokens}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
