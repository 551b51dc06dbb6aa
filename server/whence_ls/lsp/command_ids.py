"""Command ids the server registers and names in hovers, lenses and actions: one module, so that
features refer to each other's commands without importing each other."""

from __future__ import annotations

CONTRAST_COMMAND = "whence.explainContrast"  # "why this token and not the runner-up", from a hover link
