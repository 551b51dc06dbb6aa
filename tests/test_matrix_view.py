"""The matrix view (`report/matrix_view.py`): the grouping by completion line, the ranked source
columns, places, row truth and summary that the VS Code panel and both HTML exports render.
These were the panel's own TypeScript tests until the ranking moved to the server; the last test
runs the view on a real record of the tiny model, through `whence-ls explain --html`."""

from __future__ import annotations

import copy
import json
import os
from html import escape
from pathlib import Path

import pytest

from whence_ls.report.matrix_html import render_matrix_html
from whence_ls.report.matrix_view import code_label, matrix_view, unit_place


def _range(line: int, start: int, end: int) -> dict:
    return {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}


def sample() -> dict:
    return {
        "recordId": "rec-1",
        "method": "input_x_gradient",
        "note": "its top line is the one that matters most for 36% of tokens on unseen code",
        "tokens": [
            {"text": "return", "range": _range(3, 4, 10), "prob": 0.91},
            {"text": " a", "range": _range(3, 10, 12), "prob": 0.42},
            {"text": "\n", "range": _range(3, 12, 13), "prob": 0.77},
        ],
        "units": [
            {"text": "def", "range": _range(0, 0, 3), "label": "line 1"},
            {"text": "add", "range": _range(0, 4, 7), "label": "line 1"},
            {"text": '<b>&"x"', "range": _range(1, 0, 7), "label": "line 2"},
        ],
        "scores": [[0.5, -0.3, 0.2], [0.1, 0.8, -0.1], None],
    }


def test_a_completion_line_is_the_mean_of_its_computed_token_rows_over_sources_strongest_first():
    view = matrix_view(sample())
    assert len(view["lines"]) == 1
    line = view["lines"][0]
    assert (line["line"], line["text"], line["tokens"], line["pending"]) == (3, "return a", [0, 1, 2], 1)
    assert [round(v, 2) for v in line["scores"]] == [0.3, 0.25, 0.05]
    # weight: |0.5|+|0.1|, |-0.3|+|0.8|, |0.2|+|-0.1| -> add, def, <b>
    assert view["columns"] == [1, 0, 2]
    assert view["rowStates"] == ["scored", "scored", "computing"] and view["pending"] == 1


def test_sources_with_no_weight_are_no_column_and_ties_keep_the_earlier_source_first():
    matrix = sample()
    matrix["scores"] = [[0.5, 0.0, 0.5], None, None]
    assert matrix_view(matrix)["columns"] == [0, 2]
    matrix["scores"] = [None, None, None]
    view = matrix_view(matrix)
    assert view["columns"] == [] and view["lines"][0]["scores"] is None and view["pending"] == 3


def test_places_and_code_labels():
    assert code_label("    for item in items:   # a long comment that goes on and on\n  x") == "for item in items: # a long comment…"
    assert code_label("\n\n   \n  return x") == "return x"
    assert unit_place({"text": "def human_bytes(n):", "label": "pkg/utils.py:12", "path": "pkg/utils.py", "line": 11}) == "pkg/utils.py:12"
    assert unit_place({"text": "x", "range": _range(4, 0, 1)}) == "line 5"
    assert unit_place({"text": "x", "line": 9}) == "line 10"
    view = matrix_view(sample())
    assert view["places"] == ["line 1", "line 1", "line 2"] and view["codes"] == ["def", "add", '<b>&"x"']


def test_zero_width_and_edited_tokens_never_get_a_row_and_are_not_waited_for():
    matrix = sample()
    matrix["tokens"][2]["range"] = _range(3, 12, 12)
    view = matrix_view(matrix)
    assert view["rowStates"][2] == "zero-width" and view["pending"] == 0 and view["lines"][0]["pending"] == 0
    matrix["tokens"][2]["range"] = _range(3, 12, 13)
    matrix["tokens"][2]["edited"] = True
    assert matrix_view(matrix)["rowStates"][2] == "edited" and matrix_view(matrix)["pending"] == 0


