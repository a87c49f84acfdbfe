"""CONDSTORE and QRESYNC (RFC 7162) for one IMAP session.

The store gives every change a durable modseq shared by all processes
(:mod:`mailsuite.store.modseq`); this module turns that into the protocol:

* CONDSTORE is on for a session after ``ENABLE CONDSTORE`` (or QRESYNC), ``SELECT
  (CONDSTORE)``, or any CONDSTORE-enabling command (FETCH MODSEQ or CHANGEDSINCE, STORE
  UNCHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ; RFC 7162 3.1).  Then SELECT says
  ``[HIGHESTMODSEQ n]``, every FETCH caused by a flag change (STORE, or news of
  another session's change) carries ``MODSEQ (n)``, and EXPUNGE ends with
  ``[HIGHESTMODSEQ n]``.
* ``FETCH ... (CHANGEDSINCE n)`` answers only messages whose modseq is above n;
  ``STORE ... (UNCHANGEDSINCE n)`` changes only messages not changed since n, the others
  are named in ``[MODIFIED set]`` (tested and changed under the folder lock).
* ``SEARCH MODSEQ n`` matches messages with modseq >= n and adds ``(MODSEQ m)``.
* QRESYNC (only after ``ENABLE QRESYNC``): ``SELECT box (QRESYNC (uidvalidity modseq
  [known-uids [seq-match]]))`` answers ``* VANISHED (EARLIER)`` and the FETCH of each
  message changed since; expunges are told as ``* VANISHED uids``; ``UID FETCH ...
  (CHANGEDSINCE n VANISHED)``; ``[CLOSED]`` when a SELECT closes the previous mailbox.

VANISHED (EARLIER) is exact while the store remembers expunges back to the client's
modseq; before that it names every UID of the client's set that is not in the
mailbox now (RFC 7162 3.2.5.2 allows it), never one the session still shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from mailsuite.imap.errors import Bad
from mailsuite.imap.parser import FetchAtt, SeqSet, parse_seqset
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.imap.wire import flags_bytes, uid_set_text
from mailsuite.store.interface import MessageRecord

MAX_MODSEQ = 2**63 - 1


@dataclass(frozen=True)
class Qresync:
    """The QRESYNC parameter of SELECT/EXAMINE."""

    uidvalidity: int
    modseq: int
    known: SeqSet | None  # the UIDs the client knows (None: all of them)


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: Qresync | None = None


def _number(tok: Any, what: str, zero: bool = True) -> int:
    if not isinstance(tok, str) or not tok.isdigit() or not tok.isascii():
        raise Bad(f"{what} needs a number")
    n = int(tok)
    if n > MAX_MODSEQ or (n == 0 and not zero):
        raise Bad(f"{what} out of range")
    return n


def _uid_set(tok: Any, what: str) -> SeqSet:
    if not isinstance(tok, str):
        raise Bad(f"{what} needs a UID set")
    try:
        s = parse_seqset(tok)
    except Exception:
        raise Bad(f"{what} needs a UID set") from None
    if s.saved:
        raise Bad(f"{what} needs a UID set")
    return s


def parse_select_params(params: list[Any]) -> SelectParams:
    """``SELECT box (CONDSTORE)`` / ``(QRESYNC (...))``; other parameters are BAD."""
    condstore = False
    qresync = None
    i = 0
    while i < len(params):
        word = params[i].upper() if isinstance(params[i], str) else ""
        if word == "CONDSTORE":
            condstore = True
            i += 1
        elif word == "QRESYNC":
            if i + 1 >= len(params) or not isinstance(params[i + 1], list):
                raise Bad("QRESYNC needs (uidvalidity modseq [known-uids [seq-match]])")
            q = params[i + 1]
            if not 2 <= len(q) <= 4:
                raise Bad("QRESYNC needs (uidvalidity modseq [known-uids [seq-match]])")
            uidvalidity = _number(q[0], "QRESYNC UIDVALIDITY", zero=False)
            modseq = _number(q[1], "QRESYNC modseq", zero=False)
            known = None
            if len(q) >= 3:
                if isinstance(q[2], list):
                    if len(q) > 3:
                        raise Bad("QRESYNC: known UIDs come before the sequence match data")
                    _seq_match(q[2])
                else:
                    known = _uid_set(q[2], "QRESYNC known UIDs")
            if len(q) == 4:
                _seq_match(q[3])
            qresync = Qresync(uidvalidity, modseq, known)
            i += 2
        else:
            raise Bad("Unknown SELECT parameter")
    return SelectParams(condstore, qresync)


def _seq_match(tok: Any) -> None:
    """The (known sequence set, known UID set) pair: checked, then not used (a server
    MAY ignore it, RFC 7162 3.2.5.2; our fallback is the known UID set itself)."""
    if not isinstance(tok, list) or len(tok) != 2:
        raise Bad("QRESYNC sequence match data needs (sequence-set uid-set)")
    _uid_set(tok[0], "QRESYNC sequence match")
    _uid_set(tok[1], "QRESYNC sequence match")


def parse_fetch_modifiers(mods: list[Any]) -> tuple[int | None, bool]:
    """(CHANGEDSINCE value or None, VANISHED given)."""
    changedsince = None
    vanished = False
    i = 0
    while i < len(mods):
        word = mods[i].upper() if isinstance(mods[i], str) else ""
        if word == "CHANGEDSINCE" and i + 1 < len(mods):
            changedsince = _number(mods[i + 1], "CHANGEDSINCE")
            i += 2
        elif word == "VANISHED":
            vanished = True
            i += 1
        else:
            raise Bad("Unknown FETCH modifier")
    return changedsince, vanished


def parse_store_modifiers(mods: list[Any]) -> int | None:
    """The UNCHANGEDSINCE value or None."""
    if not mods:
        return None
    if len(mods) == 2 and isinstance(mods[0], str) and mods[0].upper() == "UNCHANGEDSINCE":
        return _number(mods[1], "UNCHANGEDSINCE")
    raise Bad("Unknown STORE modifier")


def vanished_line(uids: Iterable[int], earlier: bool = False) -> bytes:
    uids = sorted(set(uids))
    if not uids:
        return b""
    return b"* VANISHED " + (b"(EARLIER) " if earlier else b"") + uid_set_text(uids) + b"\r\n"


def in_set(s: SeqSet | None, largest: int) -> Any:
    """A membership test for UID set ``s`` (None: every UID)."""
    if s is None:
        return lambda u: True
    ranges = s.resolve(largest)
    return lambda u: any(lo <= u <= hi for lo, hi in ranges)


async def vanished_earlier(view: SelectedMailbox, modseq: int, known: SeqSet | None) -> bytes:
    """``* VANISHED (EARLIER)`` for the UIDs of ``known`` (None: all) expunged after
    ``modseq`` that the session does not show."""
    folder = view.folder
    largest = max(folder.uidnext - 1, 1)
    gone, complete = await folder.expunged_since(modseq)
    showing = set(view.uids)
    member = in_set(known, largest)
    if complete:
        uids = [u for u in gone if u not in showing and member(u)]
    else:
        # Expunges that old are forgotten: every UID the client may know of that is not
        # here now.  Walk the client's ranges, not 1..UIDNEXT, when it gave them.
        ranges = known.resolve(largest) if known is not None else [(1, largest)]
        uids = []
        for lo, hi in ranges:
            hi = min(hi, largest)
            if hi - lo > 10_000_000:
                lo = hi - 10_000_000  # a client's absurd range: bounded work
            uids.extend(u for u in range(lo, hi + 1) if u not in showing)
    return vanished_line(uids, earlier=True)


def changed_fetch_lines(pairs: Iterable[tuple[int, MessageRecord]], recent: set[int], since: int) -> list[bytes]:
    """``* n FETCH (UID u FLAGS (...) MODSEQ (m))`` for each message changed after ``since``."""
    return [b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (seq, r.uid, flags_bytes(r.flags, r.uid in recent), r.modseq)
            for seq, r in pairs if r.modseq > since]


def store_fetch_lines(pairs: list[tuple[int, MessageRecord]], recent: set[int], uid: bool, silent: bool,
                      changed: set[int]) -> list[bytes]:
    """The FETCH responses of a STORE with CONDSTORE on: MODSEQ in each, and even
    with .SILENT for the messages whose flags changed (RFC 7162 3.1.3)."""
    out = []
    for seq, r in pairs:
        if silent:
            if r.uid in changed:
                out.append(b"* %d FETCH (%sMODSEQ (%d))\r\n" % (seq, b"UID %d " % r.uid if uid else b"", r.modseq))
        else:
            out.append(b"* %d FETCH (%sFLAGS %s MODSEQ (%d))\r\n" % (
                seq, b"UID %d " % r.uid if uid else b"", flags_bytes(r.flags, r.uid in recent), r.modseq))
    return out


def with_modseq(atts: list[FetchAtt]) -> list[FetchAtt]:
    """CHANGEDSINCE implies the MODSEQ item (RFC 7162 3.1.4.1)."""
    if any(a.name == "MODSEQ" for a in atts):
        return atts
    return list(atts) + [FetchAtt("MODSEQ")]


class CondstoreCommands:
    """Mixed into IMAPServer: the session's CONDSTORE/QRESYNC state and the steps the
    commands in commands.py call."""

    condstore = False
    qresync = False
    selected: SelectedMailbox | None

    def enable_condstore(self, qresync: bool = False) -> None:
        self.condstore = True
        if qresync:
            self.qresync = True
        if self.selected is not None:
            self.selected.condstore = True
            self.selected.qresync = self.qresync

    def enable_words(self, caps: list[str]) -> list[bytes]:
        """ENABLE CONDSTORE / QRESYNC (RFC 5161: only what is newly on is ENABLED)."""
        out = []
        if "CONDSTORE" in caps and not self.condstore:
            out.append(b" CONDSTORE")
        if "QRESYNC" in caps and not self.qresync:
            out.append(b" QRESYNC")
        if "CONDSTORE" in caps or "QRESYNC" in caps:
            self.enable_condstore(qresync="QRESYNC" in caps)
        return out

    def select_params(self, cmd: Any) -> SelectParams:
        params = parse_select_params(cmd.args.get("params") or [])
        if params.qresync is not None and not self.qresync:
            raise Bad("SELECT QRESYNC needs ENABLE QRESYNC first")
        return params

    def select_lines(self, view: SelectedMailbox, params: SelectParams) -> bytes:
        """What SELECT adds: ``[HIGHESTMODSEQ n]`` once CONDSTORE is on."""
        if params.condstore or params.qresync is not None:
            self.enable_condstore()
        view.condstore, view.qresync = self.condstore, self.qresync
        if not self.condstore:
            return b""
        return b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % view.reported_modseq

    async def qresync_select(self, view: SelectedMailbox, q: Qresync) -> None:
        """VANISHED (EARLIER) and the FETCH of every message changed since the client's
        modseq, when its UIDVALIDITY is still ours (else it resyncs in full)."""
        folder = view.folder
        if q.uidvalidity != folder.uidvalidity:
            return
        line = await vanished_earlier(view, q.modseq, q.known)
        if self.selected is not view:
            return
        member = in_set(q.known, max(folder.uidnext - 1, 1))
        pairs = [(s, r) for s, r in view.records_for(list(range(1, view.exists + 1))) if member(r.uid)]
        lines = changed_fetch_lines(pairs, view.recent, q.modseq)
        self.write(line + b"".join(lines))  # type: ignore[attr-defined]

    async def fetch_modifiers(self, cmd: Any, uid: bool) -> tuple[list[FetchAtt], int | None]:
        """The FETCH attributes to send and the CHANGEDSINCE value; writes ``VANISHED
        (EARLIER)`` first for ``UID FETCH ... (CHANGEDSINCE n VANISHED)``."""
        atts = cmd.args["atts"]
        changedsince, vanished = parse_fetch_modifiers(cmd.args.get("modifiers") or [])
        if vanished and not (uid and self.qresync and changedsince is not None):
            raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
        if changedsince is not None:
            atts = with_modseq(atts)
        if changedsince is not None or any(a.name == "MODSEQ" for a in atts):
            self.enable_condstore()
        if vanished and self.selected is not None:
            s: SeqSet = cmd.args["set"]
            if not s.saved:
                self.write(await vanished_earlier(self.selected, changedsince, s))  # type: ignore[arg-type, attr-defined]
        return atts, changedsince

    def store_modifier(self, cmd: Any) -> int | None:
        unchangedsince = parse_store_modifiers(cmd.args.get("modifiers") or [])
        if unchangedsince is not None:
            self.enable_condstore()
        return unchangedsince

    def modified_code(self, modified: list[int], uid: bool) -> str:
        """``[MODIFIED set] `` for the messages a conditional STORE left alone."""
        if not modified:
            return ""
        sel = self.selected
        if not uid and sel is not None:
            modified = [s for s in (sel.seq_of_uid(u) for u in modified) if s is not None]
        return f"[MODIFIED {uid_set_text(sorted(modified)).decode()}] "

    def search_modseq(self, found: list[int], uid: bool) -> int | None:
        """The highest modseq of the messages a SEARCH with MODSEQ found."""
        sel = self.selected
        if sel is None or not found:
            return None
        folder = sel.folder
        best = 0
        for n in found:
            u = n if uid else (sel.uids[n - 1] if n <= len(sel.uids) else 0)
            r = folder.get(u)
            if r is not None and r.modseq > best:
                best = r.modseq
        return best or None

    def expunge_code(self) -> str:
        sel = self.selected
        if not self.condstore or sel is None:
            return ""
        return f"[HIGHESTMODSEQ {sel.folder.highest_modseq}] "
