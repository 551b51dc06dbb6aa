"""The other files a completion's prompt shows the model: snippets of open documents and of
files the current one imports (`engine/repository.py` ranks them).

The choice is kept while the user types in a document, so the prompt's repository part stays
the same tokens and the prefix cache keeps serving it; it is made again when another open file
changes, when the set of open files changes, or when the current file has grown by a quarter
since (a new file starts with few names to rank by).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whence_ls.engine.prompt import Snippet
from whence_ls.engine.repository import Block, blocks_of, imported_files, rank_blocks
from whence_ls.lsp.text.documents import Document, DocumentStore, uri_to_path

# characters of snippets chosen per token of the budget; the engine cuts them to exact tokens
CHARS_PER_TOKEN = 4
# open documents considered (most recent first): a session with 200 tabs must not rank them all
MAX_OPEN_DOCUMENTS = 20


@dataclass
class _Choice:
    others: tuple
    size: int
    snippets: list[Snippet]


class RepositoryContext:
    def __init__(self, documents: DocumentStore) -> None:
        self._documents = documents
        self._choices: dict[str, _Choice] = {}
        self._blocks: dict[tuple[str, int], list[Block]] = {}

    def snippets(self, document: Document, tokens: int) -> list[Snippet]:
        """Snippets for a completion in `document`, within about `tokens` tokens. Asked on every
        keystroke: the kept choice is checked against the open documents only (cheap); the
        document's imports are parsed and resolved on disk only when a choice is made."""
        if tokens <= 0:
            return []
        opened = self._opened(document)
        others = tuple((d.uri, d.version, len(d.text)) for d in opened)
        size = len(document.text)
        chosen = self._choices.get(document.uri)
        if chosen is not None and chosen.others == others and size <= chosen.size * 1.25 + 200:
            return chosen.snippets
        blocks: list[Block] = []
        for other in opened + self._imported(document, opened):
            blocks += self._blocks_of(other)
        snippets = rank_blocks(blocks, document.text, tokens * CHARS_PER_TOKEN)
        self._choices[document.uri] = _Choice(others, size, snippets)
        if len(self._choices) > 64:
            self._choices.pop(next(iter(self._choices)))
        return snippets

    def _opened(self, document: Document) -> list[Document]:
        """Other open documents of the same language, most recent first."""
        opened = [d for d in self._documents.open_documents() if d.uri != document.uri and d.problem is None
                  and d.language == document.language][-MAX_OPEN_DOCUMENTS:]
        return list(reversed(opened))

    def _imported(self, document: Document, opened: list[Document]) -> list[Document]:
        path = uri_to_path(document.uri)
        if path is None or not self._documents.roots:
            return []
        imported: list[Document] = []
        for file in imported_files(document.text, path, self._documents.roots, document.language)[:MAX_OPEN_DOCUMENTS]:
            found = self._documents.get(file.as_uri())
            if found is not None and found.problem is None and all(found.uri != d.uri for d in opened):
                imported.append(found)
        return imported

    def _blocks_of(self, document: Document) -> list[Block]:
        key = (document.uri, hash(document.text))
        found = self._blocks.get(key)
        if found is None:
            found = self._blocks[key] = blocks_of(self.shown_path(document.uri), document.text, document.uri)
            if len(self._blocks) > 128:
                self._blocks.pop(next(iter(self._blocks)))
        return found

    def shown_path(self, uri: str) -> str:
        """The path the model and the user see: relative to the workspace folder holding it."""
        path = uri_to_path(uri)
        if path is None:
            return uri.rsplit("/", 1)[-1]
        for root in self._documents.roots:
            try:
                return path.resolve().relative_to(root).as_posix()
            except ValueError:
                continue
        return path.name


def repository_name(roots: list[Path]) -> str | None:
    return roots[0].name if roots else None
