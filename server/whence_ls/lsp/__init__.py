"""The pygls layer: translates LSP <-> engine/trace and owns no model code.

`server.py` builds the `Session` (`session.py`: the state and services a feature may use) and
registers the features. The rest lives in rooms:

- `protocol/`: framing, the JSON-RPC gate, the stdio loop, params, the shared names;
- `text/`: documents, their line tables, positions;
- `runtime/`: the model worker and its background queues, settings, status;
- `state/`: records, offers, placement, retention, repository context, trace search;
- `features/`: one module per LSP surface, and `commands/`; a feature imports no other feature.

docs/architecture.md draws the layers; tests/test_layers.py checks them.
"""
