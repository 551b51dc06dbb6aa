"""License of a corpus file: SPDX header, nearest LICENSE file, or NOASSERTION."""

from pathlib import Path

from whence_ls.trace.corpus import Corpus, SkipCounts, read_corpus_file, stdlib_corpus
from whence_ls.trace.licenses import NOASSERTION, identify_license_text, spdx_from_header

FIXTURES = Path(__file__).parent / "data" / "trace" / "repo_mit"


def test_spdx_header_wins():
    assert spdx_from_header(b"// SPDX-License-Identifier: BSD-3-Clause\nint x;") == "BSD-3-Clause"
    assert spdx_from_header(b"/* SPDX-License-Identifier: GPL-2.0-or-later */") == "GPL-2.0-or-later"
    assert spdx_from_header(b"no header here") is None


def test_license_texts_are_recognised():
    assert identify_license_text((FIXTURES / "LICENSE").read_text()) == "MIT"
    assert identify_license_text("Apache License\nVersion 2.0, January 2004") == "Apache-2.0"
    assert identify_license_text("All rights reserved. Ask us.") == NOASSERTION


def test_files_get_header_then_repository_license(tmp_path):
    corpus = Corpus(root=str(FIXTURES))
    skipped = SkipCounts()
    assert read_corpus_file(str(FIXTURES / "pkg/textstats.py"), corpus, skipped).license == "Apache-2.0"
    assert read_corpus_file(str(FIXTURES / "pkg/retry.py"), corpus, skipped).license == "MIT"
    assert read_corpus_file(str(FIXTURES / "native/crc.c"), corpus, skipped).license == "MIT"
    lone = tmp_path / "lone.py"
    lone.write_text("def f():\n    return 1\n")
    assert read_corpus_file(str(lone), Corpus(root=str(tmp_path)), skipped).license == NOASSERTION


def test_standard_library_is_psf():
    corpus = stdlib_corpus()
    path = Path(corpus.root) / "json" / "decoder.py"
    corpus_file = read_corpus_file(str(path), corpus, SkipCounts())
    assert corpus_file.license == "PSF-2.0"
    assert corpus_file.repository == "https://github.com/python/cpython"
