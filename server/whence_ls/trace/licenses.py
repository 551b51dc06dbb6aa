"""The license of a corpus file, as an SPDX id.

Order: an `SPDX-License-Identifier:` line near the top of the file; else the LICENSE/COPYING
file at its repository root, recognised by distinctive phrases of the common licenses; else
NOASSERTION (the SPDX word for "we do not know", never a guess).
"""

from __future__ import annotations

import functools
import os
import re

NOASSERTION = "NOASSERTION"

_SPDX_LINE = re.compile(rb"SPDX-License-Identifier:\s*([A-Za-z0-9.+\-() ]+?)\s*(?:\*/|-->|$)", re.M)
_HEADER_BYTES = 4096
_LICENSE_FILE_NAMES = (
    "LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "LICENCE", "LICENCE.txt",
    "LICENCE.md", "COPYING", "COPYING.txt", "COPYING.md", "LICENSE-MIT", "LICENSE-APACHE",
)

# (SPDX id, phrases that must all occur, lower-cased and whitespace-collapsed); most specific
# first, since e.g. the LGPL text quotes the GPL.
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the PSF license text discusses GPL compatibility, so it is tested before the GPLs
    ("PSF-2.0", ("python software foundation license",)),
    ("AGPL-3.0-only", ("gnu affero general public license", "version 3")),
    ("LGPL-3.0-only", ("gnu lesser general public license", "version 3")),
    ("LGPL-2.1-only", ("gnu lesser general public license", "version 2.1")),
    ("GPL-3.0-only", ("gnu general public license", "version 3")),
    ("GPL-2.0-only", ("gnu general public license", "version 2")),
    ("MPL-2.0", ("mozilla public license", "2.0")),
    ("Apache-2.0", ("apache license", "version 2.0")),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms",
                      "neither the name of")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("MIT", ("permission is hereby granted, free of charge",)),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("BSL-1.0", ("boost software license",)),
    ("Zlib", ("this software is provided 'as-is'", "altered source versions must be plainly marked")),
)


def spdx_from_header(head: bytes) -> str | None:
    match = _SPDX_LINE.search(head[:_HEADER_BYTES])
    return match.group(1).decode("ascii", "replace").strip() if match else None


def identify_license_text(text: str) -> str:
    flat = " ".join(text.lower().split())
    for spdx, phrases in _SIGNATURES:
        if all(p in flat for p in phrases):
            return spdx
    return NOASSERTION


@functools.lru_cache(maxsize=1024)
def repository_license(root: str) -> str:
    """The license named by the LICENSE/COPYING file directly in `root`."""
    for name in _LICENSE_FILE_NAMES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            try:
                with open(path, "rb") as fh:
                    data = fh.read(200_000)
            except OSError:
                continue
            found = spdx_from_header(data)
            return found or identify_license_text(data.decode("utf-8", "replace"))
    return NOASSERTION


def nearest_repository_license(directory: str, root: str) -> str:
    """The license file nearest above `directory`, up to `root` (a package in a monorepo may
    carry its own; otherwise the repository root's applies)."""
    root = os.path.abspath(root)
    directory = os.path.abspath(directory)
    while True:
        found = repository_license(directory)
        if found != NOASSERTION or directory == root or not directory.startswith(root):
            return found
        parent = os.path.dirname(directory)
        if parent == directory:
            return NOASSERTION
        directory = parent


def file_license(head: bytes, directory: str, repository_root: str, default: str | None = None) -> str:
    """`head` is the start of the file; `default` is the corpus-wide license when one is known
    (the standard library's PSF-2.0), used when no license file names one."""
    from_header = spdx_from_header(head)
    if from_header:
        return from_header
    from_repository = nearest_repository_license(directory, repository_root)
    if from_repository != NOASSERTION:
        return from_repository
    return default or NOASSERTION
