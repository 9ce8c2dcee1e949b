"""The kit's `-k`: which rows and cases a substring or a pytest-like expression selects."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NoReturn

_KEYWORDS = ("and", "or", "not")


def matcher(expression: str | None) -> Callable[[str], bool]:
    """What `-k` selects, as pytest's `-k` does: a name matches a case-insensitive substring, or an
    expression of them with `and`, `or`, `not` and parentheses. Text without those words is one
    substring, spaces and brackets included ("Adam weight_decay", "Conv2d[3x3 s2 p1]"). A malformed
    expression is a ValueError that says where."""
    if expression is None:
        return lambda name: True
    words = expression.split()
    if not any(word in _KEYWORDS for word in words):
        text = " ".join(words).lower()
        return lambda name: text in name.lower()
    return _Parser(expression).parse()


class _Parser:
    """A recursive-descent parser of pytest's -k grammar: or < and < not < ( ) and substrings."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        # a word runs through brackets, so a case id is one word: "Add[(2,3)+(3,)] or SGD"
        self.tokens = re.findall(r"[()]|(?:[^\s()\[]|\[[^\]]*\])+|\[", expression)
        if "[" in self.tokens:  # a bracket the pattern could not close
            self._error("a '[' has no ']'")
        self.at = 0

    def parse(self) -> Callable[[str], bool]:
        """The whole expression as a predicate on names; ValueError where it does not parse."""
        match = self._or()
        if self.at < len(self.tokens):
            self._error(f"unexpected {self.tokens[self.at]!r}")
        return match

    def _error(self, what: str) -> NoReturn:
        raise ValueError(f"-k {self.expression!r}: {what} (an expression joins substrings with and, or, "
                         "not and parentheses, as pytest's -k does)")

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _or(self) -> Callable[[str], bool]:
        return self._joined("or", self._and, any)

    def _and(self) -> Callable[[str], bool]:
        return self._joined("and", self._not, all)

    def _joined(self, word: str, operand: Callable[[], Callable[[str], bool]],
                combine: Callable[[Iterable[bool]], bool]) -> Callable[[str], bool]:
        """Operands joined by `word` (or, and), matched as `combine` (any, all) of theirs."""
        parts = [operand()]
        while self._peek() == word:
            self.at += 1
            parts.append(operand())
        return parts[0] if len(parts) == 1 else lambda name: combine(p(name) for p in parts)

    def _not(self) -> Callable[[str], bool]:
        token = self._peek()
        if token == "not":
            self.at += 1
            inner = self._not()
            return lambda name: not inner(name)
        if token == "(":
            self.at += 1
            inner = self._or()
            if self._peek() != ")":
                self._error("a '(' has no ')'")
            self.at += 1
            return inner
        return self._substring()

    def _substring(self) -> Callable[[str], bool]:
        words = []
        while self._peek() not in (None, "(", ")", *_KEYWORDS):
            words.append(self.tokens[self.at])
            self.at += 1
        if not words:
            found = self._peek()
            self._error(f"a name is missing before {found!r}" if found else "a name is missing at the end")
        text = " ".join(words).lower()
        return lambda name: text in name.lower()
