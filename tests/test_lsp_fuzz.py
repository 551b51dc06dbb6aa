"""The protocol layer under abuse, over real stdio (raw_rpc.py: no LSP library in between).

Every request gets exactly one answer, whatever it holds; a framing error never stops the
server; after each batch it still serves a hover and a completion. The named cases are the ones
a raw client found unanswered (issue 11); the generated ones (seeded) delete fields, change
types, and send huge numbers and odd Unicode into every method the server offers.
"""

from __future__ import annotations

import copy
import json
import random

import pytest

from raw_rpc import RawServer
from test_lsp_support import PY_SOURCE

INTERNAL_ERROR = -32603
SEED = 11
GENERATED_CASES = 560
BATCH = 40


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "main.py").write_text(PY_SOURCE)
    raw = RawServer(root)
    raw.root = root
    raw.uri = (root / "main.py").as_uri()
    answer = raw.initialize(root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 4})
    assert "result" in answer
    assert raw.wait_ready()["state"] == "ready"
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": raw.uri, "languageId": "python", "version": 1, "text": PY_SOURCE}})
    yield raw
    raw.close()


def position_params(uri: str, line: int = 10, character: int = 10) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}


def templates(uri: str) -> list[tuple[str, dict | list | None]]:
    """One valid request per method the server offers."""
    pos = position_params(uri)
    rng = {"start": {"line": 10, "character": 0}, "end": {"line": 10, "character": 5}}
    return [
        ("textDocument/hover", pos),
        ("textDocument/inlineCompletion", {**pos, "context": {"triggerKind": 1}}),
        ("textDocument/completion", pos),
        ("textDocument/codeLens", {"textDocument": {"uri": uri}}),
        ("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": rng, "context": {"diagnostics": []}}),
        ("codeAction/resolve", {"title": "Explain", "data": {"action": "explain", "uri": uri, "line": 10}}),
        ("whence/attributionMatrix", pos),
        ("whence/tokenAttribution", pos),
        ("whence/status", {}),
        ("workspace/executeCommand", {"command": "whence.explainLine", "arguments": [{"uri": uri, "line": 10}]}),
        ("workspace/executeCommand", {"command": "whence.acceptCompletion", "arguments": ["no-such-completion"]}),
        ("workspace/executeCommand", {"command": "whence.explainContrast", "arguments": [{"uri": uri, "line": 10, "character": 4}]}),
        ("workspace/executeCommand", {"command": "whence.searchTrace", "arguments": [{"uri": uri, "line": 10}]}),
        ("workspace/executeCommand", {"command": "whence.showProvenance", "arguments": [{"recordId": "x"}]}),
    ]


ODD_VALUES = [None, True, False, -1, 0, 2**31, 2**64, -(2**63), 1.5, "", "0", "x" * 3000, "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
              "🐍" * 50, "\u202e\u0000\u200b", [], [1, "a"], {}, {"line": "a"}, {"uri": "file:///etc/passwd", "line": 1},
              "file:///etc/passwd", "file:///../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"]


def paths(value, prefix=()):
    """Every (path) into a JSON value, objects and arrays alike."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


NEAR_INTS = [-1, 0, 1, 7, 10, 11, 12, 2**31 - 1, 2**31, 2**53, 10**30]
NEAR_STRINGS = ["", "x", "whence.explainLine", "whence.acceptCompletion", "file:///etc/passwd", "file:///no/such/file.py",
                "untitled:Untitled-1", "file:///tmp/../etc/passwd", "file:///tmp/%2e%2e/etc/passwd", "🐍🐍", "a\u0000b"]


def near_value(value, rng: random.Random):
    """A value of the same JSON type as `value` that the contract may not expect there."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice(NEAR_INTS)
    if isinstance(value, str):
        return rng.choice(NEAR_STRINGS)
    return copy.deepcopy(rng.choice(ODD_VALUES))


