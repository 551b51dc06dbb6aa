"""Plain JSON values from what pygls hands custom handlers, and LSP shapes as plain dicts."""

from __future__ import annotations

from typing import Any

from whence_ls.errors import WhenceError


def as_json(value: Any) -> Any:
    """pygls turns the params of methods it has no type for into namedtuples; back to JSON."""
    if hasattr(value, "_asdict"):
        return {k: as_json(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value


def require(body: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """`body[key]`, or an invalid-params error naming what was expected."""
    if not isinstance(body, dict) or key not in body or not isinstance(body[key], kind) or isinstance(body[key], bool) and kind is int:
        raise invalid_params(f"expected {what}")
    return body[key]


def range_json(start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
    return {"start": {"line": start[0], "character": start[1]}, "end": {"line": end[0], "character": end[1]}}


# LSP's RequestFailed: the request was valid, but what it asks for cannot be done (the reason is
# the message); JSON-RPC's internal error (-32603) stays for bugs
REQUEST_FAILED = -32803


def request_failed(exc: WhenceError) -> Exception:
    from pygls.exceptions import JsonRpcException

    return JsonRpcException(message=str(exc), code=REQUEST_FAILED)


def plain(method: Any) -> Any:
    """A plain function calling a bound method (pygls tags its handlers with attributes, which
    bound methods cannot carry); a WhenceError becomes RequestFailed with its one-line reason."""
    import asyncio

    if asyncio.iscoroutinefunction(method):

        async def handler(*args: Any) -> Any:
            try:
                return await method(*args)
            except WhenceError as exc:
                raise request_failed(exc) from None

    else:

        def handler(*args: Any) -> Any:
            try:
                return method(*args)
            except WhenceError as exc:
                raise request_failed(exc) from None

    handler.__name__ = handler.__qualname__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


def invalid_params(message: str) -> Exception:
    """The JSON-RPC error a handler raises for arguments that break the contract (-32602)."""
    from pygls.exceptions import JsonRpcInvalidParams

    return JsonRpcInvalidParams(message=message)


def single_argument(args: tuple, kind: type, what: str) -> Any:
    """The one argument of a workspace/executeCommand, of the kind the contract names."""
    values = [as_json(a) for a in args]
    if len(values) != 1 or not isinstance(values[0], kind):
        raise invalid_params(f"expected {what}")
    return values[0]


def jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=str))


# LSP's uinteger: what a line or character may be
UINTEGER_MAX = 2**31 - 1


def uinteger(body: Any, key: str, what: str) -> int:
    value = require(body, key, int, what)
    if not 0 <= value <= UINTEGER_MAX:
        raise invalid_params(f"expected {what} (0 to {UINTEGER_MAX}, got {value})")
    return value


def position_of(body: Any) -> tuple[int, int]:
    """(line, character) of `body["position"]`, checked as LSP's Position."""
    position = body.get("position") if isinstance(body, dict) else None
    if not isinstance(position, dict):
        raise invalid_params("expected a position {line, character}")
    return uinteger(position, "line", "a 0-based integer line"), uinteger(position, "character", "a 0-based integer character")


def object_params(params: Any, what: str) -> dict[str, Any]:
    """The params of a custom request as a JSON object, or invalid params naming the shape."""
    body = as_json(params)
    if not isinstance(body, dict):
        raise invalid_params(f"expected params {what}")
    return body
