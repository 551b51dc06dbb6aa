"""The method catalogue (engine/attribution/catalogue.py): read without torch, in step with the
implementations, and its notes quote the benchmark's figures file rather than typed numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from whence_ls.engine.attribution import catalogue


def test_the_catalogue_ranking_and_settings_import_no_torch():
    code = ("import sys\n"
            "from whence_ls.engine.attribution import catalogue, ranking, METHODS, METHOD_SHORT_NOTES\n"
            "from whence_ls.lsp.runtime.settings import ATTRIBUTION_CHOICES\n"
            "from whence_ls.commands.complete import resolve_attribution_method\n"
            "assert catalogue.METHOD_NOTES and METHOD_SHORT_NOTES['verified'] and ATTRIBUTION_CHOICES\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_catalogued_method_is_its_implementation():
    from whence_ls.engine.attribution import ALL_ROWS, make_method

    for entry in catalogue.METHOD_CATALOGUE:
        method = make_method(entry.name)
        assert method.name == entry.name
        assert (method.rows_per_batch == ALL_ROWS) == entry.one_pass == catalogue.one_pass(entry.name)
    assert catalogue.DEFAULT_METHOD in catalogue.METHODS and catalogue.FALLBACK_METHOD in catalogue.METHODS
    assert set(catalogue.METHOD_SHORT_NOTES) == {*catalogue.METHODS, "verified"}


def _figures_in(text: str) -> list[str]:
    """Every benchmark figure a note states: an LDS value and every percentage."""
    return re.findall(r"LDS (-?\d\.\d+)", text) + re.findall(r"(\d+)%", text)


def test_no_note_template_types_a_figure():
    for template in (*catalogue._NOTE_TEMPLATES.values(), *catalogue._SHORT_NOTE_TEMPLATES.values()):
        outside = re.sub(r"\{[^}]*\}", "", template)
        assert _figures_in(outside) == [], template


def test_the_notes_quote_the_benchmark_file():
    path = catalogue.files(catalogue.__package__).joinpath(catalogue.FIGURES_FILE)
    figures = json.loads(path.read_text(encoding="utf-8"))["methods"]
    stated = {f"{v['lds']:.2f}" for v in figures.values() if "lds" in v}
    stated |= {f"{100 * v[key]:.0f}" for v in figures.values() for key in ("top1", "top3", "copy") if key in v}
    for note in (*catalogue.METHOD_NOTES.values(), *catalogue.METHOD_SHORT_NOTES.values()):
        assert set(_figures_in(note)) <= stated, note
    assert "for 43% of tokens" in catalogue.METHOD_SHORT_NOTES["gradient_norm"]
    assert f"{100 * figures['gradient_norm']['top1']:.0f}%" == "43%"
    # a changed file changes the note: the figure is read, not typed
    changed = {**figures, "gradient_norm": {**figures["gradient_norm"], "top1": 0.5}}
    assert "for 50% of tokens" in catalogue.render_notes(catalogue._SHORT_NOTE_TEMPLATES, changed)["gradient_norm"]


def test_the_benchmark_writes_what_the_notes_read(tmp_path):
    from whence_ls.bench.attribution_figures import write_figures

    path = tmp_path / "figures.json"
    path.write_text(json.dumps({"methods": {"gradient_norm": {"lds": 0.1, "top1": 0.1, "matrix_fe": 61}}}))
    every = {"rows": 10, "lds": 0.4321, "top1": 0.55, "top3": 0.8, "ranked_rows": 10}
    summary = {"methods": {"gradient_norm": {"all": every, "copy_top_is_occurrence": None}},
               "targets": [{"package": "pkg", "version": "1"}], "forward_s": 1.0}
    write_figures(summary, path)
    written = json.loads(path.read_text())["methods"]["gradient_norm"]
    assert (written["lds"], written["top1"], written["top3"], written["matrix_fe"]) == (0.432, 0.55, 0.8, 61)
    notes = catalogue.render_notes(catalogue._SHORT_NOTE_TEMPLATES, {**catalogue.benchmark_figures(), "gradient_norm": written})
    assert "for 55% of tokens" in notes["gradient_norm"]
