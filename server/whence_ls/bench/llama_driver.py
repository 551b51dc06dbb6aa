"""Greedy decoding with llama.cpp for `whence-ls bench generate`, run by the Python of the
bench-only environment that has llama-cpp-python (it imports nothing of whence-ls).

    python llama_driver.py MODEL.gguf THREADS   then, per line on stdin, either
      {"ids": [...], "n": N}: decode N tokens after ids; answers {"decode_tokens_per_s", "prefill_ms", "tokens"}
      {"kl": true, "ids": [...], "from": I, "truth": "f.npy"}: the log-probabilities at positions
        I.. of ids against the reference [positions, vocab] in f.npy; answers {"mean_kl", "argmax_changed", "positions"}

The prompt is given as token ids, so llama.cpp decodes exactly what whence-ls decodes.
"""

import json
import sys
import time


def main() -> int:
    from llama_cpp import Llama

    model_path, threads = sys.argv[1], int(sys.argv[2])
    model = Llama(model_path=model_path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    scorer = None  # a second instance keeping every position's logits, made on the first KL request
    print(json.dumps({"ready": True, "n_threads": threads}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("kl"):
            if scorer is None:
                scorer = Llama(model_path=model_path, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                               logits_all=True, verbose=False)
            print(json.dumps(_divergence(scorer, request)), flush=True)
            continue
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


def _divergence(model, request: dict) -> dict:
    import numpy

    truth = numpy.load(request["truth"]).astype(numpy.float64)
    model.reset()
    model.eval(request["ids"])
    first = request["from"]
    logits = numpy.asarray(model.scores[first : first + truth.shape[0]], dtype=numpy.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logprobs = logits - numpy.log(numpy.exp(logits).sum(axis=-1, keepdims=True))
    kl = (numpy.exp(truth) * (truth - logprobs)).sum(axis=-1)
    changed = int((truth.argmax(-1) != logprobs.argmax(-1)).sum())
    return {"mean_kl": float(kl.mean()), "argmax_changed": changed, "positions": int(truth.shape[0])}


if __name__ == "__main__":
    sys.exit(main())