def mutate(params, rng: random.Random):
    """params with one to three random edits: a field deleted, a value replaced by one of the
    same type or of another, a key added."""
    params = copy.deepcopy(params)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        all_paths = [p for p in paths(params) if p]
        if not all_paths:
            return rng.choice(ODD_VALUES)
        path = rng.choice(all_paths)
        parent = params
        for step in path[:-1]:
            parent = parent[step]
        action = rng.random()
        if action < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.6:
            parent[path[-1]] = near_value(parent[path[-1]], rng)
        elif action < 0.9:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "__proto__", "😀", ""])] = rng.choice(ODD_VALUES)
    return params


def assert_still_serving(server: RawServer) -> None:
    hover = server.call("textDocument/hover", position_params(server.uri))
    assert "result" in hover, hover
    inline = server.call("textDocument/inlineCompletion", {**position_params(server.uri, 10, 17), "context": {"triggerKind": 1}})
    assert inline["result"]["items"], inline


def send_and_check(server: RawServer, requests: list[tuple[str, object, bool]]) -> list[dict]:
    ids = [server.request(method, params, send_params=send) for method, params, send in requests]
    answers = server.wait_for(ids, timeout=120)
    internal = [(requests[ids.index(a["id"])], a["error"]) for a in answers if a.get("error", {}).get("code") == INTERNAL_ERROR]
    assert not internal, f"internal errors (a handler crashed on input it should have rejected): {internal[:3]}"
    assert not server.duplicates, f"answered twice: {server.duplicates[:3]}"
    return answers


def test_named_requests_from_the_report(server: RawServer):
    uri = server.uri
    pos = position_params(uri)
    cases = [
        ("textDocument/hover", None, False),
        ("textDocument/hover", {}, True),
        ("textDocument/hover", {"textDocument": {"uri": uri}}, True),
        ("textDocument/hover", position_params(uri, -1, 0), True),
        ("textDocument/hover", position_params(uri, 2**64, 0), True),
        ("textDocument/hover", position_params(uri, 0, 2**31), True),
        ("textDocument/hover", {"textDocument": None, "position": {"line": 0, "character": 0}}, True),
        ("textDocument/hover", [uri, 1, 2], True),
        ("textDocument/inlineCompletion", pos, True),
        ("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": None, "context": {"triggerKind": 1}}, True),
        ("textDocument/inlineCompletion", {**position_params(uri, -1, 0), "context": {"triggerKind": 1}}, True),
        ("workspace/executeCommand", {"arguments": []}, True),
        ("whence/attributionMatrix", None, False),
        ("whence/attributionMatrix", "a string", True),
        ("no/suchMethod", {}, True),
        ("codeAction/resolve", {"title": "Explain", "data": {"uri": uri}}, True),
        ("workspace/executeCommand", {"command": "whence.acceptCompletion", "arguments": [7]}, True),
        ("workspace/executeCommand", {"command": "whence.explainLine", "arguments": [{"uri": uri, "line": "3"}]}, True),
    ]
    answers = send_and_check(server, cases)
    by_method = [(c[0], a.get("error", {}).get("code")) for c, a in zip(cases, answers)]
    assert by_method[0] == ("textDocument/hover", -32602)  # params missing
    assert by_method[1] == ("textDocument/hover", -32602)
    assert by_method[7] == ("textDocument/hover", -32602)  # params as an array
    assert ("no/suchMethod", -32601) in by_method
    # envelopes that are not JSON-RPC 2.0 requests
    for envelope in [{"id": 9001, "method": "whence/status", "params": {}},
                     {"jsonrpc": "1.0", "id": 9002, "method": "whence/status", "params": {}},
                     {"jsonrpc": "2.0", "id": 9003, "method": 5, "params": {}},
                     {"jsonrpc": "2.0", "id": 9004, "method": "whence/status", "params": 5}]:
        server.send_json(envelope)
    answers = server.wait_for([9001, 9002, 9003, 9004])
    assert [a["error"]["code"] for a in answers] == [-32600, -32600, -32600, -32602]
    assert_still_serving(server)


