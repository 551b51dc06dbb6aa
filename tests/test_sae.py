"""Sparse autoencoders on the tiny model: training reads real attention outputs, measures
itself on held-out windows, stores safetensors + manifest that load back to the same codes, the
feature index labels features from their snippets, and a token's features say which context
positions their activation came from (an exact split of the pre-activation)."""

from __future__ import annotations

import json

import pytest
import torch

SOURCE = '''import os


def list_files(root):
    result = []
    for name in os.listdir(root):
        result.append(os.path.join(root, name))
    return result


def count(root):
    return len(list_files(root))
'''


@pytest.fixture(scope="module")
def trained(tiny_lm, tmp_path_factory):
    from whence_ls.engine.sae.train import train_saes

    sae_set, found, where, activations = train_saes(tiny_lm, [0, 1], tokens=6000, width_factor=2, k=4, steps=40, batch=256)
    return sae_set, found, where, activations


def test_training_measures_reconstruction_sparsity_and_loss(trained, tiny_lm):
    sae_set, found, where, activations = trained
    assert set(sae_set.saes) == {0, 1} and sae_set.k == 4
    d_in = activations[0].shape[1]
    assert sae_set.width == 2 * d_in
    for layer in ("0", "1"):
        metrics = sae_set.metrics[layer]
        assert metrics["l0"] <= 4 + 1e-9
        assert -1.0 < metrics["explained_variance"] <= 1.0
        assert 0.0 <= metrics["dead_share"] <= 1.0
        assert metrics["loss_clean"] > 0 and metrics["loss_spliced"] > 0 and metrics["held_out_tokens"] > 0
    # training moved the SAE: it reconstructs better than its initialisation
    from whence_ls.engine.sae.model import TopKSAE

    x = activations[0][:2000]
    fresh = TopKSAE(d_in, sae_set.width, 4)
    fresh.initialise(torch.Generator().manual_seed(0))
    with torch.no_grad():
        fresh.b_dec.copy_(x.mean(dim=0))
        trained_error = ((sae_set.saes[0](x)[0] - x) ** 2).sum()
        fresh_error = ((fresh(x)[0] - x) ** 2).sum()
    assert trained_error < fresh_error