def test_a_completion_line_is_labelled_as_it_reads_in_the_editor():
    # typed `tot`, the completion's first token is `total` (its text `al`), the line reads `total = 1`
    matrix = {**sample(), "tokens": [{"text": "al", "range": _range(3, 11, 13), "prob": 0.2},
                                     {"text": " = 1", "range": _range(3, 13, 17), "prob": 0.9}],
              "scores": [[0.5, -0.3, 0.2], None], "lines": [{"line": 3, "text": "        total = 1"}]}
    assert matrix_view(matrix)["lines"][0]["text"] == "total = 1"
    del matrix["lines"]  # an answer that does not say: the generated code
    assert matrix_view(matrix)["lines"][0]["text"] == "al = 1"


def test_a_line_of_only_whitespace_is_blank_unless_its_row_is_still_coming():
    matrix = sample()
    matrix["tokens"].append({"text": "    ", "range": _range(4, 0, 4), "prob": 0.5})
    matrix["scores"].append([0.2, 0.2, 0.6])
    lines = matrix_view(matrix)["lines"]
    assert [(entry["line"], entry["blank"]) for entry in lines] == [(3, False), (4, True)]
    matrix["scores"][3] = None
    assert matrix_view(matrix)["lines"][1]["blank"] is False


def test_each_row_says_whether_it_is_verified_or_estimated_and_how_far_the_estimate_was():
    matrix = sample()
    matrix["verified"] = [{"masks": 16, "mode": "tail 128", "sameTop": True, "rankInEstimate": 1, "estimateLds": 0.41},
                          {"masks": 16, "sameTop": False, "rankInEstimate": 3}, None]
    view = matrix_view(matrix)
    assert view["truth"][0] == {"mark": "✓", "sentence": "verified by 16 ablations; the estimate had the same top line "
                                                         "(estimate's LDS on these ablations 0.41)"}
    assert view["truth"][1] == {"mark": "✓", "sentence": "verified by 16 ablations; the estimate ranked this top line #3"}
    assert view["truth"][2] is None  # not computed: no mark at all
    assert view["summary"] == "every row verified by 16 ablations"


def test_estimated_rows_are_marked_with_verification_still_to_come_when_the_server_says_so():
    matrix = sample()
    matrix["verified"] = [None, {"masks": 16, "sameTop": True}, None]
    matrix["verifying"] = True
    view = matrix_view(matrix)
    assert view["truth"][0] == {"mark": "~", "sentence": "estimated; verifying by ablation…"}
    assert view["summary"] == "1 of 2 rows verified by 16 ablations, the rest estimated (verifying by ablation…)"
    matrix["verified"], matrix["verifying"] = [None, None, None], False
    assert matrix_view(matrix)["summary"] == "rows estimated"
    # an answer without `verified` does not say: no marks, no summary
    older = matrix_view(sample())
    assert older["truth"] == [None, None, None] and older["summary"] == ""


def test_the_exported_page_shows_the_views_columns_and_lines_and_ranks_nothing_itself():
    matrix = sample()
    view = matrix_view(matrix)
    # a view that disagrees with the scores shows that it is the view, not a ranking made here,
    # that the page renders
    view["columns"] = [2, 0]
    view["places"] = ["first place", "second place", "third place"]
    view["lines"][0]["text"] = "the line as the view names it"
    page = render_matrix_html({**matrix, "view": view}, title="t.py")
    header = page.split("<thead>")[1].split("</thead>")[0]
    assert header.index("third place") < header.index("first place") and "second place" not in header
    assert "the line as the view names it" in page
    # pointing at a line lights the sources by the view's line row, not by a mean made in the page
    view["lines"][0]["scores"] = [0.9, 0.0, -0.1]
    page = render_matrix_html({**matrix, "view": view}, title="t.py")
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert data["lines"] == [[0.9, 0.0, -0.1]] and 'data-line="0"' in page
    with pytest.raises(KeyError):
        render_matrix_html(copy.deepcopy(matrix), title="t.py")  # no view, no page: it never ranks


