"""Every command id and custom method name the server registers or names in hovers, lenses and
actions, in one module: features refer to each other's commands through it, never through each
other's modules. The client's `protocol.ts` repeats them (docs/lsp-protocol.md is the contract)."""

from __future__ import annotations

# workspace/executeCommand
ACCEPT_COMMAND = "whence.acceptCompletion"
EXPLAIN_COMMAND = "whence.explainLine"
REGENERATE_COMMAND = "whence.regenerate"
CONTRAST_COMMAND = "whence.explainContrast"  # "why this token and not the runner-up", from a hover link
# client command: the page of one SAE feature (its top snippets, and where this token's activation came from)
SHOW_FEATURE_COMMAND = "whence.showFeature"
OPEN_COMMAND = "whence.openTracedSource"
BUILD_COMMAND = "whence.buildIndex"
MATRIX_COMMAND = "whence.showAttributionMatrix"  # rendered by the client; listed for code actions

# custom requests and notifications
STATUS_METHOD = "whence/status"
MATRIX_METHOD = "whence/attributionMatrix"
MATRIX_HTML_METHOD = "whence/matrixHtml"
UNWATCH_MATRIX_METHOD = "whence/unwatchMatrix"  # client -> server: the panel closed
FEATURE_METHOD = "whence/feature"
TOKEN_METHOD = "whence/tokenAttribution"
TRACED_SOURCE_METHOD = "whence/tracedSource"
SHOWN_METHOD = "whence/completionShown"
RETENTION_METHOD = "whence/retention"  # server -> client: a retention checkpoint was committed
RETENTION_REPORT_METHOD = "whence/retentionReport"  # the view: stats and plots of the provenance log
ROWS_READY_METHOD = "whence/rowsReady"  # server -> client: rows of a record arrived (no polling)
