"""The pygls layer: translates LSP <-> engine/trace and owns no model code (see DESIGN.md).

`server.py` builds the `Session` (`session.py`: the state and services a feature may use) and
registers the features; each feature is a small class in its own module over that session, and
reads the records (`records.py`) that completions and explanations leave behind.
docs/architecture.md draws the layers.
"""
