"""Code actions on any line: explain it, regenerate from the least confident token, show the
attribution matrix, open the traced source. A client that resolves `command` lazily gets
actions without one and asks `codeAction/resolve`; others get the command at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.lsp.protocol.names import EXPLAIN_COMMAND, MATRIX_COMMAND, OPEN_COMMAND, REGENERATE_COMMAND
from whence_ls.lsp.protocol.params import as_json, invalid_params, plain, require, uinteger

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

KIND = types.CodeActionKind.Refactor + ".whence"


# how a comment-only line starts, by language (a line whose code begins so explains nothing)
_COMMENT_STARTS = {
    "python": ("#",), "ruby": ("#",), "bash": ("#",), "r": ("#",), "yaml": ("#",), "toml": ("#",),
    "lua": ("--",), "sql": ("--",), "haskell": ("--",),
}
_C_LIKE_COMMENTS = ("//", "/*", "*/", "* ")  # "* " continues a block comment; `*ptr = 0` is code


def _comment_only(line: str, language: str | None) -> bool:
    return line == "*" or line.startswith(_COMMENT_STARTS.get(language or "", _C_LIKE_COMMENTS))


# what each action's data holds besides its action and uri (see `code_actions`)
_DATA_FIELDS = {"explain": "line", "regenerate": "recordId", "matrix": "recordId", "open": "recordId"}
_DATA_SHAPE = "data made by textDocument/codeAction ({action, uri, line or recordId})"


def _our_data(data: Any) -> dict[str, Any]:
    """The data of an action `code_actions` made, or invalid params: a client may send back
    anything, and a field missing here is the client's error, not the server's."""
    body = as_json(data)
    action = require(body, "action", str, _DATA_SHAPE)
    field = _DATA_FIELDS.get(action)
    if field is None:
        raise invalid_params(f"expected {_DATA_SHAPE}; no action {action!r}")
    require(body, "uri", str, _DATA_SHAPE)
    if field == "line":
        uinteger(body, "line", f"{_DATA_SHAPE} with a 0-based integer line")
    else:
        require(body, field, str, _DATA_SHAPE)
    return body


class CodeActionsFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        options = types.CodeActionOptions(code_action_kinds=[KIND, types.CodeActionKind.QuickFix], resolve_provider=True)
        server.feature(types.TEXT_DOCUMENT_CODE_ACTION, options)(plain(self.code_actions))
        server.feature(types.CODE_ACTION_RESOLVE)(plain(self.resolve))

    def code_actions(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        session = self.session
        uri = params.text_document.uri
        document = session.documents.get(uri)
        if document is None or document.problem is not None:
            return []
        line = params.range.start.line
        try:
            start, end = document.line_span(line)
        except Exception:
            return []
        if params.context.trigger_kind == types.CodeActionTriggerKind.Automatic and params.range.start == params.range.end:
            # an editor asks this on every cursor move (VS Code's lightbulb): the cursor went
            # here, and the next completion is most likely asked here; warm its window while idle
            cursor = session.offset(document, params.range.start)
            if cursor is not None:
                session.warmups.request(uri, cursor)
        actions: list[types.CodeAction] = []
        # the lightbulb only where Explain has code to explain: not on blank or comment-only
        # lines (the command palette and the context menu still offer Explain on every line)
        text = document.text[start:end].strip()
        if text and not _comment_only(text, document.language) and document.text[:start].strip():  # scoring needs code above
            actions.append(self._action("whence: Explain this line", KIND, {"action": "explain", "uri": uri, "line": line}))
        for record in session.records.on_line(uri, start, end):
            actions.append(self._action("whence: Show attribution matrix", KIND, {"action": "matrix", "uri": uri, "recordId": record.id}))
            if record.kind == "completion":
                fix = self._action("whence: Regenerate from the least confident token", types.CodeActionKind.QuickFix,
                                   {"action": "regenerate", "uri": uri, "recordId": record.id})
                fix.diagnostics = [d for d in params.context.diagnostics if isinstance(d.data, dict) and d.data.get("recordId") == record.id] or None
                actions.append(fix)
            if record.trace_hits:
                actions.append(self._action(f"whence: Open traced source ({record.trace_hits[0]['path'].rsplit('/', 1)[-1]})", KIND,
                                            {"action": "open", "uri": uri, "recordId": record.id}))
            break  # the newest record on the line is the one the user sees
        only = params.context.only
        if only:
            actions = [a for a in actions if any(str(a.kind).startswith(str(k)) for k in only)]
        return actions

    def resolve(self, action: types.CodeAction) -> types.CodeAction:
        if action.command is None:
            action.command = self._command(_our_data(action.data))
        return action

    def _action(self, title: str, kind: str, data: dict[str, Any]) -> types.CodeAction:
        action = types.CodeAction(title=title, kind=kind, data=data)
        if not self._client_resolves_commands():
            action.command = self._command(data)  # no second round trip for such clients
        return action

    def _client_resolves_commands(self) -> bool:
        caps = self.session.client.client_capabilities
        code_action = caps.text_document.code_action if caps and caps.text_document else None
        support = code_action.resolve_support if code_action else None
        return bool(support and "command" in support.properties)

    def _command(self, data: dict[str, Any]) -> types.Command | None:
        action = data.get("action")
        if action == "explain":
            return types.Command(title="Explain this line", command=EXPLAIN_COMMAND, arguments=[{"uri": data["uri"], "line": data["line"]}])
        if action == "regenerate":
            return types.Command(title="Regenerate", command=REGENERATE_COMMAND, arguments=[{"uri": data["uri"], "recordId": data["recordId"]}])
        if action == "matrix":
            return types.Command(title="Show attribution matrix", command=MATRIX_COMMAND, arguments=[{"uri": data["uri"], "recordId": data["recordId"]}])
        if action == "open":
            record = self.session.records.get(data["recordId"])
            if record is not None and record.trace_hits:
                return types.Command(title="Open traced source", command=OPEN_COMMAND, arguments=[record.trace_hits[0]])
        return None