def test_saved_set_loads_back_and_a_broken_one_says_so(trained, tmp_path):
    from whence_ls.engine.sae.model import load_sae_set, save_sae_set
    from whence_ls.errors import WhenceError

    sae_set, _, _, activations = trained
    save_sae_set(sae_set, tmp_path / "sae")
    manifest = json.loads((tmp_path / "sae" / "manifest.json").read_text())
    assert manifest["layers"] == [0, 1] and manifest["kind"] == "topk" and manifest["metrics"]["1"]["l0"] <= 4
    loaded = load_sae_set(tmp_path / "sae")
    x = activations[1][:64]
    assert torch.equal(loaded.saes[1].encode(x), sae_set.saes[1].encode(x))
    (tmp_path / "sae" / "layer1.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(WhenceError, match="train them again"):
        load_sae_set(tmp_path / "sae")


def test_feature_index_labels_from_snippets(trained, tiny_lm):
    from whence_ls.engine.sae.features import build_feature_index

    sae_set, found, where, activations = trained
    index = build_feature_index(tiny_lm, sae_set, found, where, activations, top=4)
    entries = index["layers"]["0"]
    assert len(entries) == sae_set.width
    live = [e for e in entries if e["examples"]]
    assert live, "some feature fires on the corpus"
    for entry in live[:20]:
        assert entry["label"].startswith("`")
        for example in entry["examples"]:
            assert example["path"].endswith(".py") and example["line"] >= 1
            assert example["token"].strip() == "" or example["token"].strip() in example["code"] or len(example["code"]) == 160
        activations_seen = [e["activation"] for e in entry["examples"]]
        assert activations_seen == sorted(activations_seen, reverse=True)


def test_token_features_split_their_activation_over_context_lines(trained, tiny_lm):
    """The split is exact: the position terms sum to the feature's pre-activation (minus the
    SAE's own biases), computed on the real forward."""
    from whence_ls.engine.attribution.attention_probe import attention_rows
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.units import unit_map
    from whence_ls.engine.explain import explain_line
    from whence_ls.engine.sae.activations import attention_layers, captured_z
    from whence_ls.engine.sae.features import _position_contributions, token_features

    sae_set = trained[0]
    record = explain_line(tiny_lm, SOURCE, SOURCE.count("\n") - 1, "python")
    units = unit_map(record, "python")
    features = token_features(tiny_lm, sae_set, None, record, 1, units)
    assert 1 <= len(features) <= 3
    assert all(f["layer"] in (0, 1) and f["activation"] > 0 for f in features)
    assert [f["activation"] for f in features] == sorted((f["activation"] for f in features), reverse=True)
    for feature in features:
        assert all(0 <= s["unit"] < len(units.units) and 0 < s["share"] <= 1 for s in feature["sources"])

    job = TeacherForced.of(tiny_lm, record)
    position = job.target_position(1)
    layer, index = features[0]["layer"], features[0]["feature"]
    module = attention_layers(tiny_lm.model)[layer]
    values = {}
    hook = module.v_proj.register_forward_hook(lambda _m, _a, out: values.__setitem__("v", out.detach()))
    try:
        with torch.inference_mode(), captured_z(tiny_lm.model, [layer]) as store:
            tiny_lm.model(input_ids=job.ids[: position + 1].unsqueeze(0), use_cache=False)
    finally:
        hook.remove()
    sae = sae_set.saes[layer]
    weights = attention_rows(job, [1]).weights[0]
    terms = _position_contributions(tiny_lm, module, sae, index, values["v"][0].float(), weights, layer, position)
    z = store[layer][0, position].float()
    expected = float(z @ sae.W_enc[:, index])
    assert float(terms.sum()) == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_train_sae_then_explain_features_from_the_cli(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`model train-sae` stores the set and its index under models/sae/; `explain --features`
    then names each shown token's features with a snippet and the lines they came from."""
    from whence_ls.cli import main

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_info:
        main(["model", "train-sae", "--model", str(tiny_model_dir), "--device", "cpu", "--layers", "1", "--tokens", "4000",
              "--steps", "20", "--batch", "128", "--width-factor", "2", "--k", "4"])
    assert exit_info.value.code == 0
    out = capsys.readouterr()
    assert "layer 1: explained variance" in out.out and "recovered" in out.out
    assert "training layer 1" in out.err  # the progress bar
    stored = list((tmp_path / "home" / "models" / "sae").iterdir())
    assert len(stored) == 1 and {p.name for p in stored[0].iterdir()} == {"manifest.json", "layer1.safetensors", "features.json.gz"}
    path = tmp_path / "files.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:12", "--model", str(tiny_model_dir), "--device", "cpu", "--features", "--color", "never"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "-- features (sparse autoencoders on attention outputs)" in out
    assert "L1#" in out and "e.g. " in out and " from " in out
    # --json carries the same features the text prints (it carried none)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:12", "--model", str(tiny_model_dir), "--device", "cpu", "--features", "--json"])
    assert exit_info.value.code == 0
    data = json.loads(capsys.readouterr().out)
    shown = data["features"]
    assert shown and all(0 <= t["token_index"] < len(data["tokens"]) for t in shown)
    features = [f for t in shown for f in t["features"]]
    assert features and all(f["layer"] == 1 and f["label"] and f["sources"] for f in features)
    assert any(f"L1#{f['feature']} " in out for f in features)  # the same features as the text above
    # and `complete --json --features` carries them too (issue 23: it carried none)
    with pytest.raises(SystemExit) as exit_info:
        main(["complete", f"{path}:12:32", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
              "--attribution", "none", "--features", "--json"])
    assert exit_info.value.code == 0
    data = json.loads(capsys.readouterr().out)
    tokens = data["tokens"]
    assert tokens, data
    # the tokens shown are the least confident quarter's (at least one) that are not blank
    order = sorted(range(len(tokens)), key=lambda i: tokens[i]["logprob"])[: max(1, len(tokens) // 4)]
    expected = [i for i in order if tokens[i]["text"].strip()]
    assert expected, tokens  # the position is chosen so that there is one
    shown = data["features"]
    assert [t["token_index"] for t in shown] == expected[: len(shown)] and shown, (shown, tokens)
    assert all(t["features"] and all(f["layer"] == 1 and f["label"] for f in t["features"]) for t in shown), shown


def test_explain_features_without_an_sae_says_how_to_get_one(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from whence_ls.cli import main

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path / "empty"))
    path = tmp_path / "files.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:12", "--model", str(tiny_model_dir), "--device", "cpu", "--features"])
    assert exit_info.value.code != 0
    assert "whence-ls model train-sae" in capsys.readouterr().err


def test_bench_sae_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from whence_ls.cli import main

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit):
        main(["model", "train-sae", "--model", str(tiny_model_dir), "--device", "cpu", "--layers", "0", "--tokens", "3000",
              "--steps", "10", "--batch", "128", "--width-factor", "2", "--k", "4"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "sae", "--model", str(tiny_model_dir), "--device", "cpu", "--tokens", "2000"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 0 |")]
    assert len(rows) == 1 and rows[0].count("|") == 11, out


def test_the_server_shows_features_in_the_hover_and_answers_feature_pages(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Over the real server: with an SAE set for the model, the hover on an explained token ends
    with `saw:` links to its features, and `whence/feature` gives the page of one of them with
    the lines this token's activation came from."""
    import re
    from urllib.parse import unquote

    from raw_rpc import RawServer
    from whence_ls.cli import main

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit):
        main(["model", "train-sae", "--model", str(tiny_model_dir), "--device", "cpu", "--layers", "1", "--tokens", "3000",
              "--steps", "10", "--batch", "128", "--width-factor", "2", "--k", "4"])
    capsys.readouterr()
    raw = RawServer(tmp_path)
    try:
        raw.initialize(tmp_path, {"model": str(tiny_model_dir), "device": "cpu"})
        assert raw.wait_ready()["state"] == "ready"
        path = tmp_path / "files.py"
        path.write_text(SOURCE)
        uri = path.as_uri()
        raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SOURCE}})
        answer = raw.call("workspace/executeCommand", {"command": "whence.explainLine", "arguments": [{"uri": uri, "line": 11}]})
        assert "result" in answer, answer
        column = SOURCE.split("\n")[11].index("len")
        text = ""
        for _ in range(20):  # the row (and then the features) may take a hover or two
            hover = raw.call("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 11, "character": column + 1}})
            text = (hover.get("result") or {}).get("contents", {}).get("value", "")
            if "saw: " in text:
                break
        assert "saw: " in text, text
        saw = next(line for line in text.splitlines() if "saw: " in line)
        # the labels say what each feature fires on in words, the symbols of the stored label
        # (⏎ for a newline, · for a space) never reach the reader; its top line is behind the link
        assert "⏎" not in saw and "·" not in saw.replace(" · ", " "), saw
        assert re.search(r'command:whence\.showFeature\?[^ )]+ "fires most on [^"]+:\d+: ', saw), saw
        link = re.search(r"command:whence\.showFeature\?([^) ]+)[ )]", text)
        arguments = json.loads(unquote(link.group(1)))[0]
        assert arguments["layer"] == 1 and arguments["recordId"]
        page = raw.call("whence/feature", arguments)["result"]
        assert page["layer"] == 1 and page["label"] and page["examples"]
        assert page["token"]["activation"] > 0
        assert all(s["label"].startswith("line ") and 0 < s["share"] <= 1 for s in page["sources"])
        bad = raw.call("whence/feature", {"layer": 1, "feature": 10**6})
        assert bad["error"]["code"] == -32602
    finally:
        raw.close()


def test_feature_labels_read_as_what_they_fire_on():
    """The stored compact label (issue 23: a hover read `# · ⏎······ after .\"\"\"`) is said in words."""
    from whence_ls.engine.sae.labels import readable_label

    assert readable_label('`⏎······` after `."""`') == 'a new line indented 6, after `."""` (a docstring\'s quotes)'
    assert readable_label("`#` / `⏎`") == "`#` (a comment) or a new line"
    assert readable_label("`pos` / `has` after `if`") == "`pos` or `has`, after the keyword `if`"
    assert readable_label("`x` after `····`") == "`x`, after 4 spaces of indentation"
    assert readable_label("`(` after `enumerate`") == "`(`, after `enumerate`"
    assert readable_label("(never fires)") == "(never fires)"
