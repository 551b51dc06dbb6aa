"""End to end over stdio: the real server (`python -m whence_ls serve`) with the tiny model,
driven by pytest-lsp through every feature: inline completion and its fallback, acceptance,
hovers, diagnostics, code lenses, code actions, commands, the whence/* requests, records that
follow edits, and the provenance log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException

# no setting: the engine's default for the model, the best uncalibrated method for the tiny one
from whence_ls.engine.attribution import FALLBACK_METHOD as DEFAULT_METHOD

from test_lsp_support import (
    PY_SOURCE,
    SERVER,
    LanguageClient,
    accept_inline,
    change,
    execute,
    execute_settings,
    hover,
    inline,
    open_doc,
    request,
    start,
    wait_ready,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# in the tiny random model's output every token is improbable, so every share is filled
SHARE = 0.25


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    lsp_client.root = root
    # no index at this path: the code lens must say so and offer to build one
    lsp_client.initialize_result = await start(
        lsp_client, root,
        {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 8, "diagnosticsShare": SHARE,
         "traceIndex": str(root / "no-index-here")},
    )
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


def fresh(client: LanguageClient, name: str, text: str = PY_SOURCE) -> str:
    path = client.root / name
    path.write_text(text)
    uri = path.as_uri()
    open_doc(client, uri, text)
    return uri


async def test_initialize_advertises_every_feature_and_reports_loading(client: LanguageClient):
    caps = client.initialize_result.capabilities
    assert caps.inline_completion_provider
    assert caps.completion_provider is not None
    assert caps.hover_provider
    assert caps.code_lens_provider.resolve_provider is True
    assert caps.code_action_provider.resolve_provider is True
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert set(caps.execute_command_provider.commands) == {
        "whence.acceptCompletion", "whence.explainLine", "whence.regenerate", "whence.openTracedSource", "whence.buildIndex",
        "whence.explainContrast",
    }
    # work-done progress for the load: begin with the contract's title ... end
    reports = [r for values in client.progress_reports.values() for r in values]
    assert any(isinstance(r, types.WorkDoneProgressBegin) and r.title == "whence: loading model" for r in reports)
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    states = [s["state"] for s in client.statuses]
    assert states[0] == "loading" and states[-1] == "ready"
    # the load's progress moves through its stages rather than sitting at one value
    progress = sorted({s["progress"] for s in client.statuses if s["state"] == "loading" and s.get("progress")})
    assert len(progress) >= 4 and progress[-1] >= 90, progress


async def test_accept_gives_hover_diagnostics_lens_matrix_and_log(client: LanguageClient):
    uri = fresh(client, "accept.py")
    result, inserted, version = await accept_inline(client, uri, PY_SOURCE, 1, 10, 20)
    assert result["placed"] is True
    record_id = result["recordId"]
    # the status said what the model was doing: generating, then explaining the accepted rows
    activities = [s.get("activity") for s in client.statuses]
    assert "generating…" in activities
    assert any(s.get("lastCompletionMs", 0) > 0 for s in client.statuses)

    # diagnostics: least confident tokens, at most the share, pointing into the inserted text
    for _ in range(50):
        if client.diagnostics.get(uri):
            break
        await asyncio.sleep(0.05)
    diagnostics = client.diagnostics.get(uri, [])
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    tokens = matrix["tokens"]
    assert "".join(t["text"] for t in tokens) == inserted
    # the tiny random model is unsure of everything: each line with a readable token gets one
    readable_lines = {t["range"]["start"]["line"] for t in tokens if any(c.isalnum() for c in t["text"])}
    assert readable_lines, f"the test needs a completion with a word in it: {inserted!r}"
    assert len(diagnostics) == min(len(readable_lines), max(1, int(len(tokens) * SHARE)))
    for d in diagnostics:
        assert d.source == "whence" and d.code == "low-confidence"
        assert d.severity == types.DiagnosticSeverity.Information
        assert d.data["recordId"] == record_id
        assert d.range == _range(tokens[d.data["tokenIndex"]]["range"])
        assert "the model would have written" in d.message
    # one diagnostic per completion line at most, never on whitespace or punctuation alone
    lines = [d.range.start.line for d in diagnostics]
    assert len(lines) == len(set(lines))
    assert all(any(c.isalnum() for c in tokens[d.data["tokenIndex"]]["text"]) for d in diagnostics)

    # hover on a token: confidence, alternatives, and the context spans that drove it, linked
    token = tokens[1]
    start = token["range"]["start"]
    answer = await hover(client, uri, start["line"], start["character"])
    text = answer.contents.value
    assert f"p = **{token['prob']:.2f}**" in text and "runner-up" in text
    assert "█" in text and DEFAULT_METHOD.replace("_", " ") in text
    assert f"[line " in text and f"]({uri}#L" in text
    assert len(text.splitlines()) <= 8  # a hover a person reads at a glance
    assert answer.range == _range(token["range"])
    assert any("explaining " in (s.get("activity") or "") for s in client.statuses)

    # the matrix: every computed row's absolute values sum to 1 over the units
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "position": start})
    assert matrix["recordId"] == record_id and matrix["method"] == DEFAULT_METHOD and matrix["note"]
    assert matrix["units"] and all(set(u) == {"text", "range", "line", "label", "identifiers"} for u in matrix["units"])
    assert all(u["label"] == f"line {u['line'] + 1}" for u in matrix["units"])
    assert matrix["docs"].endswith("/docs/bench-attribution.md")
    page = await request(client, "whence/matrixHtml", {"textDocument": {"uri": uri}, "recordId": record_id})
    assert page["html"].startswith("<!DOCTYPE html>") and "What drove this completion: accept.py" in page["html"]
    assert all(f'data-token="{i}"' in page["html"] for i in range(len(matrix["tokens"])))
    # sources are the context's lines: code, never whitespace or punctuation alone
    assert all(u["text"].strip() == u["text"] and any(c.isalnum() for c in u["text"]) for u in matrix["units"])
    computed = [row for row in matrix["scores"] if row is not None]
    assert computed, "the hovered token's row at least is computed"
    for row in computed:
        assert len(row) == len(matrix["units"])
        assert abs(sum(abs(v) for v in row) - 1.0) < 1e-3

    # token attribution for tinting: the units with their (signed) scores
    tint = await request(client, "whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": start})
    assert tint["token"]["text"] == token["text"] and tint["method"] == DEFAULT_METHOD
    # only the strongest sources are tinted: those holding 60% of the weight, at most 5
    assert 1 <= len(tint["units"]) <= 5
    assert sum(abs(u["score"]) for u in tint["units"]) <= 1.0 + 1e-6

    # the hover's "why this and not the runner-up" link: contrastive sources, answered and shown
    assert "command:whence.explainContrast?" in text
    index = next(i for i, t in enumerate(tokens) if t["range"] == token["range"])
    contrast = await execute(client, "whence.explainContrast", {"recordId": record_id, "tokenIndex": index})
    assert contrast["token"] == token["text"] and contrast["runnerUp"] != token["text"]
    assert all(s["score"] > 0 and 0 <= s["line"] <= 10 for s in contrast["sources"])
    assert contrast["message"].startswith("whence: why ")
    with pytest.raises(JsonRpcException):
        await execute(client, "whence.explainContrast", {"recordId": "nope", "tokenIndex": 0})

    # code lens above it: no index configured -> says so and offers to build the default one
    lenses = await client.text_document_code_lens_async(types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri)))
    assert len(lenses) == 1 and lenses[0].range.start.line == 10
    lens = lenses[0] if lenses[0].command else await client.code_lens_resolve_async(lenses[0])
    assert lens.command.command == "whence.buildIndex" and "no trace index" in lens.command.title

    # the provenance log has it, and the CLI exports it (json and csv)
    exported = subprocess.run(
        [sys.executable, "-m", "whence_ls", "provenance", "export", "--workspace", str(client.root)],
        capture_output=True, text=True, check=True,
    )
    rows = {row["id"]: row for row in json.loads(exported.stdout)["accepted"]}
    assert rows[record_id]["text"] == inserted and rows[record_id]["uri"] == uri
    assert rows[record_id]["model"] and rows[record_id]["low_confidence"]
    csv_out = subprocess.run(
        [sys.executable, "-m", "whence_ls", "provenance", "export", "--format", "csv", "--workspace", str(client.root)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert csv_out.splitlines()[0].startswith("id,accepted_at_iso,uri") and record_id in csv_out


async def test_a_one_forward_method_answers_every_row_with_the_first_hover(client: LanguageClient):
    uri = fresh(client, "value_norm.py")
    await execute_settings(client, {"attributionMethod": "value_norm"})
    try:
        result, inserted, _ = await accept_inline(client, uri, PY_SOURCE, 1, 10, 39)
        matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": result["recordId"]})
        start = matrix["tokens"][-1]["range"]["start"]
        answer = await hover(client, uri, start["line"], start["character"])
        assert "█" in answer.contents.value and "value norm" in answer.contents.value
        # the forward that served the hovered row served every other row of the record too
        matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": result["recordId"]})
        assert matrix["method"] == "value_norm"
        assert all(row is not None for row in matrix["scores"])
        for row in matrix["scores"]:
            assert min(row) >= 0.0 and abs(sum(row) - 1.0) < 1e-3
    finally:
        await execute_settings(client, {"attributionMethod": None})


async def test_records_follow_edits_and_are_cut_when_deleted(client: LanguageClient):
    uri = fresh(client, "edits.py")
    result, inserted, version = await accept_inline(client, uri, PY_SOURCE, 1, 10, 20)
    record_id = result["recordId"]
    before = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})

    # two lines inserted above: everything moves down two lines, same columns
    version += 1
    change(client, uri, version, (0, 0), (0, 0), "# one\n# two\n")
    moved = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    for old, new in zip(before["tokens"], moved["tokens"]):
        assert new["range"]["start"]["line"] == old["range"]["start"]["line"] + 2
        assert new["range"]["start"]["character"] == old["range"]["start"]["character"]
    first = moved["tokens"][0]["range"]["start"]
    assert (await hover(client, uri, first["line"], first["character"])) is not None

    # typing over the flagged token marks it edited: no hover, no diagnostic on it any more
    for _ in range(50):
        flagged = [d.data["tokenIndex"] for d in client.diagnostics.get(uri, []) if d.data["recordId"] == record_id]
        if flagged:
            break
        await asyncio.sleep(0.05)
    assert flagged, "the tiny model's completion has a flagged token"
    k = flagged[0]
    version += 1
    line, col = first["line"], first["character"]
    at = moved["tokens"][k]["range"]["start"]
    change(client, uri, version, (at["line"], at["character"]), (at["line"], at["character"] + 1), "X")
    edited = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    assert edited["tokens"][k].get("edited") is True
    assert not any(d.data["tokenIndex"] == k for d in client.diagnostics.get(uri, []) if d.data["recordId"] == record_id)
    # a hover there is not that token's
    answer = await hover(client, uri, at["line"], at["character"])
    assert answer is None or f"token {k + 1} of" not in answer.contents.value

    # deleting the whole inserted text drops the record: no hover, lens or diagnostics left
    end_col = col + len(inserted)
    version += 1
    change(client, uri, version, (line, col), (line, end_col), "")
    assert await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id}) is None
    assert (await hover(client, uri, line, col)) is None
    lenses = await client.text_document_code_lens_async(types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri)))
    assert not lenses
    assert not [d for d in client.diagnostics.get(uri, []) if d.data["recordId"] == record_id]


async def test_completion_fallback_and_identical_requests_cached(client: LanguageClient):
    uri = fresh(client, "fallback.py")
    answer = await client.text_document_completion_async(
        types.CompletionParams(text_document=types.TextDocumentIdentifier(uri), position=types.Position(6, 28))
    )
    assert answer.is_incomplete is True and len(answer.items) == 1
    item = answer.items[0]
    assert item.command.command == "whence.acceptCompletion" and item.text_edit.new_text
    assert item.text_edit.range.start == types.Position(6, 28)

    hits = (await request(client, "whence/status", {}))["stats"]["completionCacheHits"]
    again = await inline(client, uri, 6, 28)  # same text, same position: served from the cache
    assert again.items[0].insert_text == item.text_edit.new_text
    assert again.items[0].command.arguments != item.command.arguments  # a new offer all the same
    assert (await request(client, "whence/status", {}))["stats"]["completionCacheHits"] == hits + 1


async def test_new_completion_supersedes_the_running_one(client: LanguageClient):
    uri = fresh(client, "supersede.py")
    # the longest generation the settings allow: on a quiet machine the tiny model finishes 200
    # tokens in under 0.3 s, and the first request must still be generating when the second comes
    await execute_settings(client, {"maxNewTokens": 1024})
    try:
        # (4, 29): where the tiny model's greedy output runs to the token cap (a run of one
        # character, which the in-line loop guard leaves alone: rulers repeat one character too)
        first = asyncio.ensure_future(inline(client, uri, 4, 29))
        await asyncio.sleep(0.1)  # the first is generating now
        second = asyncio.ensure_future(inline(client, uri, 5, 30))
        first_answer, second_answer = await asyncio.gather(first, second)
    finally:
        await execute_settings(client, {"maxNewTokens": 8})
    assert first_answer.items == ()  # cancelled within a token, answered empty
    assert second_answer.items and second_answer.items[0].insert_text


async def test_code_actions_regenerate_and_open(client: LanguageClient):
    uri = fresh(client, "actions.py")
    result, inserted, version = await accept_inline(client, uri, PY_SOURCE, 1, 10, 39)
    record_id = result["recordId"]
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(10, 0), types.Position(10, 0)),
            context=types.CodeActionContext(diagnostics=list(client.diagnostics.get(uri, []))),
        )
    )
    assert all(a.command is None and a.data for a in actions)  # commands come from codeAction/resolve
    by_title = {a.title: await client.code_action_resolve_async(a) for a in actions}
    assert {"whence: Explain this line", "whence: Show attribution matrix", "whence: Regenerate from the least confident token"} <= set(by_title)
    assert by_title["whence: Show attribution matrix"].command.command == "whence.showAttributionMatrix"
    assert list(by_title["whence: Show attribution matrix"].command.arguments) == [{"uri": uri, "recordId": record_id}]
    resolved = by_title["whence: Explain this line"]
    assert resolved.command.command == "whence.explainLine" and list(resolved.command.arguments) == [{"uri": uri, "line": 10}]
    # a line with no record still offers "Explain this line" only
    plain_actions = await client.text_document_code_action_async(
        types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri),
                               range=types.Range(types.Position(3, 0), types.Position(3, 0)),
                               context=types.CodeActionContext(diagnostics=[]))
    )
    assert [a.title for a in plain_actions] == ["whence: Explain this line"]
    # blank lines and comment-only lines get none: no lightbulb where there is nothing to explain
    commented = fresh(client, "commented.py", "import os\n\n# read the settings\nvalue = os.getcwd()\n")
    for line in (1, 2):
        none = await client.text_document_code_action_async(
            types.CodeActionParams(text_document=types.TextDocumentIdentifier(commented),
                                   range=types.Range(types.Position(line, 0), types.Position(line, 0)),
                                   context=types.CodeActionContext(diagnostics=[])))
        assert not none, (line, none)

    # regenerate: the server sends workspace/applyEdit that replaces the tail from the least
    # confident token with its runner-up plus a new continuation
    regenerate = by_title["whence: Regenerate from the least confident token"].command
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    answer = await execute(client, regenerate.command, *regenerate.arguments)
    assert client.applied_edits, "no workspace/applyEdit arrived"
    edit = client.applied_edits[-1].changes[uri][0]
    index = answer["replacedTokenIndex"]
    assert edit.range.start == _range(matrix["tokens"][index]["range"]).start
    assert edit.new_text.startswith(answer["to"]) and answer["to"] != answer["from"]
    # the editor applies it; the regenerated text becomes a record of its own
    version += 1
    change(client, uri, version, (edit.range.start.line, edit.range.start.character),
           (edit.range.end.line, edit.range.end.character), edit.new_text)
    new = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": answer["recordId"]})
    assert new is not None and "".join(t["text"] for t in new["tokens"]) == edit.new_text[len(answer["to"]):]

    # openTracedSource is a server-side no-op that hands the hit back; bad arguments are errors
    hit = {"path": "/x/y.py", "source_start_line": 1, "source_end_line": 2}
    assert await execute(client, "whence.openTracedSource", hit) == hit
    with pytest.raises(JsonRpcException, match="expected arguments"):
        await execute(client, "whence.regenerate", "not-an-object")


def _range(body: dict) -> types.Range:
    return types.Range(
        types.Position(body["start"]["line"], body["start"]["character"]),
        types.Position(body["end"]["line"], body["end"]["character"]),
    )


async def test_explain_line_gives_hovers_and_diagnostics_on_it(client: LanguageClient):
    uri = fresh(client, "explain.py")
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
    line_text = PY_SOURCE.split("\n")[6]
    assert answer["range"] == {"start": {"line": 6, "character": 0}, "end": {"line": 6, "character": len(line_text)}}
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": answer["recordId"]})
    assert "".join(t["text"] for t in matrix["tokens"]) == line_text
    column = line_text.index("handle")
    shown = await hover(client, uri, 6, column + 1)
    assert "explained line" in shown.contents.value and "p = **" in shown.contents.value
    # the person wrote this token: the hover compares it with what the model would have written
    # (its first choice), never calls another token the "runner-up" of one the model did not choose
    assert "runner-up" not in shown.contents.value
    assert "the model expected `" in shown.contents.value or "the model's own first choice" in shown.contents.value
    # the sources are lines above the explained one, linked; an uncalibrated model says so once
    links = [int(part.split(")")[0]) for part in shown.contents.value.split(f"{uri}#L")[1:]]
    assert links and all(1 <= n <= 6 for n in links)
    # the estimate says the uncalibrated model's rows are rough; a row verified by ablation before
    # the hover came (a busy machine) says that instead (both: tests/test_lsp_verified_rows.py)
    assert "not calibrated" in shown.contents.value or "verified by" in shown.contents.value
    for _ in range(50):
        if any(d.data["recordId"] == answer["recordId"] for d in client.diagnostics.get(uri, [])):
            break
        await asyncio.sleep(0.05)
    flagged = [d for d in client.diagnostics[uri] if d.data["recordId"] == answer["recordId"]]
    assert flagged and all(d.range.start.line == 6 for d in flagged)
    # the line's actions now include its matrix, but no regenerate (nothing was generated)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri), range=types.Range(types.Position(6, 0), types.Position(6, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert sorted(a.title for a in actions) == ["whence: Explain this line", "whence: Show attribution matrix"]
    # explaining it again replaces the explanation rather than stacking a second one
    again = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
    assert await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": answer["recordId"]}) is None
    assert (await request(client, "whence/status", {}))["stats"]["records"] >= 1 and again["recordId"] != answer["recordId"]
    with pytest.raises(JsonRpcException, match="blank"):
        await execute(client, "whence.explainLine", {"uri": uri, "line": 1})


async def test_code_lens_and_traced_source_with_an_index(client: LanguageClient):
    """The configured index path gets an index: lenses search it, and whence/tracedSource
    reads a hit's source back from it."""
    from pathlib import Path

    corpus = Path(__file__).parent / "data" / "trace" / "repo_mit"
    index_dir = client.root / "no-index-here"  # the traceIndex this server was started with
    built = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "whence_ls", "index", "build", "--corpus", str(corpus), "--out", str(index_dir)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr

    uri = fresh(client, "traced.py")
    refreshes = getattr(client, "code_lens_refreshes", 0)
    result, inserted, version = await accept_inline(client, uri, PY_SOURCE, 1, 10, 39)
    for _ in range(200):  # the search ends with a workspace/codeLens/refresh
        if getattr(client, "code_lens_refreshes", 0) > refreshes:
            break
        await asyncio.sleep(0.05)
    assert getattr(client, "code_lens_refreshes", 0) > refreshes
    lenses = await client.text_document_code_lens_async(types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri)))
    # random-model text traces to nothing in this corpus: no lens at all (a dead "no traced
    # source" label above every completion told the user nothing)
    assert not lenses

    # a hit as the index reports it (for code copied from the corpus) opens through the server
    source = corpus / "pkg" / "intervals.py"
    from whence_ls.trace import open_index

    hit = open_index(index_dir).search(source.read_text(), language="python")[0].to_json()
    opened = await request(client, "whence/tracedSource", {"hit": hit})
    assert opened["path"] == hit["path"] and opened["uri"] == Path(hit["path"]).as_uri()
    assert opened["content"] == source.read_text() and opened["license"] == "MIT"
    assert (opened["startLine"], opened["endLine"]) == (hit["source_start_line"], hit["source_end_line"])
    assert opened["languageId"] == "python"
    with pytest.raises(JsonRpcException, match="expected"):
        await request(client, "whence/tracedSource", {"hit": "nope"})
