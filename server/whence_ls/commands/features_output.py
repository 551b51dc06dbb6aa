"""`--features` of `whence-ls complete` and `explain`: the sparse-autoencoder features of the
least confident tokens, as JSON (`--json`) and as text (split from `complete.py`)."""

from __future__ import annotations


def features_json(lm, record, text: str, *, share: float = 0.25) -> list[dict]:
    """What the model "saw" at the least confident tokens: their strongest SAE features, each with
    its sources (place, share, code), as `--features` prints them and `--json` carries them."""
    from whence_ls.engine.attribution.units import unit_map
    from whence_ls.engine.sae import load_for
    from whence_ls.errors import WhenceError
    from whence_ls.commands.complete import shown_tokens
    from whence_ls.sourcefile import line_col_of, line_starts, source_label

    sae_set, index = load_for(lm)
    if sae_set is None:
        raise WhenceError(f"no sparse autoencoders for {lm.name}: train them with `whence-ls model train-sae`")
    from whence_ls.engine.sae.features import token_features

    units = unit_map(record)
    starts = line_starts(text)
    indices = shown_tokens(record, share)
    shown = []
    for index_ in indices:
        token = record.tokens[index_]
        features = []
        for feature in token_features(lm, sae_set, index, record, index_, units):
            sources = []
            for source in feature["sources"]:
                unit = units.units[source["unit"]]
                # (no "below" here: this list has always named a suffix line by its number only)
                place = source_label(unit.line + 1 if unit.path is not None else line_col_of(text, unit.start, starts)[0], unit.path)
                sources.append({"place": place, "share": round(float(source["share"]), 4), "code": unit.text.splitlines()[0][:60]})
            example = feature.get("example")
            features.append({"layer": feature["layer"], "feature": feature["feature"], "activation": round(float(feature["activation"]), 4),
                             "label": feature["label"], "induction": bool(feature["induction"]), "sources": sources,
                             "example": {"path": example["path"], "line": example["line"], "code": example["code"][:70]} if example else None})
        shown.append({"token_index": index_, "text": token.text, "prob": round(token.prob, 4), "features": features})
    return shown


def print_features(lm, record, text: str, *, share: float = 0.25) -> None:
    """`features_json`, printed."""
    print("-- features (sparse autoencoders on attention outputs) of the least confident tokens")
    for token in features_json(lm, record, text, share=share):
        print(f"   {token['text']!r} p={token['prob']:.2f}")
        for feature in token["features"]:
            mark = " [induction]" if feature["induction"] else ""
            print(f"      L{feature['layer']}#{feature['feature']} {feature['activation']:.2f} {feature['label']}{mark}")
            if feature["example"]:
                print(f"          e.g. {feature['example']['path']}:{feature['example']['line']}  {feature['example']['code']}")
            for source in feature["sources"]:
                print(f"          from {source['place']:>10} {source['share']:4.0%}  {source['code']}")
