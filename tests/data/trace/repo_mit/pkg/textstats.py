# SPDX-License-Identifier: Apache-2.0
"""Word statistics (a fixture: this file carries its own license header)."""

import collections
import re

WORD = re.compile(r"[A-Za-z']+")


def word_frequencies(text, minimum_length=3):
    counts = collections.Counter()
    for word in WORD.findall(text.lower()):
        if len(word) >= minimum_length:
            counts[word] += 1
    return counts


def top_words(text, how_many=10):
    frequencies = word_frequencies(text)
    ranked = sorted(frequencies.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:how_many]]


def sentence_lengths(text):
    sentences = [s.strip() for s in re.split(r"[.!?]+", text) if s.strip()]
    return [len(WORD.findall(sentence)) for sentence in sentences]
