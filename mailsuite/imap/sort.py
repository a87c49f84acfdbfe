"""IMAP SORT (RFC 5256 3) and SORT=DISPLAY (RFC 5957): the sort program and the order.

``SORT (criteria) charset search-criteria``: the messages are found by the ordinary
SEARCH code (:mod:`mailsuite.imap.search` through the session's ``_search_matches``,
so SORT accepts every search key SEARCH does, ``$`` included) and then ordered here by
the sort keys, each optionally REVERSEd, ties broken by the next key and finally by
sequence number (RFC 5256 3).  Strings compare under i;ascii-casemap
(:func:`mailsuite.imap.headerfacts.collate`); DATE is the sent date in UTC, or the
internal date when the Date: field is missing or unreadable (RFC 5256 2.2).  What the
keys need of each header comes from :mod:`mailsuite.imap.headerfacts` (cached).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer

from mailsuite.imap import headerfacts, search
from mailsuite.imap.errors import Bad, No
from mailsuite.imap.headerfacts import Facts, collate
from mailsuite.imap.parser import Command
from mailsuite.store.interface import MessageRecord

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"


def parse_criteria(atoms: list[str]) -> list[tuple[str, bool]]:
    """``["REVERSE", "DATE", "SUBJECT"]`` -> ``[("DATE", True), ("SUBJECT", False)]``;
    ValueError for an empty list, an unknown key or a REVERSE not before a key."""
    out: list[tuple[str, bool]] = []
    reverse = False
    for atom in atoms:
        word = atom.upper()
        if word == "REVERSE":
            if reverse:
                raise ValueError("REVERSE REVERSE")
            reverse = True
        elif word in SORT_KEYS:
            out.append((word, reverse))
            reverse = False
        else:
            raise ValueError(f"unknown sort key {atom[:20]}")
    if reverse:
        raise ValueError("REVERSE must precede a sort key")
    if not out:
        raise ValueError("empty sort criteria")
    return out


def sent_or_arrival(f: Facts, r: MessageRecord) -> float:
    """RFC 5256 2.2: the sent date, or the internal date when there is none."""
    return f.sent if f.sent is not None else r.internaldate


_KEYS: dict[str, Callable[[MessageRecord, Facts], Any]] = {
    "ARRIVAL": lambda r, f: r.internaldate,
    "DATE": lambda r, f: sent_or_arrival(f, r),
    "SIZE": lambda r, f: r.size,
    "FROM": lambda r, f: collate(f.from_),
    "TO": lambda r, f: collate(f.to),
    "CC": lambda r, f: collate(f.cc),
    "SUBJECT": lambda r, f: collate(f.subject),
    "DISPLAYFROM": lambda r, f: collate(f.display_from),
    "DISPLAYTO": lambda r, f: collate(f.display_to),
}


def order(items: list[tuple[int, MessageRecord, Facts]], criteria: list[tuple[str, bool]]) -> list[int]:
    """The numbers of ``items`` ((number, record, facts), in sequence order) sorted by
    ``criteria``.  Python's sort is stable also with ``reverse=True``, so sorting by the
    last key first and by the first key last gives the lexicographic order, with the
    sequence order left for full ties (RFC 5256: never reversed)."""
    items = list(items)
    for key, reverse in reversed(criteria):
        fn = _KEYS[key]
        items.sort(key=lambda t: fn(t[1], t[2]), reverse=reverse)
    return [n for n, _, _ in items]


def parse_charset(raw: bytes) -> str:
    """The CHARSET argument of SORT/THREAD: NO [BADCHARSET] unless UTF-8 or US-ASCII."""
    name = raw.decode("ascii", "replace").upper()
    if name not in CHARSETS:
        raise No("Unsupported charset", BADCHARSET)
    return name


def search_key(charset: str, tokens: list[Any]) -> search.Key:
    """The search program of SORT/THREAD, parsed by the SEARCH parser."""
    try:
        return search.parse(["CHARSET", charset] + list(tokens))
    except search.BadCharset:
        raise No("Unsupported charset", BADCHARSET) from None
    except search.SearchSyntaxError as e:
        raise Bad(f"search criteria: {e}") from None


class SortCommands:
    """SORT and UID SORT; mixed into IMAPServer next to MailboxCommands (whose
    ``_search_matches`` finds the messages)."""

    def do_SORT(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._sort(cmd, uid=False))

    def do_UID_SORT(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._sort(cmd, uid=True))

    async def _sort(self, cmd: Command, uid: bool) -> str:
        try:
            criteria = parse_criteria(cmd.args["criteria"])
        except ValueError as e:
            raise Bad(f"SORT: {e}") from None
        key = search_key(parse_charset(cmd.args["charset"]), cmd.args["tokens"])
        items = await matched_facts(self, key)
        # Sorting 100,000 keys takes a moment: in the worker pool, off the reactor.
        numbers = await self.selected.folder.workers.run(  # type: ignore[attr-defined]
            order, [(r.uid if uid else seq, r, f) for seq, r, f in items], criteria)
        self.write(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")  # type: ignore[attr-defined]
        return f"{'UID ' if uid else ''}SORT completed"


async def matched_facts(session: Any, key: search.Key) -> list[tuple[int, MessageRecord, Facts]]:
    """(sequence number, record, facts) of the selected messages ``key`` matches, in
    sequence order (SORT and THREAD both start from this)."""
    sel = session.selected
    seqs = await session._search_matches(key, False)
    pairs = sel.records_for(seqs)
    facts = await headerfacts.load(sel.folder, [r for _, r in pairs])
    return [(seq, r, facts[r.uid]) for seq, r in pairs if r.uid in facts]
