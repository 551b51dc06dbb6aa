"""Per-token attribution: for each generated (or explained) token, how much each context unit
drove it. One interface over several methods; rows are computed on demand, in the order asked,
and kept on the record (`ScoredText.attribution`).

    units = context_units(lm, record)
    rows = attribute_rows(lm, record, [3, 7], cancel=event)  # the model's default method
    rows[3].top(5)  # [(unit_index, signed score)], |scores| over all units sum to 1

Importing this package imports no torch: the names below are loaded from their modules when
first used, so `catalogue` (method names and notes) and `ranking` stay light for the CLI's
argument parsing and the language server.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "DEFAULT_METHOD": "catalogue",
    "FALLBACK_METHOD": "catalogue",
    "CALIBRATED_METHOD": "catalogue",
    "METHOD_NOTES": "catalogue",
    "METHOD_SHORT_NOTES": "catalogue",
    "METHODS": "catalogue",
    "AttributionMatrix": "api",
    "attribute_rows": "api",
    "attribution_matrix": "api",
    "default_method": "api",
    "least_confident_order": "api",
    "live_part_row": "api",
    "make_method": "api",
    "ALL_ROWS": "base",
    "AttributionRow": "base",
    "release_graph": "gradients",
    "ContextUnit": "units",
    "context_units": "units",
    "VERIFY_MASKS": "verification",
    "Verification": "verification",
    "verify_record": "verification",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
