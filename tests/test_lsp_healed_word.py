"""The word a healed completion's first token wrote: the typed part before the cursor belongs to
that token for hovers (and only while the typed text stays as it was)."""

from __future__ import annotations

from whence_ls.engine.records import ContextWindow, ScoredText, ScoredToken
from whence_ls.lsp.text.documents import Edit
from whence_ls.lsp.state.placement import healed_word
from whence_ls.lsp.state.records import Record

TYPED = "        account = entry['account']\n        tot"


def completion(texts: list[str], healed: int) -> ScoredText:
    tokens, position = [], 0
    for k, text in enumerate(texts):
        tokens.append(ScoredToken(token_id=k, text=text, start=position, end=position + len(text), logprob=-1.0, entropy=1.0, alternatives=[]))
        position += len(text)
    context = ContextWindow(text=TYPED, doc_start=0, token_ids=[1], token_offsets=[(0, 1)], truncated=False, language="python")
    return ScoredText(kind="completion", text="".join(texts), doc_start=len(TYPED), tokens=tokens, context=context,
                      model="m", device="cpu", timings={"healed_chars": healed})


def placed(texts: list[str], healed: int) -> tuple[Record, str]:
    scored = completion(texts, healed)
    document = TYPED + scored.text
    record = Record.place(scored, "file:///a.py", len(TYPED), 0)
    record.lead = healed_word(record, document)
    return record, document


def test_the_first_token_claims_the_typed_part_of_its_word():
    record, _ = placed(["al", " =", " 0"], healed=len(" tot"))
    assert record.lead == "tot"  # the space before it is not part of the word
    cursor = len(TYPED)
    assert record.hover_span(0) == (cursor - 3, cursor + 2)
    assert [record.token_at(cursor - k) for k in (3, 2, 1, 0)] == [0, 0, 0, 0]
    assert record.token_at(cursor - 4) is None  # the space before `tot`
    assert record.hover_span(1) == tuple(record.spans[1])


def test_no_claim_without_a_word_to_continue():
    # the first token starts something new (` =` after `total`), or the heal was indentation
    assert placed([" =", " 0"], healed=len(" tot"))[0].lead == ""
    assert placed(["return", " x"], healed=0)[0].lead == ""
    # the healed text ended on a token boundary: the token that wrote `tot` has no visible text,
    # and which token wrote it is not known here
    assert placed(["", "al", " ="], healed=len(" tot"))[0].lead == ""


def test_an_edit_to_the_typed_word_ends_the_claim_and_one_elsewhere_keeps_it():
    record, _ = placed(["al", " =", " 0"], healed=len(" tot"))
    cursor = len(TYPED)
    assert record.apply(Edit(0, 0, 1))  # a character inserted at the file's start: all moves
    assert record.lead == "tot" and record.hover_span(0) == (cursor + 1 - 3, cursor + 1 + 2)
    assert record.apply(Edit(record.end, record.end, 4))  # typing after the completion
    assert record.lead == "tot"
    assert record.apply(Edit(cursor + 1 - 2, cursor + 1 - 1, 1))  # `tot` -> `txt`
    assert record.lead == "" and record.token_at(cursor + 1 - 3) is None
    assert record.token_at(cursor + 1) == 0  # the token's own text still answers
