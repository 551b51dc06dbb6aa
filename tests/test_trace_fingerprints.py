"""Normalised token streams and winnowing: the guarantees the verbatim matching rests on."""

import random
import string

import numpy as np

from whence_ls.trace.tokens import normalise
from whence_ls.trace.winnow import WinnowParams, winnow

PARAMS = WinnowParams(k=20, w=21)


def test_exact_stream_ignores_layout_and_comments():
    original = "def f(a, b):\n    # add them\n    return a + b  # done\n"
    reformatted = "def f( a,b ):\n\n        return a+b\n"
    assert normalise(original, "python").exact.text == normalise(reformatted, "python").exact.text


def test_exact_stream_keeps_names_renamed_stream_does_not():
    one = normalise("def total(xs):\n    return sum(xs) + offset\n", "python")
    two = normalise("def amount(values):\n    return sum(values) + shift\n", "python")
    assert one.exact.text != two.exact.text
    assert one.renamed.text == two.renamed.text
    # builtins and attribute names are kept: renaming code does not rename the APIs it calls
    assert "sum" in one.renamed.text
    assert normalise("a.append(b)", "python").renamed.text == "v.append(v)"


def test_c_family_comments_and_strings():
    source = 'int f() { /* a\n comment */ return g("x // not a comment"); } // tail\n'
    text = normalise(source, "c").exact.text
    assert "comment*/" not in text and "tail" not in text
    assert '"x//notacomment"' in text


def test_line_map_follows_tokens():
    stream = normalise("a = 1\n\n# note\nb = 2\n", "python", first_line=10).exact
    assert stream.text == "a=1b=2"
    assert stream.lines.tolist() == [10, 10, 10, 13, 13, 13]


def test_docstring_with_line_continuation_is_one_string():
    source = 'def f():\n    """one \\\n    two"""\n    return 1\n'
    stream = normalise(source, "python").exact
    # the string ends where it should, so `return` is code on line 4
    assert stream.lines[stream.text.index("return")] == 4


def _random_code(rng, length):
    return "".join(rng.choice(string.ascii_letters + "()=+,.:") for _ in range(length))


def test_any_shared_run_of_guaranteed_length_shares_a_fingerprint():
    rng = random.Random(7)
    for _ in range(200):
        shared = _random_code(rng, PARAMS.guaranteed_length)
        a = _random_code(rng, rng.randint(0, 300)) + shared + _random_code(rng, rng.randint(0, 300))
        b = _random_code(rng, rng.randint(0, 300)) + shared + _random_code(rng, rng.randint(0, 300))
        common = np.intersect1d(winnow(a, PARAMS).hashes, winnow(b, PARAMS).hashes)
        assert common.size >= 1


def test_unrelated_texts_rarely_share_fingerprints():
    rng = random.Random(8)
    shared = 0
    for _ in range(100):
        a, b = _random_code(rng, 400), _random_code(rng, 400)
        shared += np.intersect1d(winnow(a, PARAMS).hashes, winnow(b, PARAMS).hashes).size
    assert shared == 0


def test_short_text_has_no_fingerprint_and_density_is_bounded():
    assert winnow("x" * (PARAMS.k - 1), PARAMS).hashes.size == 0
    text = _random_code(random.Random(9), 5000)
    prints = winnow(text, PARAMS)
    # at least one per window, and about 2/(w+1) per character for random text
    assert np.diff(prints.positions).max() <= PARAMS.w
    assert prints.hashes.size < 2.5 * len(text) / (PARAMS.w + 1)


def test_characters_of_a_multiline_string_keep_their_own_lines():
    source = 'def f():\n    """Line one\n    line two\n    line three"""\n    return 1\n'
    stream = normalise(source, "python", first_line=20).exact
    assert stream.lines[stream.text.index("linetwo")] == 22
    assert stream.lines[stream.text.index("linethree")] == 23
    assert stream.lines[stream.text.index("return")] == 24
