"""`whence-ls bench generate`: decoding speed against plain `model.generate` and llama.cpp; the logic is in `whence_ls.bench.generate`."""

from __future__ import annotations

from whence_ls.bench.onnx_engines import CHOICES as ONNX_CHOICES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="decode tokens/s and prefill of our engine vs model.generate and llama.cpp")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--context-tokens", type=int, nargs="+", default=[300, 1000], metavar="N",
                        help="context sizes to measure (default 300 1000)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draft-tokens", type=int, default=None, metavar="N",
                        help="prompt-lookup draft tokens per forward for the drafted row (default: the engine's)")
    parser.add_argument("--gguf", action="append", default=None, metavar="FILE",
                        help="a GGUF of the same model, for a llama.cpp row (repeat for F32, Q8_0, Q4_K_M...)")
    parser.add_argument("--llama-python", default=None, metavar="PYTHON",
                        help="the Python of a bench-only environment with llama-cpp-python (scripts/bench-llama-env.sh)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp and onnxruntime threads (default: torch's)")
    parser.add_argument("--onnx", action="append", default=None, choices=[*ONNX_CHOICES, "none"],
                        help="an onnxruntime row of the model's graph (engine/onnx_build.py), built once beside the model; "
                             "repeat for several (default: none); a -spin variant's idle threads spin, as the server's do while "
                             "every core is free, the others sleep, as on a busy machine")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.generate import run as run_benchmark

    return run_benchmark(args)