FRAMING_CASES = {
    # name: (bytes sent, whether the server can tell the request's id)
    "content-length 5 short": lambda body: b"Content-Length: %d\r\n\r\n" % (len(body) - 5) + body,
    "content-length 5 long": lambda body: b"Content-Length: %d\r\n\r\n" % (len(body) + 5) + body,
    "content-length 0 then a body": lambda body: b"Content-Length: 0\r\n\r\n" + body,
    "content-length -5": lambda body: b"Content-Length: -5\r\n\r\n" + body,
    "content-length abc": lambda body: b"Content-Length: abc\r\n\r\n" + body,
    "content-length 10^12": lambda body: b"Content-Length: 1000000000000\r\n\r\n" + body,
    "invalid utf-8": lambda body: b"Content-Length: %d\r\n\r\n" % (len(body) + 2) + body[:-1] + b'\xff\xfe"',
    "NaN literal": lambda body: (lambda b: b"Content-Length: %d\r\n\r\n" % len(b) + b)(body.replace(b"{}", b'{"x": NaN}')),
    "nested 100k deep": lambda body: (lambda b: b"Content-Length: %d\r\n\r\n" % len(b) + b)(b"[" * 100_000 + b"]" * 100_000),
    "trailing garbage": lambda body: (lambda b: b"Content-Length: %d\r\n\r\n" % len(b) + b)(body + b"}}garbage"),
    "garbage between frames": lambda body: b"\x00\x01 hello\r\n\r\n",
    "headers never end": lambda body: b"Content-Length: 10\r\n" + body + b"\r\n",
}


@pytest.mark.parametrize("name", FRAMING_CASES)
def test_framing_errors_never_stop_serving(server: RawServer, name: str):
    broken_id = server.new_id()
    body = json.dumps({"jsonrpc": "2.0", "id": broken_id, "method": "whence/status", "params": {}}).encode()
    nulls_before = len(server.null_id_errors)
    server.send_bytes(FRAMING_CASES[name](body))
    # the next valid request is answered: the stream was recovered
    assert "result" in server.call("whence/status", {}, timeout=30)
    answered = broken_id in server.responses or len(server.wait_null_errors(nulls_before + 1, timeout=2)) > nulls_before
    assert answered or name == "garbage between frames", f"{name}: the broken frame got no error"


def test_lowercase_and_lf_only_headers_are_read(server: RawServer):
    msg_id = server.new_id()
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "whence/status", "params": {}}).encode()
    server.send_bytes(b"content-length: %d\n\n" % len(body) + body)
    assert "result" in server.wait_for([msg_id], timeout=30)[0]
    msg_id = server.new_id()
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "whence/status", "params": {}}).encode()
    server.send_bytes(b"CONTENT-LENGTH:%d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" % len(body) + body)
    assert "result" in server.wait_for([msg_id], timeout=30)[0]


def test_generated_requests(server: RawServer):
    rng = random.Random(SEED)
    valid = templates(server.uri)
    cases = []
    for _ in range(GENERATED_CASES):
        method, params = rng.choice(valid)
        roll = rng.random()
        if roll < 0.05:
            cases.append((method, None, False))  # no params at all
        elif roll < 0.1:
            cases.append((method, rng.choice(ODD_VALUES), True))  # params of the wrong kind
        else:
            cases.append((method, mutate(params, rng), True))
    for start in range(0, len(cases), BATCH):
        send_and_check(server, cases[start:start + BATCH])
        # notifications get no answer, but a bad one must not stop the server either
        server.notify("textDocument/didChange", mutate({"textDocument": {"uri": server.uri, "version": 2},
                                                        "contentChanges": [{"text": PY_SOURCE}]}, rng))
        server.notify("whence/completionShown", mutate({"completionId": "x"}, rng))
        assert_still_serving(server)
    assert server.process.poll() is None


