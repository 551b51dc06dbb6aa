"""Per-token attribution: for each generated (or explained) token, how much each context unit
drove it. One interface over several methods; rows are computed on demand, in the order asked,
and kept on the record (`ScoredText.attribution`).

    units = context_units(lm, record, language)
    rows = attribute_rows(lm, record, [3, 7], cancel=event)  # the model's default method
    rows[3].top(5)  # [(unit_index, signed score)], |scores| over all units sum to 1
"""

from __future__ import annotations

from whence_ls.engine.attribution.api import (
    DEFAULT_METHOD,
    FALLBACK_METHOD,
    METHOD_NOTES,
    METHOD_SHORT_NOTES,
    METHODS,
    AttributionMatrix,
    attribute_rows,
    attribution_matrix,
    default_method,
    least_confident_order,
    make_method,
    prepare_rows,
)
from whence_ls.engine.attribution.base import ALL_ROWS, AttributionRow
from whence_ls.engine.attribution.gradients import release_graph
from whence_ls.engine.attribution.units import ContextUnit, context_units
from whence_ls.engine.attribution.verification import VERIFY_MASKS, Verification, verify_record

__all__ = [
    "ALL_ROWS",
    "VERIFY_MASKS",
    "Verification",
    "DEFAULT_METHOD",
    "FALLBACK_METHOD",
    "METHOD_NOTES",
    "METHOD_SHORT_NOTES",
    "METHODS",
    "AttributionMatrix",
    "AttributionRow",
    "ContextUnit",
    "attribute_rows",
    "attribution_matrix",
    "default_method",
    "context_units",
    "least_confident_order",
    "make_method",
    "prepare_rows",
    "release_graph",
    "verify_record",
]
