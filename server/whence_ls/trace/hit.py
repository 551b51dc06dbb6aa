"""`TraceHit`: one traced source of a piece of code, as the CLI, code lens and provenance log
show it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

KINDS = ("verbatim", "renamed", "similar")


@dataclass
class TraceHit:
    path: str  # the corpus file, absolute as it was when indexed
    repository: str | None
    commit: str | None
    source_start_line: int  # 1-based, inclusive, in the corpus file
    source_end_line: int
    query_start_line: int  # 1-based, inclusive, in the query (offset by its first line)
    query_end_line: int
    license: str  # SPDX id or NOASSERTION
    kind: str  # "verbatim" | "renamed" | "similar"
    matched_fraction: float  # share of the query's fingerprinted text found in this source
    score: float  # calibrated: estimated probability that the query was taken from here
    language: str
    file_id: int | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        body = asdict(self)
        body.pop("file_id")
        body["matched_fraction"] = round(float(self.matched_fraction), 4)
        body["score"] = round(float(self.score), 4)
        return body

    @classmethod
    def from_json(cls, body: dict) -> "TraceHit":
        """The hit back from its JSON (a client hands it to `whence/tracedSource`)."""
        names = set(cls.__dataclass_fields__) - {"file_id"}
        missing = names - set(body)
        if missing:
            from whence_ls.errors import WhenceError

            raise WhenceError(f"not a trace hit: missing {', '.join(sorted(missing))}")
        return cls(**{name: body[name] for name in names})
