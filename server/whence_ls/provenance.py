"""The provenance log: every accepted completion, in SQLite (WAL) under the workspace's `.whence/`.

Each acceptance is committed before the command answers, with `synchronous=FULL`, so a crash
of the server (or the machine) right after never loses an accepted record. Trace hits arrive
later and are written as an update to the same row.

Retention checkpoints (`retention.py`: how much of an accepted completion is still as written,
30 s, 2 min and 10 min after the accept and at each save and close) go to their own table under
the same rules: committed with `synchronous=FULL` before the server tells the client (the
`whence/retention` notification is the acknowledgement). Each accepted completion's per-token
facts (text, flag score, kind, whether it was flagged) are written in the acceptance's own
transaction, and the completions shown (`whence/completionShown`) in a table of their own, for
`whence-ls provenance stats`. A log written before these tables gets them when opened.

A log that is not one (random bytes, a truncated file, a directory, another program's schema) is
moved aside, never deleted, and a new one is started; a log locked by another writer is retried
for a bounded time. When a row still cannot be written the write raises, so the command answers
an error instead of acknowledging a record that does not exist.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    id TEXT PRIMARY KEY,
    accepted_at REAL NOT NULL,
    uri TEXT NOT NULL,
    start_line INTEGER,
    language TEXT,
    model TEXT NOT NULL,
    device TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    mean_prob REAL,
    min_prob REAL,
    low_confidence TEXT NOT NULL,
    trace_hits TEXT,
    licenses TEXT,
    kind TEXT NOT NULL DEFAULT 'completion'
)
"""

# per accepted completion: its tokens' facts, committed with the accepted row
TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted_tokens (
    id TEXT PRIMARY KEY,
    tokens TEXT NOT NULL
)
"""

# per accepted completion and checkpoint ("30s", "120s", "600s", "save", "close"): what is kept
RETENTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS retention (
    id TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    at REAL NOT NULL,
    kept_chars INTEGER NOT NULL,
    total_chars INTEGER NOT NULL,
    kept_tokens TEXT NOT NULL,
    PRIMARY KEY (id, checkpoint)
)
"""

SHOWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS shown (
    id TEXT PRIMARY KEY,
    shown_at REAL NOT NULL,
    uri TEXT
)
"""

TABLES = {"accepted_tokens": (TOKENS_SCHEMA, ["id", "tokens"]),
          "retention": (RETENTION_SCHEMA, ["id", "checkpoint", "at", "kept_chars", "total_chars", "kept_tokens"]),
          "shown": (SHOWN_SCHEMA, ["id", "shown_at", "uri"])}

COLUMNS = [
    "id", "accepted_at", "uri", "start_line", "language", "model", "device", "text", "tokens",
    "mean_prob", "min_prob", "low_confidence", "trace_hits", "licenses", "kind",
]


log = logging.getLogger(__name__)

# how long one statement waits for another writer's lock, and how often it is tried: an
# acceptance answers within about BUSY_TIMEOUT_MS * LOCK_ATTEMPTS, with its row or an error
BUSY_TIMEOUT_MS = 1500
LOCK_ATTEMPTS = 3


class ProvenanceError(Exception):
    """A row could not be committed; the message says why, in one line."""


def log_path(workspace: Path) -> Path:
    return workspace / ".whence" / "provenance.sqlite"


def _is_lock(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class ProvenanceLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.moved_aside: list[Path] = []  # logs that were not logs, kept beside the new one

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the log failed its integrity check")
            db.execute(SCHEMA)
            found = [r[1] for r in db.execute("PRAGMA table_info(accepted)")]
            if found != COLUMNS:
                raise sqlite3.DatabaseError(f"its table has other columns ({', '.join(found[:6])}…)")
            for table, (schema, columns) in TABLES.items():
                db.execute(schema)
                found = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                if found != columns:
                    raise sqlite3.DatabaseError(f"its {table} table has other columns ({', '.join(found[:6])}…)")
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        try:
            if self.path.is_dir():
                raise sqlite3.DatabaseError("it is a directory")
            self._db = self._open()
        except sqlite3.Error as exc:
            if _is_lock(exc):
                raise
            self._move_aside(str(exc))
            self._db = self._open()
        return self._db

    def _move_aside(self, reason: str) -> None:
        """Rename the log that is not a log (and its WAL files) beside it; never delete it."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.unreadable-{stamp}-{n}")
        self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        self.moved_aside.append(target)
        log.warning("provenance log %s was not readable (%s): moved to %s, started a new one", self.path, reason, target)

    def _write(self, sql: str, values: Any, *more: tuple[str, Any]) -> None:
        """Run one write (or several, in one transaction), committed when it returns; retried
        while another writer holds the lock."""
        last: Exception | None = None
        for attempt in range(LOCK_ATTEMPTS):
            try:
                with self._lock:
                    db = self._connect()
                    if not more:
                        db.execute(sql, values)
                        return
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        for statement, arguments in ((sql, values), *more):
                            db.execute(statement, arguments)
                        db.execute("COMMIT")
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                return
            except sqlite3.Error as exc:
                last = exc
                if not _is_lock(exc):
                    # the log broke while open (truncated, replaced): the next attempt reopens
                    # it, checks it and moves it aside if it is no longer a log
                    self.close()
                    if attempt > 0:
                        break
        raise ProvenanceError(f"provenance log {self.path}: {last}")

    def record(self, row: dict[str, Any], tokens: list[dict[str, Any]] | None = None) -> None:
        """The accepted row, and (in the same transaction) its tokens' facts."""
        values = [_column_value(name, row.get(name)) for name in COLUMNS]
        insert = f"INSERT OR REPLACE INTO accepted ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        if tokens is None:
            self._write(insert, values)
        else:
            self._write(insert, values, ("INSERT OR REPLACE INTO accepted_tokens (id, tokens) VALUES (?, ?)",
                                         (row["id"], json.dumps(tokens))))

    def checkpoint(self, record_id: str, name: str, at: float, kept_chars: int, total_chars: int, kept_tokens: list[bool]) -> None:
        """One retention checkpoint, committed when this returns (a later one of the same name,
        a second save, replaces it)."""
        self._write("INSERT OR REPLACE INTO retention (id, checkpoint, at, kept_chars, total_chars, kept_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                    (record_id, name, at, kept_chars, total_chars, json.dumps([int(k) for k in kept_tokens])))

    def shown(self, completion_id: str, at: float, uri: str | None) -> None:
        self._write("INSERT OR IGNORE INTO shown (id, shown_at, uri) VALUES (?, ?, ?)", (completion_id, at, uri))

    def set_trace(self, record_id: str, hits: list[dict[str, Any]]) -> None:
        licenses = sorted({str(h.get("license") or "NOASSERTION") for h in hits})
        self._write("UPDATE accepted SET trace_hits = ?, licenses = ? WHERE id = ?", (json.dumps(hits), json.dumps(licenses), record_id))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _column_value(name: str, value: Any) -> Any:
    if name in ("low_confidence", "trace_hits", "licenses") and value is not None:
        return json.dumps(value)
    return value


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every accepted completion, oldest first, with JSON columns decoded, and what is known of
    its retention: `checkpoints` ({name: {at, kept_share, kept_tokens}}), `kept_share` at the
    last one (None before any), and per token `kept` (None before any checkpoint)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute(f"SELECT {', '.join(COLUMNS)} FROM accepted ORDER BY accepted_at, id")
        rows = []
        for values in cursor:
            row = dict(zip(COLUMNS, values))
            for name in ("low_confidence", "trace_hits", "licenses"):
                row[name] = json.loads(row[name]) if row[name] is not None else None
            row["accepted_at_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["accepted_at"]))
            rows.append(row)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        facts = dict(db.execute("SELECT id, tokens FROM accepted_tokens")) if "accepted_tokens" in tables else {}
        checkpoints: dict[str, dict[str, dict[str, Any]]] = {}
        if "retention" in tables:
            for record_id, name, at, kept, total, kept_tokens in db.execute(
                    "SELECT id, checkpoint, at, kept_chars, total_chars, kept_tokens FROM retention ORDER BY at"):
                checkpoints.setdefault(record_id, {})[name] = {"at": at, "kept_share": kept / total if total else 1.0,
                                                                "kept_tokens": json.loads(kept_tokens)}
        for row in rows:
            _add_retention(row, json.loads(facts[row["id"]]) if row["id"] in facts else None, checkpoints.get(row["id"], {}))
        return rows
    finally:
        db.close()


def _add_retention(row: dict[str, Any], facts: list[dict[str, Any]] | None, checkpoints: dict[str, dict[str, Any]]) -> None:
    row["checkpoints"] = checkpoints
    last = max(checkpoints.values(), key=lambda c: c["at"]) if checkpoints else None
    row["kept_share"] = round(last["kept_share"], 4) if last else None
    kept = last["kept_tokens"] if last else None
    row["kept_tokens"] = [
        {"index": i, "text": f.get("text"), "flag_score": f.get("flag"), "flagged": bool(f.get("flagged")),
         "kind": f.get("kind"), "entropy": f.get("entropy"), "kept": bool(kept[i]) if kept is not None and i < len(kept) else None}
        for i, f in enumerate(facts or [])
    ]


def read_shown(path: Path) -> list[tuple[str, float]]:
    """(completion id, when) of every completion the client reported shown; [] for a log from
    before the table."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shown'").fetchone():
            return []
        return list(db.execute("SELECT id, shown_at FROM shown ORDER BY shown_at"))
    finally:
        db.close()


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    names = ["id", "accepted_at_iso", "uri", "start_line", "language", "kind", "model", "device", "tokens",
             "mean_prob", "min_prob", "licenses", "top_hit", "kept_share", "kept_tokens", "text"]
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        hits = row.get("trace_hits") or []
        top = hits[0] if hits else None
        kept = [t["kept"] for t in row.get("kept_tokens") or [] if t["kept"] is not None]
        writer.writerow({
            **row,
            "licenses": ";".join(row.get("licenses") or []),
            "top_hit": f"{top.get('path')}:{top.get('source_start_line')}-{top.get('source_end_line')}" if top else "",
            "kept_share": "" if row.get("kept_share") is None else row["kept_share"],
            "kept_tokens": f"{sum(kept)}/{len(kept)}" if kept else "",  # kept of the tokens with a checkpoint
        })
    return out.getvalue()
