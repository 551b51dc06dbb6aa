"""`whence-ls bench lsp` on the tiny model: a quiet and a busy-core pass in one run, the shape of
what it reports, and no spinning process (nor server) left behind; the spinners' own safety
nets."""

from __future__ import annotations

import json
import time

import pytest

from whence_ls.bench.busy_cores import alive, parse_counts, spinning


def test_bench_lsp_runs_a_quiet_and_a_busy_pass_and_stops_its_spinners(tiny_model_dir, capsys):
    from whence_ls.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "lsp", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
              "--busy-cores", "0,1", "--jumps", "3", "--typing-asks", "2", "--char-ms", "0", "--pause-ms", "0",
              "--accepts", "1", "--completions", "2", "--hovers", "3", "--warm-wait", "0", "--long-document-lines", "0",
              "--row-timeout-s", "60", "--latency-budget-ms", "500", "--attribution-method", "value_norm", "--json"])
    assert exit_info.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["busy_cores"] == [0, 1]
    quiet, busy = result["passes"]
    assert (quiet["busy_cores"], busy["busy_cores"]) == (0, 1)
    assert quiet["spinners"]["count"] == 0 and busy["spinners"]["count"] == 1
    for one in result["passes"]:
        assert one["options"]["latencyBudgetMs"] == 500
        assert one["options"]["attributionMethod"] == "value_norm"  # the setting the server was started with
        ghost = one["ghost_text"]
        assert ghost["jump"]["n"] == 3 and ghost["typing"]["n"] == 2
        assert ghost["typing_after_enter"]["n"] == 1 and ghost["typing_in_a_line"]["n"] == 1
        for summary in (ghost["jump"], ghost["typing"]):
            assert set(summary["ms"]) == {"p50", "p95", "max"} and summary["ms"]["p50"] > 0
            assert set(summary["chars"]) == {"p50", "max"} and set(summary["lines"]) == {"p50", "max"}
        assert {s["kind"] for s in one["samples"]} == {"jump", "typing after Enter", "typing in a line"}
        assert all("answer" in s for s in one["samples"])  # the server's answer as it came
        offered = [s for s in one["samples"] if s["kind"] == "jump" and s["chars"]]
        assert offered, "the tiny model offered nothing at any jump cursor"
        assert "item.insertText" in one["answer_fields"]
        rows = one["accept_to_row_s"]
        assert rows["first_token"]["n"] == 1 and rows["first_token"]["missing"] == 0 and rows["first_token"]["p50"] >= 0
        # the older measures still run
        assert one["cold_row_ms"]["n"] == 1 and one["hover_ready_ms"]["n"] == 3
        assert one["completion_ms"]["n"] == 2
        assert one["server_cpu_s"] is not None and one["server_cpu_s"] > 0  # the server's own CPU seconds
    # the spinner spun, and nothing the bench started is left running
    assert busy["spinners"]["cpu_share_each"] is None or busy["spinners"]["cpu_share_each"] > 0
    for pid in busy["spinners"]["pids"] + [quiet["server_pid"], busy["server_pid"]]:
        assert not alive(pid), f"process {pid} is still running"


def test_bench_lsp_can_ask_at_every_keystroke_as_vs_code_does(tiny_model_dir, capsys):
    """`--ask-every-key`: an untimed ask at each typed character (hundreds of offers), and the
    jump offers accepted before that typing, while the server still holds them."""
    from whence_ls.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "lsp", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
              "--busy-cores", "0", "--ghost-only", "--jumps", "3", "--typing-asks", "2", "--char-ms", "0", "--pause-ms", "0",
              "--accepts", "1", "--row-timeout-s", "60", "--attribution-method", "value_norm", "--ask-every-key", "--json"])
    assert exit_info.value.code == 0
    one = json.loads(capsys.readouterr().out)["passes"][0]
    assert one["typing_pace"]["ask_every_key"] is True
    keystrokes = one["ghost_text"]["keystroke"]
    assert keystrokes["n"] > 10 and keystrokes["timed_out"] == 0
    accepted = one["accepts"][0]
    assert accepted["accept_error"] is None and one["accept_to_row_s"]["first_token"]["missing"] == 0


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_spinners_stop_on_an_error_or_ctrl_c(error):
    with pytest.raises(error):
        with spinning(2, 60) as spinners:
            assert len(spinners.pids) == 2 and all(alive(pid) for pid in spinners.pids)
            raise error()
    assert not any(alive(pid) for pid in spinners.pids)


def test_a_spinner_ends_by_itself_after_its_bound():
    with spinning(1, 0.3) as spinners:
        deadline = time.monotonic() + 10
        while alive(spinners.pids[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(spinners.pids[0])


def test_busy_core_counts():
    assert parse_counts("0,1") == [0, 1] and parse_counts(" 2 ") == [2]
    for bad in ("", "1,x", "-1"):
        with pytest.raises(ValueError):
            parse_counts(bad)


def test_hover_states_and_token_places():
    from whence_ls.bench.lsp_ghost import _position, _token_offsets, hover_state

    assert hover_state("**`x`** p = 0.5\n\n`████░░░░` [line 3](file:///a.py#L3) `x = 1`")[0] == "row"
    assert hover_state("**`x`** p = 0.5\n**copied from [line 3](file:///a.py#L3)**: `x`")[0] == "row"
    assert hover_state("**`x`** p = 0.5\n\n_attribution computing… (hover again in a moment)_") == (
        "pending", "attribution computing… (hover again in a moment)")
    assert hover_state(None)[0] == "pending"
    assert hover_state("**`x`**\n\n_attribution failed: boom_")[0] == "failed"
    text = "\n        total = 0\n        return total"
    offsets = _token_offsets(text)
    assert text[offsets["first"]] == "t" and offsets["middle"] >= len(text) // 2
    first = _position(10, 4, text, offsets["first"])
    assert (first.line, first.character) == (11, 8)
    assert (_position(10, 4, "abc", 2).line, _position(10, 4, "abc", 2).character) == (10, 6)
