"""The provenance log: every accepted completion, in SQLite (WAL) under the workspace's `.whence/`.

Each acceptance is committed before the command answers, with `synchronous=FULL`, so a crash
of the server (or the machine) right after never loses an accepted record. Trace hits arrive
later and are written as an update to the same row.
"""

from __future__ import annotations

import csv
import io
import json
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

COLUMNS = [
    "id", "accepted_at", "uri", "start_line", "language", "model", "device", "text", "tokens",
    "mean_prob", "min_prob", "low_confidence", "trace_hits", "licenses", "kind",
]


def log_path(workspace: Path) -> Path:
    return workspace / ".whence" / "provenance.sqlite"


class ProvenanceLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(SCHEMA)
            self._db = db
        return self._db

    def record(self, row: dict[str, Any]) -> None:
        values = [_column_value(name, row.get(name)) for name in COLUMNS]
        with self._lock:
            db = self._connect()
            db.execute(
                f"INSERT OR REPLACE INTO accepted ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                values,
            )

    def set_trace(self, record_id: str, hits: list[dict[str, Any]]) -> None:
        licenses = sorted({str(h.get("license") or "NOASSERTION") for h in hits})
        with self._lock:
            self._connect().execute(
                "UPDATE accepted SET trace_hits = ?, licenses = ? WHERE id = ?",
                (json.dumps(hits), json.dumps(licenses), record_id),
            )

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
    """Every accepted completion, oldest first, with JSON columns decoded."""
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
        return rows
    finally:
        db.close()


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    names = ["id", "accepted_at_iso", "uri", "start_line", "language", "kind", "model", "device", "tokens",
             "mean_prob", "min_prob", "licenses", "top_hit", "text"]
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        hits = row.get("trace_hits") or []
        top = hits[0] if hits else None
        writer.writerow({
            **row,
            "licenses": ";".join(row.get("licenses") or []),
            "top_hit": f"{top.get('path')}:{top.get('source_start_line')}-{top.get('source_end_line')}" if top else "",
        })
    return out.getvalue()
