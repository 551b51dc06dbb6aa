# SPDX-License-Identifier: MIT
# A tiny reference corpus for the end-to-end test: the trace index built from it lets the
# test reach a provenance code lens and open a traced source with a known license.
"""Helpers for reading text files."""


def read_stripped_lines(path):
    with open(path, 'r') as file:
        return [line.strip() for line in file]


def count_words(path):
    with open(path, 'r') as file:
        return sum(len(line.split()) for line in file)