def test_lifecycle_errors(tiny_model_dir, tmp_path):
    raw = RawServer(tmp_path)
    try:
        early = raw.call("textDocument/hover", position_params((tmp_path / "a.py").as_uri()))
        assert early["error"]["code"] == -32002
        assert "result" in raw.initialize(tmp_path, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 4})
        assert raw.wait_ready()["state"] == "ready"
        again = raw.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        assert again["error"]["code"] == -32600
        assert raw.call("whence/status", {})["result"]["state"] == "ready"  # the state was kept
        assert "result" in raw.call("shutdown", None)
        after = [raw.call("whence/status", {}), raw.call("textDocument/hover", position_params((tmp_path / "a.py").as_uri()))]
        assert [a["error"]["code"] for a in after] == [-32600, -32600]
        raw.notify("exit", None)
        assert raw.process.wait(30) == 0
    finally:
        raw.close()


def test_verbose_logs_every_model_job(tiny_model_dir, tmp_path):
    log_file = tmp_path / "server.log"
    raw = RawServer(tmp_path, "--verbose", "--log-file", str(log_file))
    try:
        raw.initialize(tmp_path, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 4})
        assert raw.wait_ready()["state"] == "ready"
        uri = (tmp_path / "a.py").as_uri()
        raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": PY_SOURCE}})
        answer = raw.call("textDocument/inlineCompletion", {**position_params(uri, 10, 17), "context": {"triggerKind": 1}})
        assert answer["result"]["items"]
        assert "result" in raw.call("shutdown", None)
        raw.notify("exit", None)
        raw.process.wait(30)
    finally:
        raw.close()
    text = log_file.read_text()
    assert "model job ModelWorker.load.job (load): waited" in text
    assert "model job InlineCompletionFeature._generate.generate (interactive): waited" in text and ", done" in text


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_typing_storm_with_cancels(server: RawServer):
    """300 keystrokes typed as fast as the pipe takes them, each followed by a completion
    request and a cancel of the one before (as VS Code does): every request is answered once,
    the last answer is for the last text, and memory stays flat."""
    uri = (server.root / "storm.py").as_uri()
    text = PY_SOURCE
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})
    line, character = 10, len(PY_SOURCE.split("\n")[10])
    typed = "    result = compute_total(values, scale=2) + offset\n" * 6
    before = rss_kb(server.process.pid)
    ids = []
    row = line
    for version, char in enumerate(typed[:300], start=2):
        at = {"line": row, "character": character}
        server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
            {"range": {"start": at, "end": at}, "text": char}]})
        if char == "\n":
            row, character = row + 1, 0
        else:
            character += 1
        if ids:
            server.notify("$/cancelRequest", {"id": ids[-1]})
        ids.append(server.request("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                  "position": {"line": row, "character": character}, "context": {"triggerKind": 2}}))
    answers = server.wait_for(ids, timeout=180)
    assert not server.duplicates
    assert all("result" in a or a["error"]["code"] in (-32800,) for a in answers), [a for a in answers if "error" in a][:3]
    last = answers[-1]["result"]["items"]
    fresh = server.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": {"line": row, "character": character},
                                                          "context": {"triggerKind": 1}})["result"]["items"]
    assert [i["insertText"] for i in last] == [i["insertText"] for i in fresh]  # no stale answer
    after = rss_kb(server.process.pid)
    assert after < before + 100_000, (before, after)  # kB: flat, not growing with keystrokes


@pytest.mark.parametrize("renders_status", [False, True])
def test_load_progress_only_for_clients_that_do_not_render_the_status(tiny_model_dir, tmp_path, renders_status):
    """Work-done progress for the model load, unless the client renders whence/status itself
    (the VS Code client says so): one whence item in its status bar, not two."""
    raw = RawServer(tmp_path)
    try:
        options = {"model": str(tiny_model_dir), "device": "cpu", **({"clientRendersStatus": True} if renders_status else {})}
        raw.initialize(tmp_path, options, capabilities={"window": {"workDoneProgress": True}})
        assert raw.wait_ready()["state"] == "ready"
        created = "window/workDoneProgress/create" in raw.server_requests
        assert created is not renders_status
    finally:
        raw.close()
