"""Banned words in text that arrives piece by piece.

A model streams text in pieces that do not respect words: "dar" then "n" must still be
caught as "darn". HeldText releases text as soon as it cannot be the start of a banned
word and holds back only a trailing word that still could be ("dar" waits for its next
piece; "the " goes out at once), so redaction costs a delay only where a banned word
might be forming. Words are matched whole and case-insensitively: "Darn" is banned,
"darning" is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+")
_TRAILING_WORD = re.compile(r"\w+$")
_ENDS_IN_WORD = re.compile(r"\w$")


class BannedWords:
    def __init__(self, words: Iterable[str], mask: str = "****") -> None:
        self.words = sorted({word.lower() for word in words}, key=len, reverse=True)
        for word in self.words:
            if not _WORD.fullmatch(word):
                raise ValueError(f"banned word {word!r} is not a single word (letters, digits, _)")
        self.mask = mask
        alternatives = "|".join(map(re.escape, self.words)) or r"(?!)"  # (?!) matches nothing
        self._pattern = re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)

    def search(self, text: str) -> re.Match[str] | None:
        return self._pattern.search(text)

    def redact(self, text: str) -> tuple[str, int]:
        """`text` with every banned word masked, and how many there were."""
        return self._pattern.subn(self.mask, text)

    def could_start(self, fragment: str) -> bool:
        """Whether more text could turn `fragment` into a banned word (or it is one)."""
        fragment = fragment.lower()
        return any(word.startswith(fragment) for word in self.words)


class HeldText:
    """One generation's text: releases what is safe to check, holds back the rest."""

    def __init__(self, words: BannedWords) -> None:
        self._words = words
        self._held = ""
        self._in_word = False  # the released text ends inside a word

    def push(self, text: str, final: bool) -> tuple[str, int]:
        """(text to check now, length of its head that continues an earlier word).

        The head continues a word already released as harmless, so it cannot complete a
        banned word: checkers skip it. At `final`, everything held is released."""
        buffer = self._held + text
        cut = len(buffer)
        trailing = _TRAILING_WORD.search(buffer)
        continues = trailing is not None and trailing.start() == 0 and self._in_word
        if not final and trailing and not continues and self._words.could_start(trailing[0]):
            cut = trailing.start()
        released, self._held = buffer[:cut], buffer[cut:]
        lead = _WORD.match(released) if self._in_word else None
        if released:
            self._in_word = _ENDS_IN_WORD.search(released) is not None
        return released, lead.end() if lead else 0
