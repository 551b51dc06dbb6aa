"""`workspace/executeCommand` handlers: completion (accept, regenerate), explain, index."""
