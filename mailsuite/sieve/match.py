"""Comparators and match types (RFC 5228 2.7, RFC 4790, RFC 5231 relational).

``matches(values, keys, ...)`` answers a test over a list of values and a key list,
and with ``:matches`` also returns what each wildcard matched (RFC 5229 match
variables).  Wildcards are checked with a linear-time glob first: Python's regex
engine backtracks, and a pattern like ``*a*a*a*a*b`` on a long header would let one
message hold a worker thread for minutes; only a value already known to match is
handed to the regex, to collect the captures.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MAX_VALUE = 1024 * 1024  # longer values (a body) are cut before matching: the CPU bound


class ComparatorError(Exception):
    """A comparator asked for a match type it cannot do (RFC 4790: i;ascii-numeric has
    no substring match)."""


def casefold(s: str, comparator: str) -> str:
    if comparator == "i;ascii-casemap":
        return s.translate(_UPPER)
    return s


def numeric(s: str) -> float:
    """i;ascii-numeric (RFC 4790 9.1): the leading digits; none is positive infinity."""
    m = re.match(r"[0-9]+", s)
    return float(int(m.group())) if m else float("inf")


def _compare(a: str, b: str, comparator: str) -> int:
    if comparator == "i;ascii-numeric":
        x, y = numeric(a), numeric(b)
    else:
        x, y = casefold(a, comparator), casefold(b, comparator)  # type: ignore[assignment]
    return (x > y) - (x < y)


_RELATION = {
    "gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0,
    "le": lambda c: c <= 0, "eq": lambda c: c == 0, "ne": lambda c: c != 0,
}


def _glob_ok(value: str, pattern: list[tuple[str, str]]) -> bool:
    """Linear-time wildcard match (greedy with one backtrack point per star)."""
    vi = pi = 0
    star_pi, star_vi = -1, 0
    n, m = len(value), len(pattern)
    while vi < n:
        if pi < m and pattern[pi][0] == "?":
            vi += 1
            pi += 1
        elif pi < m and pattern[pi][0] == "c" and pattern[pi][1] == value[vi]:
            vi += 1
            pi += 1
        elif pi < m and pattern[pi][0] == "*":
            star_pi, star_vi = pi, vi
            pi += 1
        elif star_pi >= 0:
            star_vi += 1
            vi = star_vi
            pi = star_pi + 1
        else:
            return False
    while pi < m and pattern[pi][0] == "*":
        pi += 1
    return pi == m


@lru_cache(maxsize=512)
def _compile_glob(key: str) -> tuple[list[tuple[str, str]], re.Pattern[str]]:
    tokens: list[tuple[str, str]] = []
    regex = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            i += 1
            tokens.append(("c", key[i]))
            regex.append(re.escape(key[i]))
        elif c == "*":
            tokens.append(("*", ""))
            regex.append("(.*?)")
        elif c == "?":
            tokens.append(("?", ""))
            regex.append("(.)")
        else:
            tokens.append(("c", c))
            regex.append(re.escape(c))
        i += 1
    return tokens, re.compile("".join(regex), re.DOTALL)


def matches(values: list[str], keys: list[str], match: str = ":is", comparator: str = "i;ascii-casemap",
            relation: str | None = None, count: bool = False,
            folded_keys: list[str] | None = None) -> tuple[bool, list[str] | None]:
    """True if any value matches any key; with :matches, the captures of the first hit.
    ``folded_keys``: the keys already case-folded for the comparator (a cached script's)."""
    if count:
        n = str(len(values))
        return any(_RELATION[relation or "eq"](_compare(n, k, comparator)) for k in keys), None
    if not values:
        return False, None
    numeric_cmp = comparator == "i;ascii-numeric"
    if numeric_cmp and match in (":contains", ":matches"):
        raise ComparatorError(f"i;ascii-numeric cannot do {match}")
    if match == ":value":
        for value in values:
            for key in keys:
                if _RELATION[relation or "eq"](_compare(value[:MAX_VALUE], key, comparator)):
                    return True, None
        return False, None
    if numeric_cmp:  # :is
        wanted = {numeric(k) for k in keys}
        return any(numeric(v) in wanted for v in values), None
    # Case-fold each key and each value once, not once per pair.
    if folded_keys is None:
        folded_keys = [casefold(k, comparator) for k in keys]
    for value in values:
        v = casefold(value[:MAX_VALUE], comparator)
        if match == ":is":
            if v in folded_keys:
                return True, None
        elif match == ":contains":
            for k in folded_keys:
                if k in v:
                    return True, None
        else:  # :matches
            for k in folded_keys:
                tokens, rx = _compile_glob(k)
                if _glob_ok(v, tokens):
                    mo = rx.fullmatch(v)
                    if mo is None:  # cannot happen; keep the answer of the linear check
                        return True, [value]
                    # Captures are cut from the original value (case kept).
                    caps = [value[mo.start(i):mo.end(i)] for i in range(1, (mo.lastindex or 0) + 1)]
                    return True, [value] + caps
    return False, None
