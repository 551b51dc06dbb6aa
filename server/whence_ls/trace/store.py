"""The on-disk trace index: a directory with a manifest, SQLite metadata, fingerprint arrays
and a FAISS file.

It is always written complete into a temporary sibling directory and renamed into place, so a
build that is killed leaves the previous index (or nothing) where the index was. The manifest
is written last, so a directory without one is by definition half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np

from whence_ls.errors import WhenceError

FORMAT = "whence-trace-index"
# 2: the renamed stream keeps builtins and attribute names (version-1 indexes match nothing)
VERSION = 2
MANIFEST = "manifest.json"
METADATA = "meta.sqlite"
VECTORS = "vectors.faiss"
IDF = "idf.npy"  # static embeddings only: the corpus's word-piece IDF

_SCHEMA = """
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, relative_path TEXT NOT NULL,
    language TEXT NOT NULL, license TEXT NOT NULL, repository TEXT, git_commit TEXT,
    text BLOB NOT NULL
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    start_line INTEGER NOT NULL, end_line INTEGER NOT NULL
);
CREATE INDEX chunks_by_file ON chunks(file_id, start_line);
CREATE INDEX files_by_path ON files(path);
"""


def fingerprint_files(stream: str) -> tuple[str, str, str]:
    return f"fp_{stream}_hashes.npy", f"fp_{stream}_rows.npy", f"common_{stream}.npy"


def backup_path(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def temporary_path(path: Path) -> Path:
    return path.parent / f".{path.name}.building-{os.getpid()}"


def check_output_path(out: Path) -> None:
    """Refuse to replace anything that is not a trace index (a user's source tree, say)."""
    if out.exists() and not out.is_dir():
        raise WhenceError(f"index path exists and is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise WhenceError(f"refusing to overwrite {out}: it is not empty and not a trace index")


def remove_stale_builds(out: Path) -> None:
    """Temporary directories of builds that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.building-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_interrupted_swap(path: Path) -> None:
    """A build killed between its two renames leaves the previous index as the backup."""
    backup = backup_path(path)
    if not path.exists() and backup.is_dir() and (backup / MANIFEST).is_file():
        os.rename(backup, path)


def write_metadata(directory: Path, files: list, chunks: list) -> None:
    connection = sqlite3.connect(directory / METADATA)
    try:
        connection.executescript(_SCHEMA)
        connection.executemany(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((i, f.path, f.relative_path, f.language, f.license, f.repository, f.commit,
              zlib.compress(f.text.encode("utf-8"), 6)) for i, f in enumerate(files)))
        connection.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                               ((i, *c) for i, c in enumerate(chunks)))
        connection.commit()
    finally:
        connection.close()


def write_fingerprints(directory: Path, stream: str, hashes: np.ndarray, rows: np.ndarray,
                       common: np.ndarray) -> None:
    hashes_name, rows_name, common_name = fingerprint_files(stream)
    np.save(directory / hashes_name, hashes.astype(np.uint64))
    np.save(directory / rows_name, rows.astype(np.int32))
    np.save(directory / common_name, common.astype(np.uint64))


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def part_checks(directory: Path) -> dict:
    """Size and CRC-32 of every part of an index: read back at open, so a part damaged or
    replaced on disk (not only a missing or unparseable one) is reported, not served."""
    return {p.name: {"bytes": p.stat().st_size, "crc32": _crc32(p)}
            for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(MANIFEST)}


def verify_parts(path: Path, manifest: dict) -> None:
    """WhenceError naming the first part whose size or checksum differs from the manifest's.
    Indexes built before checksums were recorded are not checked."""
    checks = manifest.get("parts")
    if checks is None:
        return
    if not isinstance(checks, dict):
        raise WhenceError(f"corrupt trace index at {path}: its manifest's parts list is malformed")
    for name, expected in sorted(checks.items()):
        part = path / name
        try:
            size = part.stat().st_size
            if not isinstance(expected, dict) or size != expected.get("bytes"):
                raise WhenceError(f"corrupt trace index at {path}: {name} is {size} bytes, the build wrote "
                                  f"{expected.get('bytes') if isinstance(expected, dict) else '?'} (rebuild it)")
            if _crc32(part) != expected.get("crc32"):
                raise WhenceError(f"corrupt trace index at {path}: {name} changed since it was built "
                                  "(checksum mismatch; rebuild it)")
        except OSError as exc:
            raise WhenceError(f"corrupt trace index at {path}: {name} unreadable ({exc.strerror or exc})") from None


def write_manifest(directory: Path, manifest: dict) -> None:
    body = {"format": FORMAT, "version": VERSION, **manifest, "parts": part_checks(directory)}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)


def install(tmp: Path, out: Path) -> None:
    """Move the finished index into place, keeping the old one until the new one is there."""
    backup = backup_path(out)
    if backup.exists():
        shutil.rmtree(backup)
    if out.exists():
        os.rename(out, backup)
    os.rename(tmp, out)
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def read_manifest(path: Path) -> dict:
    restore_interrupted_swap(path)
    if not path.exists():
        raise WhenceError(f"no trace index at {path} (build one with `whence-ls index build`)")
    if not path.is_dir():
        raise WhenceError(f"not a trace index: {path} is not a directory")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise WhenceError(f"not a trace index, or a half-written one: {path} has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WhenceError(f"corrupt trace index at {path}: unreadable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WhenceError(f"not a whence-ls trace index: {path}")
    if manifest.get("version") != VERSION:
        raise WhenceError(
            f"trace index at {path} has format version {manifest.get('version')}, this whence-ls "
            f"reads version {VERSION}: rebuild it with `whence-ls index build`")
    verify_parts(path, manifest)
    return manifest


def file_text(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")
