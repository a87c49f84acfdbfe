"""A real client syncing with CONDSTORE/QRESYNC: imapclient scripted as an offline mail
client that keeps its state (UIDVALIDITY, HIGHESTMODSEQ, UID -> flags) between
connections, as Thunderbird or K-9 do.

Each resync asks only for what changed (``UID FETCH ... (CHANGEDSINCE n VANISHED)``,
``SEARCH MODSEQ``), and its copy must then equal the server's mailbox; local flag
changes go up with ``UNCHANGEDSINCE`` so another client's change is never overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import imapclient
import pytest

from tests.support.imap import PASSWORD, Accounts, login, message
from tests.support.server import Server



@dataclass
class OfflineClient:
    """The state an offline client keeps, and its sync steps."""

    server: Server
    user: str
    uidvalidity: int = 0
    highestmodseq: int = 0
    flags: dict[int, frozenset[bytes]] = field(default_factory=dict)
    modseqs: dict[int, int] = field(default_factory=dict)
    fetched: int = 0  # FETCH results received over the client's life (what a sync cost)

    def connect(self) -> imapclient.IMAPClient:
        c = imapclient.IMAPClient("127.0.0.1", port=self.server.ports["imap"], ssl=False)
        c.login(self.user, PASSWORD)
        assert b"QRESYNC" in c.capabilities() and b"CONDSTORE" in c.capabilities()
        assert c.enable("QRESYNC") == [b"QRESYNC"]
        return c

    def _take(self, fetched: dict[int, dict[bytes, object]]) -> None:
        self.fetched += len(fetched)
        for uid, data in fetched.items():
            self.flags[uid] = stored_flags(data[b"FLAGS"])  # type: ignore[arg-type]
            self.modseqs[uid] = data[b"MODSEQ"][0]  # type: ignore[index]

    def sync(self) -> None:
        c = self.connect()
        info = c.select_folder("INBOX")
        if info[b"UIDVALIDITY"] != self.uidvalidity:
            # First sync (or the server started over): everything.
            self.flags, self.modseqs = {}, {}
            uids = c.search("ALL")
            self._take(c.fetch(uids, ["FLAGS", "MODSEQ"]) if uids else {})
        else:
            known = sorted(self.flags)
            if known:
                changed = c.fetch(known, ["FLAGS"], modifiers=[f"CHANGEDSINCE {self.highestmodseq}", "VANISHED"])
                self._take(changed)
                # imapclient keeps responses it does not parse itself (VANISHED) with imaplib.
                for raw in c._imap.untagged_responses.pop("VANISHED", []):
                    text = raw.decode() if isinstance(raw, bytes) else raw
                    for uid in expand(text.replace("(EARLIER)", "").strip()):
                        self.flags.pop(uid, None)
                        self.modseqs.pop(uid, None)
            top = max(self.flags, default=0)
            new = [u for u in c.search(["UID", f"{top + 1}:*"]) if u > top]
            if new:
                self._take(c.fetch(new, ["FLAGS", "MODSEQ"]))
        self.uidvalidity = info[b"UIDVALIDITY"]
        self.highestmodseq = info[b"HIGHESTMODSEQ"]
        c.logout()

    def push_flag(self, uid: int, flag: bytes) -> bool:
        """Add ``flag`` on the server unless the message changed since we saw it;
        False (and a refetch) when it had."""
        c = self.connect()
        c.select_folder("INBOX")
        # imapclient has no UNCHANGEDSINCE argument: send it on its imaplib connection
        # the way imapclient's own fetch() does, to read the tagged [MODIFIED] code.
        tag = c._imap._command("UID", "STORE", str(uid), f"(UNCHANGEDSINCE {self.modseqs[uid]})", "+FLAGS",
                               f"({flag.decode()})")
        typ, data = c._imap._command_complete("STORE", tag)
        assert typ == "OK", data
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
        conflict = "[MODIFIED" in text
        self._take(c.fetch([uid], ["FLAGS", "MODSEQ"]))
        c.logout()
        return not conflict


def stored_flags(flags: tuple[bytes, ...]) -> frozenset[bytes]:
    """The flags a client keeps (\\Recent belongs to one session, not to the message)."""
    return frozenset(f for f in flags if f != b"\\Recent")


def expand(uid_set: str) -> list[int]:
    out: list[int] = []
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def server_truth(server: Server, user: str) -> dict[int, frozenset[bytes]]:
    c = imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    c.login(user, PASSWORD)
    c.select_folder("INBOX", readonly=True)
    uids = c.search("ALL")
    out = {u: stored_flags(d[b"FLAGS"]) for u, d in c.fetch(uids, ["FLAGS"]).items()} if uids else {}
    c.logout()
    return out


@pytest.fixture
def user(accounts: Accounts) -> str:
    u = accounts.take()
    m = login(accounts.server, u)
    for n in range(1, 11):
        assert m.append("INBOX", None, None, message(n))[0] == "OK"
    m.logout()
    return u


def test_offline_client_resyncs_only_what_changed(imap_server: Server, user: str) -> None:
    client = OfflineClient(imap_server, user)
    client.sync()
    assert client.flags == server_truth(imap_server, user) and client.fetched == 10
    # Nothing changed: a resync fetches nothing.
    client.sync()
    assert client.fetched == 10
    # Another client (plain imaplib) works while ours is offline.
    other = login(imap_server, user)
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS", "(\\Seen)")
    other.uid("STORE", "7", "+FLAGS", "($Work)")
    other.uid("STORE", "4,9", "+FLAGS.SILENT", "(\\Deleted)")
    other.expunge()
    other.append("INBOX", "(\\Flagged)", None, message(11))
    other.logout()
    client.sync()
    assert client.flags == server_truth(imap_server, user)
    assert 4 not in client.flags and 9 not in client.flags and b"\\Flagged" in client.flags[11]
    assert client.fetched == 10 + 3  # UIDs 2 and 7 changed, 11 is new
    client.sync()
    assert client.fetched == 13


def test_offline_client_pushes_flags_without_overwriting_anothers_change(imap_server: Server, user: str) -> None:
    client = OfflineClient(imap_server, user)
    client.sync()
    assert client.push_flag(3, b"\\Seen")
    assert b"\\Seen" in client.flags[3]
    other = login(imap_server, user)
    other.select("INBOX")
    other.uid("STORE", "5", "+FLAGS", "(\\Deleted)")  # changed on the server meanwhile
    other.logout()
    assert not client.push_flag(5, b"\\Flagged")  # [MODIFIED 5]: not stored
    assert client.flags[5] == frozenset({b"\\Deleted"})  # refetched, the other change kept
    truth = server_truth(imap_server, user)
    assert truth[5] == frozenset({b"\\Deleted"}) and b"\\Seen" in truth[3]
    client.sync()
    assert client.flags == truth
    assert re.fullmatch(r"\d+", str(client.highestmodseq))
