"""What a JSON value must be before pygls may see it, and the error each request gets otherwise.

pygls drops silently what it cannot structure (a request without `"jsonrpc"`, params that do
not fit the method's type, anything after `shutdown`), so the client waits forever. The gate
checks the JSON-RPC envelope and the LSP lifecycle first, and answers every request it stops
with the error JSON-RPC and LSP name:

- -32700 parse error: not JSON (framing problems too; the id is null unless it could be read);
- -32600 invalid request: not a request object, a wrong `jsonrpc`, a second `initialize`,
  anything but `exit` after `shutdown`;
- -32601 method not found: a notification's method (`initialized`, `textDocument/didOpen`,
  `$/cancelRequest`, ...) sent with an id, which makes it a request no one handles (pygls would
  run it as the notification and never answer);
- -32602 invalid params: params that are not an object or array, or do not fit the method;
- -32002 server not initialized: a request before `initialize`.

Notifications never get an answer (JSON-RPC forbids it); a bad one is logged and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import attrs
from lsprotocol import types

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_NOT_INITIALIZED = -32002

# requests and notifications allowed whatever the lifecycle state
_ALWAYS = {"exit", "$/cancelRequest", "$/setTrace"}
# LSP's notifications (either direction): their message types carry no id
NOTIFICATION_METHODS = frozenset(method for method, (message, *_) in types.METHOD_TO_TYPES.items()
                                 if "id" not in attrs.fields_dict(message))


@dataclass
class Rejection:
    id: Any  # the request's id, or None when there is none to answer (or it is unreadable)
    code: int
    message: str
    answer: bool = True  # False for notifications: logged, never answered


def readable_id(value: Any) -> Any:
    """The id of a JSON value that looks like a request, when it is a valid JSON-RPC id."""
    if isinstance(value, dict):
        msg_id = value.get("id")
        if isinstance(msg_id, str) or isinstance(msg_id, int) and not isinstance(msg_id, bool):
            return msg_id
    return None


class RequestGate:
    """Checks each incoming JSON value; keeps the lifecycle state it needs for that."""

    def __init__(self) -> None:
        self.initialize_seen = False
        self.shutdown_seen = False

    def check(self, value: Any) -> Rejection | None:
        """None when `value` may go on to pygls, else why not."""
        if isinstance(value, list):
            return Rejection(None, INVALID_REQUEST, "batch requests are not supported by LSP")
        if not isinstance(value, dict):
            return Rejection(None, INVALID_REQUEST, "a message must be a JSON object")
        has_id = "id" in value
        msg_id = readable_id(value)
        method = value.get("method")
        if "method" not in value:
            if has_id and ("result" in value or "error" in value):
                return None  # a response to one of our requests: pygls matches it up
            return Rejection(msg_id, INVALID_REQUEST, "a message needs a method (or a result or error)", answer=has_id)
        is_request = has_id
        if is_request and msg_id is None:
            return Rejection(None, INVALID_REQUEST, "a request id must be a string or an integer")
        if value.get("jsonrpc") != "2.0":
            return Rejection(msg_id, INVALID_REQUEST, 'a message needs "jsonrpc": "2.0"', answer=is_request)
        if not isinstance(method, str):
            return Rejection(msg_id, INVALID_REQUEST, "method must be a string", answer=is_request)
        # null params are not JSON-RPC, but clients send them for shutdown and exit: as if absent
        if value.get("params") is not None and not isinstance(value["params"], (dict, list)):
            return Rejection(msg_id, INVALID_PARAMS, "params must be an object or an array", answer=is_request)
        if is_request and method in NOTIFICATION_METHODS:
            return Rejection(msg_id, METHOD_NOT_FOUND, f"{method} is a notification: send it without an id")
        if method in _ALWAYS:
            return None
        if self.shutdown_seen:
            return Rejection(msg_id, INVALID_REQUEST, f"{method} after shutdown: only exit is allowed", answer=is_request)
        if method == "initialize":
            if not is_request:
                return Rejection(None, INVALID_REQUEST, "initialize is a request", answer=False)
            if self.initialize_seen:
                return Rejection(msg_id, INVALID_REQUEST, "the server is already initialized")
            return None
        if not self.initialize_seen:
            return Rejection(msg_id, SERVER_NOT_INITIALIZED, f"{method} before initialize", answer=is_request)
        return None

    def passed(self, value: dict) -> None:
        """Record the lifecycle step of a message that went on to pygls."""
        if "id" in value and value.get("method") == "initialize":
            self.initialize_seen = True
        elif "id" in value and value.get("method") == "shutdown":
            self.shutdown_seen = True