def test_the_view_of_a_tiny_model_record_is_what_explain_html_renders(tiny_model_dir, tmp_path, capsys):
    from test_explain import explain_html

    html, _ = explain_html(tiny_model_dir, tmp_path)
    data = json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    rows = data["scores"]
    assert any(rows)
    # the table's columns are the sources by total |share| over the rows, strongest first
    weight = [sum(abs(row[u]) for row in rows if row) for u in range(len(data["units"]))]
    header = html.split("<thead>")[1].split("</thead>")[0]
    shown = header.count('<th class="col">')
    expected = sorted((u for u in range(len(weight)) if weight[u] > 0), key=lambda u: (-weight[u], u))[:shown]
    assert shown == min(20, len(expected)) and shown > 0
    cells = header.split('<th class="col"><div>')[1:]
    labels = [data["units"][u]["label"] for u in expected]
    assert len(cells) == len(labels) and all(cell.startswith(escape(label) + " ") for cell, label in zip(cells, labels)), (cells, labels)


# The panel's client tests (client-vscode/test/matrixHtml.test.ts) render answers as this server
# sends them: each case here with the view `matrix_view` makes of it. The test below keeps the
# file equal to what the server would send; WHENCE_WRITE_FIXTURES=1 rewrites it.
FIXTURES = Path(__file__).resolve().parents[1] / "client-vscode" / "test" / "fixtures" / "matrix-views.json"


def fixture_cases() -> dict[str, dict]:
    cases: dict[str, dict] = {"sample": sample()}
    cases["done"] = {**sample(), "scores": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    cases["none"] = {**sample(), "scores": [None, None, None]}
    cases["positive"] = {**sample(), "scores": [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], None]}
    units = [{"text": f"value_{k} = {k}", "range": _range(k, 0, 5), "label": f"line {k + 1}"} for k in range(30)]
    cases["thirty"] = {"recordId": "r", "method": "gradient_norm", "note": None, "units": units,
                       "tokens": [{"text": "x", "range": _range(40, 0, 1), "prob": 0.5}],
                       "scores": [[(k + 1) / 465 for k in range(30)]]}  # unit 29 strongest
    other = sample()
    other["units"][2] = {"text": "def human_bytes(n):", "label": "pkg/utils.py:12", "path": "pkg/utils.py",
                         "uri": "file:///w/pkg/utils.py", "line": 11}
    cases["otherFile"] = other
    edited = sample()
    edited["tokens"][1]["edited"] = True
    cases["editedToken"] = edited
    zero = sample()
    zero["tokens"][2]["range"] = _range(3, 12, 12)
    cases["zeroWidth"] = zero
    edited_unscored = sample()
    edited_unscored["tokens"][2]["edited"] = True
    cases["editedUnscored"] = edited_unscored
    cases["asRead"] = {**sample(), "tokens": [{"text": "al", "range": _range(3, 11, 13), "prob": 0.2},
                                              {"text": " = 1", "range": _range(3, 13, 17), "prob": 0.9}],
                       "scores": [[0.5, -0.3, 0.2], None], "lines": [{"line": 3, "text": "        total = 1"}]}
    cases["verified"] = {**sample(), "verified": [
        {"masks": 16, "mode": "tail 128", "sameTop": True, "rankInEstimate": 1, "estimateLds": 0.41},
        {"masks": 16, "sameTop": False, "rankInEstimate": 3}, None]}
    cases["verifying"] = {**sample(), "verified": [None, {"masks": 16, "sameTop": True}, None], "verifying": True}
    # the view says column 2 is strongest although the scores do not: the panel must follow the view
    disagreeing = sample()
    view = matrix_view(disagreeing)
    view["columns"] = [2, 1]
    cases["viewDecides"] = {**disagreeing, "view": view}
    return {name: case if "view" in case else {**case, "view": matrix_view(case)} for name, case in cases.items()}


def test_the_client_fixtures_are_the_views_this_server_sends():
    cases = fixture_cases()
    if os.environ.get("WHENCE_WRITE_FIXTURES") == "1":
        FIXTURES.parent.mkdir(exist_ok=True)
        body = ",\n".join(f"{json.dumps(name)}: {json.dumps(case, ensure_ascii=False)}" for name, case in cases.items())
        FIXTURES.write_text("{\n" + body + "\n}\n", encoding="utf-8")  # a case a line
    assert json.loads(FIXTURES.read_text(encoding="utf-8")) == json.loads(json.dumps(cases)), \
        f"{FIXTURES} is stale: rerun this test with WHENCE_WRITE_FIXTURES=1"
