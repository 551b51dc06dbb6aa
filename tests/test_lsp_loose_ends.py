"""Loose ends a raw JSON-RPC client found (issue 23), over real stdio (raw_rpc.py):

- a notification's method sent with an id is a request, and a request is answered: an error
  that says it is a notification, not silence;
- `codeAction/resolve` with data the server did not make is the client's error (-32602), not a
  crash in the server (-32603, `KeyError: 'line'`);
- params the server rejects log one line each, not pygls' pages of tracebacks.
"""

from __future__ import annotations

import pytest

from raw_rpc import RawServer
from test_lsp_support import PY_SOURCE

INVALID_PARAMS = -32602
# JSON-RPC leaves the choice between these two for a request whose method is a notification's
NOT_A_REQUEST = (-32601, -32600)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("loose-ends")
    raw = RawServer(root, "--log-file", str(root / "server.log"))
    raw.root = root
    raw.log_file = root / "server.log"
    raw.uri = (root / "main.py").as_uri()
    assert "result" in raw.initialize(root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 4})
    assert raw.wait_ready()["state"] == "ready"
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": raw.uri, "languageId": "python", "version": 1, "text": PY_SOURCE}})
    yield raw
    raw.close()


def still_serving(server: RawServer) -> None:
    hover = server.call("textDocument/hover", {"textDocument": {"uri": server.uri}, "position": {"line": 10, "character": 10}})
    assert "result" in hover, hover
    assert server.process.poll() is None


def explain_actions(server: RawServer, uri: str, line: int = 10) -> list[str]:
    """The titles of the Explain actions on a line: there is one only where the server holds
    the document and the line has code."""
    at = {"line": line, "character": 0}
    answer = server.call("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": {"start": at, "end": at},
                                                     "context": {"diagnostics": []}})
    return [action["title"] for action in answer["result"] or [] if "Explain" in action["title"]]


def test_notification_methods_sent_with_an_id_get_an_error(server: RawServer):
    other = (server.root / "other.py").as_uri()
    sent = {
        "initialized": {},
        "textDocument/didOpen": {"textDocument": {"uri": other, "languageId": "python", "version": 1, "text": PY_SOURCE}},
        "textDocument/didChange": {"textDocument": {"uri": server.uri, "version": 2}, "contentChanges": [{"text": "x = 1\n"}]},
        "$/cancelRequest": {"id": 12345},
    }
    ids = {method: server.request(method, params) for method, params in sent.items()}
    answers = dict(zip(ids, server.wait_for(list(ids.values()), timeout=15)))
    for method, answer in answers.items():
        assert answer.get("error", {}).get("code") in NOT_A_REQUEST, (method, answer)
        assert "notification" in answer["error"]["message"], (method, answer)
    assert not server.duplicates
    # a request is not the notification: other.py was not opened, main.py not changed to "x = 1"
    assert explain_actions(server, other) == []
    assert explain_actions(server, server.uri) == ["whence: Explain this line"]
    still_serving(server)


def test_resolve_with_data_the_server_did_not_make_is_invalid_params(server: RawServer):
    uri = server.uri
    foreign = [
        {"action": "explain", "uri": uri},  # the report's case: KeyError: 'line'
        {"action": "explain", "uri": uri, "line": "3"},
        {"action": "explain", "uri": uri, "line": -1},
        {"action": "explain", "line": 3},
        {"action": "regenerate", "uri": uri},
        {"action": "matrix", "uri": uri, "recordId": 7},
        {"action": "open", "uri": uri},
        {"action": "launch", "uri": uri, "line": 3},
        {"uri": uri, "line": 3},
        5,
        "explain",
        [uri, 3],
    ]
    ids = [server.request("codeAction/resolve", {"title": "whence: Explain this line", "data": data}) for data in foreign]
    answers = server.wait_for(ids, timeout=30)
    codes = [(data, answer.get("error", {}).get("code")) for data, answer in zip(foreign, answers)]
    assert all(code == INVALID_PARAMS for _, code in codes), [c for c in codes if c[1] != INVALID_PARAMS]
    assert all("codeAction" in answer["error"]["message"] for answer in answers)
    # data the server made still resolves
    ours = server.call("codeAction/resolve", {"title": "whence: Explain this line",
                                              "data": {"action": "explain", "uri": uri, "line": 10}})
    assert ours["result"]["command"] == {"title": "Explain this line", "command": "whence.explainLine",
                                         "arguments": [{"uri": uri, "line": 10}]}
    still_serving(server)


def test_rejected_params_log_one_line_each(server: RawServer):
    uri = server.uri
    before = server.log_file.read_text().splitlines()
    rejected = [
        # params pygls cannot structure into the method's type
        ("textDocument/hover", {"textDocument": {"uri": uri}}),
        ("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0}}),
        ("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": None, "context": {"diagnostics": []}}),
        # params a handler rejects
        ("workspace/executeCommand", {"command": "whence.explainLine", "arguments": [{"uri": uri, "line": "3"}]}),
        ("codeAction/resolve", {"title": "x", "data": {"action": "explain", "uri": uri}}),
        ("whence/attributionMatrix", {"textDocument": {"uri": uri}}),
    ]
    ids = [server.request(method, params) for method, params in rejected]
    answers = server.wait_for(ids, timeout=30)
    assert all("error" in a for a in answers), answers
    still_serving(server)  # and a notification with bad params is dropped with one line too
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri}, "contentChanges": "all of it"})
    still_serving(server)
    new = server.log_file.read_text().splitlines()[len(before):]
    text = "\n".join(new)
    assert "Traceback" not in text and "Exception Group" not in text and "sub-exception" not in text, text
    for msg_id in ids:
        lines = [line for line in new if f"request {msg_id}:" in line]
        assert len(lines) == 1, (msg_id, new)
        assert f"answered {INVALID_PARAMS} to request {msg_id}:" in lines[0], lines
    assert len(new) == len(ids) + 1, new  # one line per rejected request, one for the notification
