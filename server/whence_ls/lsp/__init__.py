"""The pygls layer: translates LSP <-> engine/trace and owns no model code (see DESIGN.md).

`server.py` wires the features; each feature is a small class in its own module and reads the
records (`records.py`) that completions and explanations leave behind.
"""
