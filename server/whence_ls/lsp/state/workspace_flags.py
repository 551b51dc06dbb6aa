"""The workspace's own flag: a calibration of the flag score on what the person here rewrote.

It learns from the provenance log: each accepted completion's token facts (written with the
acceptance) and its kept tokens at the last retention checkpoint. A completion deleted as a
whole says nothing about its tokens (the person rejected it, not a token of it) and is left
out. Once the workspace has `MIN_EDITED_TOKENS` rewritten tokens (chosen with `whence-ls bench
retention`'s learning curve) and the `workspaceFlags` setting is on, the diagnostics flag by
this calibration instead of the global threshold, and say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from whence_ls.engine.confidence import readable
from whence_ls.engine.flag_calibration import Example, TokenFacts, WorkspaceCalibration, fit

log = logging.getLogger(__name__)

# rewritten tokens before the workspace's calibration replaces the global flag: from the
# benchmark's learning curve, where the calibration was level with the global flag
MIN_EDITED_TOKENS = 40
# a flag from the workspace calibration: rewritten more often than not
WORKSPACE_FLAG_CHANCE = 0.5


def facts_json(facts: TokenFacts, text: str, flagged: bool) -> dict[str, Any]:
    return {"text": text, "kind": facts.kind, "flag": round(facts.flag, 4), "entropy": round(facts.entropy, 4),
            "first": facts.first, "flagged": flagged}


class WorkspaceFlags:
    def __init__(self) -> None:
        self._facts: dict[str, list[dict[str, Any]]] = {}
        self._kept: dict[str, list[bool]] = {}
        self.calibration: WorkspaceCalibration | None = None

    def load(self, path: Path) -> None:
        """What the log knows already (called off the event loop at start-up)."""
        from whence_ls.provenance import read_rows

        if not path.is_file():
            return
        try:
            rows = read_rows(path)
        except Exception as exc:  # an unreadable log is handled where it is written; learn nothing
            log.warning("workspace flags: cannot read %s: %s", path, exc)
            return
        for row in rows:
            tokens = row.get("kept_tokens") or []
            if tokens:
                self._facts[row["id"]] = [{"text": t["text"], "kind": t["kind"], "flag": t["flag_score"],
                                           "entropy": t.get("entropy", 0.0), "first": t["index"] == 0} for t in tokens]
                if all(t["kept"] is not None for t in tokens):
                    self._kept[row["id"]] = [bool(t["kept"]) for t in tokens]
        self.refit()

    def accepted(self, record_id: str, facts: list[dict[str, Any]]) -> None:
        self._facts[record_id] = facts

    def observed(self, record_id: str, kept_tokens: list[bool]) -> None:
        """A committed checkpoint: its kept tokens are the newest labels of that completion."""
        if record_id in self._facts:
            self._kept[record_id] = list(kept_tokens)
            self.refit()

    def examples(self) -> list[Example]:
        found = []
        for record_id, kept in self._kept.items():
            facts = self._facts.get(record_id) or []
            if not any(kept) or len(kept) != len(facts):
                continue  # deleted as a whole: a verdict on the completion, not on its tokens
            for fact, is_kept in zip(facts, kept):
                if readable(fact.get("text") or ""):
                    found.append(Example(TokenFacts(fact["kind"], float(fact["flag"]), float(fact.get("entropy") or 0.0),
                                                    bool(fact.get("first"))), not is_kept))
        return found

    def refit(self) -> None:
        self.calibration = fit(self.examples())

    def edited_tokens(self) -> int:
        return self.calibration.edited_tokens if self.calibration is not None else 0

    def active(self, enabled: bool) -> WorkspaceCalibration | None:
        """The calibration the diagnostics use, or None: the global flag."""
        if not enabled or self.calibration is None or self.calibration.edited_tokens < MIN_EDITED_TOKENS:
            return None
        return self.calibration
