"""The benchmarks behind every number in docs/: their logic lives here, the `whence-ls bench`
commands only parse arguments and print."""
