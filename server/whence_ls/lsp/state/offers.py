"""Completions offered but not (yet) accepted, and the small cache of identical requests."""

from __future__ import annotations

import copy
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from whence_ls.engine.records import ScoredText

MAX_OFFERS = 64
MAX_CACHED = 32


@dataclass
class Offer:
    scored: ScoredText  # its own copy: accepting it turns it into a record that gets mutated
    uri: str
    mark: int  # document edit mark when the text was read
    created: float = field(default_factory=time.time)
    shown_at: float | None = None

    @property
    def id(self) -> str:
        return self.scored.id


class OfferBook:
    def __init__(self) -> None:
        self._offers: OrderedDict[str, Offer] = OrderedDict()

    def add(self, template: ScoredText, uri: str, mark: int) -> Offer:
        # the live rows are read-only tensors (megabytes for a long completion): shared, not copied
        scored = copy.deepcopy(template, memo={id(template.live_rows): template.live_rows})
        scored.id = uuid.uuid4().hex[:12]
        scored.attribution = {}
        scored.attribution_method = None
        offer = Offer(scored, uri, mark)
        self._offers[offer.id] = offer
        while len(self._offers) > MAX_OFFERS:
            self._offers.popitem(last=False)
        return offer

    def get(self, offer_id: str) -> Offer | None:
        return self._offers.get(offer_id)

    def pop(self, offer_id: str) -> Offer | None:
        return self._offers.pop(offer_id, None)


class CompletionCache:
    """Identical requests (same text before the cursor, same rest of line, same settings) are
    answered from here: editors re-ask for the same position often (focus changes, re-renders)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, ScoredText] = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(text: str, cursor: int, language: str | None, settings_key: tuple) -> tuple:
        # the code after the cursor counts too: a FIM prompt shows it, and the stopper ends a
        # completion where it reappears
        return (hash(text[:cursor]), cursor, hash(text[cursor : cursor + 4096]), language, settings_key)

    def get(self, key: tuple) -> ScoredText | None:
        scored = self._entries.get(key)
        if scored is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return scored

    def put(self, key: tuple, scored: ScoredText) -> None:
        self._entries[key] = scored
        while len(self._entries) > MAX_CACHED:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
