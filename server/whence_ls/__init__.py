"""whence-ls: local code completion that explains itself."""

__version__ = "0.1.0"
