"""The real server over stdio with one fault injected, for tests/test_lsp_faults.py: a completion
in a document holding FAULT_MARKER raises RuntimeError inside the model job, as a device error or a
bug would. Everything else is `whence-ls serve` unchanged."""

from __future__ import annotations

from whence_ls.engine import generation

FAULT_MARKER = "# whence-test: fail this completion"
_real_complete_at = generation.complete_at


def _complete_at(lm, text, cursor, **options):
    if FAULT_MARKER in text:
        raise RuntimeError("injected fault: Expected all tensors to be on the same device")
    return _real_complete_at(lm, text, cursor, **options)


generation.complete_at = _complete_at  # the handler imports it at call time

if __name__ == "__main__":
    from whence_ls.cli import main

    main(["serve"])
