"""IMAP THREAD (RFC 5256 4): the ORDEREDSUBJECT and REFERENCES algorithms and the
``* THREAD`` response.

The messages come from the SEARCH code and their header values from
:mod:`mailsuite.imap.headerfacts`, as for SORT (:func:`mailsuite.imap.sort.matched_facts`).
Both algorithms work on :class:`Node` trees; a node without a number is a dummy
(a message referred to but not in the set, or one made to join threads of the same
subject).  Nothing here recurses over the tree: a reply chain thousands deep (or a
hostile one) must not exhaust Python's stack, so every walk keeps its own stack.

REFERENCES follows the RFC's steps 1-6 literally: the id_table of Message-IDs (the
first message with an id owns it; a message without a valid one, or a later
duplicate, gets a private id), parent/child links along each References list without
changing an existing parent and never making a loop, the message itself under its
last reference, pruning of dummies, the sort of the roots by sent date, grouping of
roots by base subject, and the final sort of every set of siblings.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer

from mailsuite.imap.errors import Bad
from mailsuite.imap.headerfacts import Facts, collate
from mailsuite.imap.parser import Command
from mailsuite.imap.sort import matched_facts, parse_charset, search_key, sent_or_arrival
from mailsuite.store.interface import MessageRecord

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


class Node:
    __slots__ = ("num", "seq", "sent", "subject", "reply", "parent", "children")

    def __init__(self, num: int | None = None, seq: int = 0, sent: float = 0.0, subject: bytes = b"",
                 reply: bool = False) -> None:
        self.num = num  # the number sent to the client (sequence number or UID); None: dummy
        self.seq = seq  # the tie-breaker of equal dates (RFC 5256 2.2)
        self.sent = sent
        self.subject = subject  # the base subject, collated
        self.reply = reply
        self.parent: Node | None = None
        self.children: list[Node] = []

    @property
    def dummy(self) -> bool:
        return self.num is None

    def fill(self, num: int, seq: int, sent: float, subject: bytes, reply: bool) -> None:
        self.num, self.seq, self.sent, self.subject, self.reply = num, seq, sent, subject, reply

    def adopt(self, child: "Node") -> None:
        child.parent = self
        self.children.append(child)

    def orphan(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def has_ancestor(self, other: "Node") -> bool:
        """Whether ``other`` is this node or one of its ancestors."""
        n: Node | None = self
        while n is not None:
            if n is other:
                return True
            n = n.parent
        return False

    def __repr__(self) -> str:  # for test failures
        return f"Node({self.num}, {[c for c in self.children]})"


Message = tuple[int, MessageRecord, Facts]  # (number, record, facts) in sequence order


def _date_key(n: Node) -> tuple[float, int]:
    """Sibling order (RFC 5256 2.2 and 4 step 6): sent date, then sequence number; a
    dummy sorts as its first child (its children are sorted first)."""
    while n.dummy and n.children:
        n = n.children[0]
    return (n.sent, n.seq)


def _node(num: int, seq: int, r: MessageRecord, f: Facts) -> Node:
    return Node(num, seq, sent_or_arrival(f, r), collate(f.subject), f.reply)


# --- ORDEREDSUBJECT (RFC 5256 4) -----------------------------------------------------


def ordered_subject(messages: list[tuple[int, int, MessageRecord, Facts]]) -> list[Node]:
    """Messages sorted by base subject then sent date; each run of one subject is a
    thread whose first message is the parent of all the others (siblings, by date);
    the threads are ordered by the date of their first message."""
    nodes = sorted((_node(num, seq, r, f) for num, seq, r, f in messages), key=lambda n: (n.subject, n.sent, n.seq))
    roots: list[Node] = []
    for n in nodes:
        if roots and roots[-1].subject == n.subject:
            roots[-1].adopt(n)
        else:
            roots.append(n)
    roots.sort(key=_date_key)
    return roots


# --- REFERENCES (RFC 5256 4) -----------------------------------------------------------


def references(messages: list[tuple[int, int, MessageRecord, Facts]]) -> list[Node]:
    id_table: dict[str, Node] = {}
    nodes: list[Node] = []  # every node made, dummies included, in order of creation

    def lookup(msgid: str) -> Node:
        node = id_table.get(msgid)
        if node is None:
            node = id_table[msgid] = Node()  # a dummy until the message turns up
            nodes.append(node)
        return node

    # (1) link by Message-ID and references
    for num, seq, r, f in messages:
        node = id_table.get(f.message_id) if f.message_id else None
        if node is not None and node.dummy:
            node.fill(num, seq, sent_or_arrival(f, r), collate(f.subject), f.reply)
        else:
            # No valid id, or a duplicate of an earlier message's: a private id.
            node = _node(num, seq, r, f)
            nodes.append(node)
            if f.message_id and f.message_id not in id_table:
                id_table[f.message_id] = node
        # (1A) each reference the parent of the next; an existing parent stays, and
        # no link may make a loop (A under B when B is already under A).
        prev: Node | None = None
        for ref in f.references:
            ref_node = lookup(ref)
            if prev is not None and ref_node.parent is None and not _would_loop(prev, ref_node):
                prev.adopt(ref_node)
            prev = ref_node
        # (1B) the message under its last reference, replacing a parent it got from
        # someone's (perhaps truncated) References; again never a loop.
        node.orphan()
        if prev is not None and not _would_loop(prev, node):
            prev.adopt(node)

    # (2) every node without a parent is a child of the root
    roots = [n for n in nodes if n.parent is None]

    # (3) prune dummies, bottom up
    roots = _prune(roots)

    # (4) sort the roots by sent date (a dummy by its earliest child)
    for n in roots:
        if n.dummy:
            n.children.sort(key=_date_key)
    roots.sort(key=_date_key)

    # (5) gather roots with the same base subject
    roots = _merge_subjects(roots)

    # (6) sort every set of siblings, deepest first, then the roots
    _sort_siblings(roots)
    return roots


def _would_loop(parent: Node, child: Node) -> bool:
    """Whether making ``child`` a child of ``parent`` would make a loop.  A node
    without children cannot be anyone's ancestor, which spares the walk up the tree
    for nearly every link (a reply chain thousands deep would make it quadratic)."""
    return parent is child or (bool(child.children) and parent.has_ancestor(child))


def _prune(roots: list[Node]) -> list[Node]:
    """RFC 5256 4 step 3: a dummy without children goes; a dummy with children gives
    them to its parent in its place, except at the top where it stays unless it has
    just one child."""
    order = _preorder(roots)
    for n in reversed(order):  # children before their parents
        if not n.children:
            continue
        kept: list[Node] = []
        for c in n.children:
            if c.dummy:
                if not c.children:
                    c.parent = None
                    continue
                for g in c.children:
                    g.parent = n
                kept.extend(c.children)
                c.children = []
                c.parent = None
            else:
                kept.append(c)
        n.children = kept
    out: list[Node] = []
    for n in roots:
        if not n.dummy:
            out.append(n)
        elif len(n.children) == 1:
            child = n.children[0]
            child.parent = None
            out.append(child)
        elif n.children:
            out.append(n)
    return out


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """RFC 5256 4 step 5: roots whose threads have the same base subject join."""

    def subject(n: Node) -> bytes:
        return n.children[0].subject if n.dummy else n.subject

    table: dict[bytes, Node] = {}
    for n in roots:  # (5B) one root per subject
        s = subject(n)
        if not s:
            continue
        t = table.get(s)
        if t is None or (not t.dummy and (n.dummy or (t.reply and not n.reply))):
            table[s] = n
    out: list[Node] = []
    for n in roots:  # (5C) merge
        s = subject(n)
        t = table.get(s) if s else None
        if t is None or t is n:
            out.append(n)
            continue
        if t.dummy and n.dummy:
            for c in n.children:
                t.adopt(c)
            n.children = []
        elif t.dummy:
            t.adopt(n)
        elif n.reply and not t.reply:
            t.adopt(n)
        else:
            # A new dummy over both.  It takes t's place (t may come later among the
            # roots): t's contents move to a fresh node and t becomes the dummy.
            moved = Node(t.num, t.seq, t.sent, t.subject, t.reply)
            for c in t.children:
                moved.adopt(c)
            t.children = []
            t.num, t.reply = None, False
            t.adopt(moved)
            t.adopt(n)
    return out


def _preorder(roots: Iterable[Node]) -> list[Node]:
    out: list[Node] = []
    stack = list(reversed(list(roots)))
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n.children))
    return out


def _sort_siblings(roots: list[Node]) -> None:
    for n in reversed(_preorder(roots)):
        if len(n.children) > 1:
            n.children.sort(key=_date_key)
    roots.sort(key=_date_key)


# --- the response (RFC 5256 5: thread-list) ----------------------------------------------


def format_threads(roots: list[Node]) -> bytes:
    """``(a b (c d)(e))...``: a parent and its only child are written one after the
    other; several children each get their own parentheses."""
    out: list[bytes] = []
    stack: list[Any] = []
    for root in reversed(roots):
        stack += [b")", root, b"("]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        n: Node = item
        nums: list[bytes] = []
        while True:
            if n.num is not None:
                nums.append(b"%d" % n.num)
            if len(n.children) != 1:
                break
            n = n.children[0]
        out.append(b" ".join(nums))
        if n.children:
            if nums:
                out.append(b" ")
            for c in reversed(n.children):
                stack += [b")", c, b"("]
    return b"".join(out)


def thread(algorithm: str, messages: list[tuple[int, int, MessageRecord, Facts]]) -> list[Node]:
    return ordered_subject(messages) if algorithm == "ORDEREDSUBJECT" else references(messages)


class ThreadCommands:
    """THREAD and UID THREAD; mixed into IMAPServer next to MailboxCommands."""

    def do_THREAD(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._thread(cmd, uid=False))

    def do_UID_THREAD(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._thread(cmd, uid=True))

    async def _thread(self, cmd: Command, uid: bool) -> str:
        algorithm = cmd.args["algorithm"].upper()
        if algorithm not in ALGORITHMS:
            raise Bad(f"Unknown threading algorithm {algorithm[:20]}")
        key = search_key(parse_charset(cmd.args["charset"]), cmd.args["tokens"])
        items = await matched_facts(self, key)
        messages = [(r.uid if uid else seq, seq, r, f) for seq, r, f in items]
        # Pure computation, but a big folder (or a hostile References web) takes a
        # while: in the worker pool, so that the reactor keeps serving everyone else.
        text = await self.selected.folder.workers.run(  # type: ignore[attr-defined]
            lambda: format_threads(thread(algorithm, messages)))
        self.write(b"* THREAD" + (b" " + text if text else b"") + b"\r\n")  # type: ignore[attr-defined]
        return f"{'UID ' if uid else ''}THREAD completed"
