"""The one order of a row's sources (engine/attribution/ranking.py): by size or by sign, ties in
document order, zeros never shown, a signed method's opponents left out of what a view shows."""

from whence_ls.engine.attribution.ranking import ranking, strongest_sources, top_sources

SCORES = [0.1, -0.5, 0.0, 0.3, -0.1]


def test_by_size_ranks_by_magnitude_and_keeps_document_order_on_ties():
    assert ranking(SCORES, by_size=True) == [1, 3, 0, 4, 2]
    assert top_sources(SCORES, by_size=True, k=3) == [(1, -0.5), (3, 0.3), (0, 0.1)]


def test_by_sign_ranks_supporters_first():
    assert ranking(SCORES, by_size=False) == [3, 0, 2, 4, 1]
    assert top_sources(SCORES, by_size=False) == [(3, 0.3), (0, 0.1), (4, -0.1), (1, -0.5)]


def test_a_view_shows_no_zero_and_for_a_signed_method_no_opponent():
    assert strongest_sources(SCORES, by_size=True) == [(1, -0.5), (3, 0.3), (0, 0.1), (4, -0.1)]
    assert strongest_sources(SCORES, by_size=False) == [(3, 0.3), (0, 0.1)]
    assert strongest_sources(SCORES, by_size=False, limit=1) == [(3, 0.3)]
