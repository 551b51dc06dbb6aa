"""The one exception type whose message is meant for the user.

Anything raised as a WhenceError is printed as a single line by the CLI and answered as a clear
LSP error by the server; anything else is a bug.
"""


class WhenceError(Exception):
    """A problem with the user's input or environment, explained in one line."""
