"""banned_words.py: whole words, any case, however the text is split into pieces."""

from __future__ import annotations

import pytest
from inferd_guardrails.banned_words import BannedWords, HeldText

WORDS = BannedWords(["darn", "heck"], mask="****")


def stream(words: BannedWords, pieces: list[str]) -> str:
    """Redact piece by piece, the way the guardrail does; the last call is final."""
    held, out = HeldText(words), []
    for i, piece in enumerate([*pieces, ""]):
        released, head = held.push(piece, final=i == len(pieces))
        out.append(released[:head] + words.redact(released[head:])[0])
    return "".join(out)


def every_split(text: str) -> list[list[str]]:
    """The text as one piece, one character per piece, and cut in two at every point."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Oh darn, what the heck.", "Oh ****, what the ****."),
        ("DARN it", "**** it"),
        ("darning and darned and adarn", "darning and darned and adarn"),
        ("darn", "****"),
        ("heckdarn darnheck", "heckdarn darnheck"),
        ("x_darn darn_x darn1", "x_darn darn_x darn1"),
        ("dar n", "dar n"),
        ("", ""),
    ],
)
def test_the_same_answer_however_the_text_is_split(text, expected):
    assert WORDS.redact(text)[0] == expected
    for pieces in every_split(text):
        assert stream(WORDS, pieces) == expected, pieces


def test_text_that_cannot_start_a_banned_word_is_released_at_once():
    held = HeldText(WORDS)
    assert held.push("the cat ", final=False) == ("the cat ", 0)
    assert held.push("da", final=False) == ("", 0)  # could become "darn"
    assert held.push("y!", final=False) == ("day!", 0)


def test_a_word_already_released_is_not_matched_when_it_goes_on():
    # "blah" is out; "darn" continues it ("blahdarn"), so it is no banned word.
    held = HeldText(WORDS)
    assert held.push("blah", final=False) == ("blah", 0)
    released, head = held.push("darn ok", final=False)
    assert (released, head) == ("darn ok", 4)
    assert WORDS.search(released[head:]) is None


def test_only_single_words_can_be_banned():
    with pytest.raises(ValueError, match="'very bad' is not a single word"):
        BannedWords(["very bad"])


def test_no_words_matches_nothing():
    nothing = BannedWords([])
    assert nothing.redact("anything at all") == ("anything at all", 0)
    assert stream(nothing, list("any text")) == "any text"
