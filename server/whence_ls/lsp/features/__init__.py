"""One module per LSP surface (hover, diagnostics, code lens, code actions, inline completion,
the document lifecycle, custom `whence/...` requests, the retention view) and `commands/` (the
`workspace/executeCommand` handlers). Each takes the `Session` and registers its handlers; none
imports another feature or the server (tests/test_layers.py checks the folder rule), so a new
feature is checked without editing a list."""
