"""The per-session view (imap/selected.py) against a fake shared folder, as a hypothesis
state machine: whatever other sessions do, the untagged EXPUNGE/EXISTS this session is
told keep its idea of the mailbox exact, and expunges wait while they are held back."""

from __future__ import annotations

import re
from typing import NamedTuple

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mailsuite.imap.parser import SeqSet
from mailsuite.imap.selected import SelectedMailbox


class Rec(NamedTuple):
    uid: int
    flags: frozenset
    modseq: int
    recent: bool = False


class FakeFolder:
    def __init__(self) -> None:
        self.records: list[Rec] = []
        self.uidnext = 1
        self.highest_modseq = 1
        self.unclaimed: set[int] = set()

    def messages(self) -> list[Rec]:
        return self.records

    def claim_recent(self, readonly: bool = False) -> set[int]:
        if readonly:
            return set(self.unclaimed)
        out, self.unclaimed = self.unclaimed, set()
        return out

    def keywords(self) -> list[str]:
        return []

    def can_add_keywords(self) -> bool:
        return True

    def add(self, n: int) -> None:
        new = []
        for _ in range(n):
            uid = max(self.uidnext, self.records[-1].uid + 1 if self.records else 1)
            new.append(Rec(uid, frozenset(), self.highest_modseq))
            self.unclaimed.add(uid)
            self.uidnext = uid + 1
        self.records = self.records + new

    def assign_ahead(self) -> None:
        """A UID given out (UIDNEXT raised) whose message is not published yet."""
        self.uidnext += 1

    def expunge(self, picks: list[int]) -> None:
        if self.records:
            gone = {self.records[p % len(self.records)].uid for p in picks}
            self.records = [r for r in self.records if r.uid not in gone]

    def flag(self, pick: int) -> None:
        if self.records:
            i = pick % len(self.records)
            self.highest_modseq += 1
            r = self.records[i]
            self.records = self.records[:i] + [r._replace(flags=r.flags | {"\\Seen"}, modseq=self.highest_modseq)] + self.records[i + 1 :]


class ViewMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = FakeFolder()
        self.folder.add(3)
        self.view = SelectedMailbox(self.folder, readonly=False)
        self.view.open()
        self.client = list(self.view.uids)  # what the client believes: seq n -> UID

    def apply(self, out: bytes, expunges_allowed: bool) -> None:
        for line in out.split(b"\r\n"):
            m = re.match(rb"\* (\d+) EXPUNGE$", line)
            if m:
                assert expunges_allowed
                n = int(m.group(1))
                assert 1 <= n <= len(self.client)
                del self.client[n - 1]
            m = re.match(rb"\* (\d+) EXISTS$", line)
            if m:
                n = int(m.group(1))
                assert n >= len(self.client)
                # the client learns the new messages' UIDs by fetching them
                self.client += list(self.view.uids[len(self.client) : n])
            m = re.match(rb"\* (\d+) FETCH \(UID (\d+) ", line)
            if m:
                assert self.client[int(m.group(1)) - 1] == int(m.group(2))

    @rule(n=st.integers(1, 4))
    def delivery(self, n: int) -> None:
        self.folder.add(n)

    @rule()
    def uid_assigned_before_its_message_is_published(self) -> None:
        self.folder.assign_ahead()

    @rule(picks=st.lists(st.integers(0, 50), min_size=1, max_size=3))
    def other_session_expunges(self, picks: list[int]) -> None:
        self.folder.expunge(picks)

    @rule(pick=st.integers(0, 50))
    def other_session_flags(self, pick: int) -> None:
        self.folder.flag(pick)

    @rule(allowed=st.booleans())
    def command_ends(self, allowed: bool) -> None:
        out: list[bytes] = []
        self.view.report(out.append, expunges=allowed)
        self.apply(b"".join(out), allowed)
        if allowed:
            assert list(self.view.uids) == [r.uid for r in self.folder.records]

    @rule()
    def fetch_everything(self) -> None:
        if not self.view.exists:
            return
        seqs = self.view.seqs_for(SeqSet(((1, None),)), uid=False)
        for seq, rec in self.view.records_for(seqs):
            assert self.client[seq - 1] == rec.uid  # numbers never shift under the client

    @invariant()
    def client_and_view_agree(self) -> None:
        assert self.client == list(self.view.uids)
        assert list(self.view.uids) == sorted(set(self.view.uids))


ViewMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_view_state_machine = ViewMachine.TestCase


def test_an_arrival_and_an_expunge_that_keep_the_count_are_both_reported() -> None:
    """Issue 17 bug 1: one message arrives and another is expunged by other sessions,
    and UIDNEXT was seen raised before the arrival was published; the count is the same
    but the session must still hear EXPUNGE and EXISTS, not have its sequence numbers
    swapped silently."""
    folder = FakeFolder()
    folder.add(3)  # UIDs 1 2 3
    view = SelectedMailbox(folder, readonly=False)
    view.open()
    folder.assign_ahead()  # UID 4 given out, not yet published
    out: list[bytes] = []
    view.report(out.append)
    assert out == []
    folder.expunge([1])  # UID 2 goes...
    folder.uidnext -= 1
    folder.add(1)  # ...and UID 4 arrives: still three messages
    assert [r.uid for r in folder.records] == [1, 3, 4]
    view.report(out.append)
    assert b"".join(out) == b"* 2 EXPUNGE\r\n* 3 EXISTS\r\n* 3 RECENT\r\n"
    assert list(view.uids) == [1, 3, 4]
    # and a command that holds expunges back (FETCH) still hears the arrival
    folder.expunge([0])
    folder.add(1)
    out.clear()
    view.report(out.append, expunges=False)
    assert b"".join(out) == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    assert list(view.uids) == [1, 3, 4, 5]
    out.clear()
    view.report(out.append)
    assert b"".join(out) == b"* 1 EXPUNGE\r\n"
    assert list(view.uids) == [3, 4, 5]
