"""The hand-off: everything that passes from the SMTP front end to delivery.

This module is the only thing ``smtp/`` knows of delivery (DESIGN.md, "The way a
message travels").  It owns:

* :class:`Envelope`: who sent a message, to whom, and how it arrived;
* the body: :class:`IncomingMessage` streams it while DATA arrives, and its
  :meth:`~IncomingMessage.finish` yields a :class:`BodyFile` (on disk, or in memory for
  a small message);
* the failure types a sink answers with: :class:`TemporaryFailure` (the client tries
  again: 4xx) and :class:`PermanentFailure` (the client gives up and bounces: 5xx);
* :class:`IMessageSink`, whose ``accept(envelope, body)`` takes the message and fires
  once it is durable on disk.

Who implements :class:`IMessageSink` (built in this order in ``mailsuite/service.py``):
:class:`mailsuite.queue.scheduler.QueueManager` (everything into the spool), then
:class:`mailsuite.delivery.dispatch.Dispatcher` (the front ends' sink: all-local mail
straight to the Maildirs through :mod:`mailsuite.delivery.local`, anything else to the
queue).  A capability that must see every message before it is accepted (adding
Authentication-Results, DKIM signing of submitted mail) wraps the dispatcher in its
own sink: ``accept`` does its work, then calls the next sink with the same or a new
envelope and body (:func:`prepend_headers` makes the new body).

Adding an ESMTP parameter (DSN's NOTIFY/RET/ENVID/ORCPT, SMTPUTF8, BODY=, REQUIRETLS):
add a field with a default to :class:`Envelope` (per-recipient values go in a
dict keyed by the RCPT address, like ``mailboxes``), carry it into the spool's record
in ``queue/scheduler.record_from_envelope`` and ``queue/spool.Record`` (the envelope
is the spool's JSON, see DESIGN.md "Formats"), and read it where it is acted on.
Nothing else changes: every sink takes the whole envelope.

Nothing here imports ``queue/``, ``store/`` or ``delivery/``: they import this.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from twisted.internet.defer import Deferred
from zope.interface import Interface

from mailsuite import fsutil

# -- the envelope ---------------------------------------------------------------------

# A per-process sequence, not randomness, for the last three digits: with 3 random
# digits two messages in the same millisecond collided every few thousand messages
# under load (measured: 1 in ~5000 at 500 msg/s), and the second got a 451.
_seq = itertools.count(int.from_bytes(os.urandom(2), "big"))


def use_process_slot(index: int, count: int) -> None:
    """With several processes, start each one's sequence in its own part of the 4096
    values (worker ``index`` of ``count``; 0 = the parent), so two processes collide
    only if one takes more than 4096/(count+1) ids in one millisecond."""
    global _seq
    _seq = itertools.count(index * (4096 // (count + 1)))


def new_queue_id() -> str:
    """12 upper-case hex digits, time-ordered like Postfix's short queue ids; unique
    within a process for up to 4096 ids per millisecond."""
    return f"{int(time.time() * 1000) & 0xFFFFFFFFF:09X}{next(_seq) & 0xFFF:03X}"


@dataclass(frozen=True)
class Envelope:
    """An accepted message's envelope, as the front end resolved it.

    ``recipients`` are the RCPT TO addresses as given; the directory's answer for them
    is split into ``mailboxes`` (local account -> the RCPT that led there) and
    ``forwards`` (remote addresses: RCPTs and alias targets).  A message with no
    ``forwards`` is delivered locally at once (the fast path); any forward sends the
    whole message through the queue.
    """

    queue_id: str
    sender: str  # "" is the null sender <>
    recipients: tuple[str, ...]  # addresses as given in RCPT TO
    mailboxes: dict[str, str] = field(default_factory=dict)  # local account -> the RCPT that led there
    forwards: tuple[str, ...] = ()  # remote addresses (RCPTs and alias targets)
    client_ip: str = ""
    helo: str = ""
    auth_user: str = ""
    # The folder local copies go to ("" = INBOX): "Junk" when the sender checks
    # (mailsuite.mailauth.inbound) say quarantine.  Kept in the spool record.
    folder: str = ""
    arrival: float = field(default_factory=time.time)
    smtputf8: bool = False  # the client sent SMTPUTF8 (RFC 6531)
    body: str = ""  # BODY=: "", "8BITMIME" or "BINARYMIME"
    envid: str = ""  # RFC 3461 ENVID, decoded
    ret: str = ""  # RFC 3461 RET: "", "FULL", "HDRS"
    requiretls: bool = False  # RFC 8689 REQUIRETLS
    # RFC 3461 per RCPT: address -> (NOTIFY, ORCPT "type;addr"); absent: neither given.
    rcpt_dsn: dict[str, tuple[str, str]] = field(default_factory=dict)


# -- the body -------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyFile:
    """A message body (LF line ends) ready to be copied into mailboxes or the spool: on
    disk at ``path``, or, for a small message, in ``data`` (then ``path`` is where it
    would be written; see :class:`IncomingMessage`).  Whoever takes it over (a sink's
    ``accept``) removes or moves the file when done."""

    path: str
    size: int  # bytes on disk
    lines: int  # number of LF characters, so the CRLF size is size + lines
    data: bytes | None = None


def read_body(body: BodyFile, limit: int | None = None) -> bytes:
    """The body's bytes (the first ``limit`` of them), from memory or from its file
    (blocking for a body on disk: worker pool)."""
    if body.data is not None:
        return body.data if limit is None else body.data[:limit]
    with open(body.path, "rb") as f:
        return f.read() if limit is None else f.read(limit)


def prepend_headers(body: BodyFile, headers: bytes) -> BodyFile:
    """A body with ``headers`` (LF-terminated header lines) in front of ``body``; the
    old body is consumed (blocking when the body is on disk: run it in the worker pool).

    For a sink wrapper that adds header fields to every copy of a message (e.g.
    Authentication-Results on the MX, DKIM-Signature on submission); header lines for
    one local copy only go through a delivery filter (:mod:`mailsuite.delivery.local`).
    """
    if not headers:
        return body
    size, lines = body.size + len(headers), body.lines + headers.count(b"\n")
    if body.data is not None:
        return BodyFile(body.path, size, lines, headers + body.data)
    tmp = body.path + ".hdr"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # No fsync: whoever accepts the body makes it durable, as for any body.
        fsutil.copy_into(fd, headers, None, body.path, body.size)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    # Same name as before, so a crash leaves at most one file for clean_incoming.
    os.rename(tmp, body.path)
    return replace(body, size=size, lines=lines)


SPILL_AT = 256 * 1024


class IncomingMessage:
    """A message while it is being received.

    The SMTP server writes the body as it arrives.  A small message stays in memory and
    is written once, by a worker thread, straight into the mailboxes (or the spool); a
    message that grows past ``spill_at`` bytes goes to a file under
    ``<queue_dir>/incoming/`` from then on, so a 50 MB message never sits in memory
    whole.  Creating, writing and removing that file for every small message cost the
    reactor thread a fifth of its time at 500 messages/s (measured with py-spy), which
    is why small ones skip it.  Files left there by a crash were never acknowledged;
    :func:`clean_incoming` removes them at start.
    """

    def __init__(self, incoming_dir: Path, queue_id: str, spill_at: int = SPILL_AT) -> None:
        self.path = str(incoming_dir / queue_id)
        self.spill_at = spill_at
        self._fd: int | None = None
        self._chunks: list[bytes] | None = []  # None once spilled to the file
        self._closed = False
        self.size = 0
        self.lines = 0

    @property
    def on_disk(self) -> bool:
        return self._chunks is None

    def write(self, data: bytes) -> None:
        """Append LF-terminated body bytes.  Page-cache writes are quick enough for the
        reactor thread; the fsync that makes the message durable happens later, in the
        worker pool, on the copy that is kept."""
        if self._closed or not data:
            return
        self.size += len(data)
        self.lines += data.count(b"\n")
        if self._chunks is not None:
            self._chunks.append(data)
            if self.size <= self.spill_at:
                return
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            data, self._chunks = b"".join(self._chunks), None
        assert self._fd is not None
        fsutil.write_all(self._fd, data)

    def finish(self) -> BodyFile:
        if self._chunks is not None:
            data = b"".join(self._chunks)
            self._chunks, self._closed = [], True
            return BodyFile(self.path, self.size, self.lines, data)
        self._close()
        return BodyFile(self.path, self.size, self.lines)

    def _close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        on_disk = self.on_disk
        self._close()
        self._chunks = []
        if on_disk:
            try:
                os.unlink(self.path)
            except OSError:  # already gone, or the folder itself is broken: nothing to undo
                pass


def clean_incoming(incoming_dir: Path) -> int:
    """Remove files of messages whose receipt never completed; return how many."""
    os.makedirs(incoming_dir, mode=0o700, exist_ok=True)
    n = 0
    for entry in os.scandir(incoming_dir):
        if entry.is_file():
            os.unlink(entry.path)
            n += 1
    return n


def discard_body(body: BodyFile) -> None:
    """Remove a body's file if it has one (a body in memory never had a file)."""
    if body.data is None:
        try:
            os.unlink(body.path)
        except FileNotFoundError:
            pass


# -- failures -------------------------------------------------------------------------


class DeliveryFailure(Exception):
    """Why a message (or one recipient's copy) was not accepted.

    ``status`` is the RFC 3463 enhanced status code; ``reply`` is the text a client may
    see (``None``: the front end's generic text, because ``str(self)`` may hold local
    detail such as an errno and a path, which goes to the log only).
    """

    default_status = "4.3.0"

    def __init__(self, detail: str, status: str | None = None, reply: str | None = None) -> None:
        super().__init__(detail)
        self.status = status or self.default_status
        self.reply = reply


class TemporaryFailure(DeliveryFailure):
    """Accepting the message failed in a way the client should retry (SMTP 4xx):
    disk full, the directory unreachable, a mailbox over quota."""

    default_status = "4.3.0"


NO_SPACE_STATUS = "4.3.1"  # RFC 3463: mail system full
NO_SPACE_TEXT = "Insufficient system storage"


def is_disk_full(error: BaseException | None) -> bool:
    """Did ``error`` come from a full disk or quota (fsutil.is_disk_full), or is it
    the TemporaryFailure made of one?"""
    if isinstance(error, DeliveryFailure) and error.status == NO_SPACE_STATUS:
        return True
    return fsutil.is_disk_full(error)


def temporary_failure(error: BaseException, detail: str | None = None) -> "TemporaryFailure":
    """The TemporaryFailure for ``error``: a full disk gets 4.3.1 and says so (SMTP
    452, issue 16 "disk full"); anything else the generic 4.3.0."""
    text = detail if detail is not None else str(error)
    if is_disk_full(error):
        return TemporaryFailure(text, NO_SPACE_STATUS, NO_SPACE_TEXT)
    return TemporaryFailure(text)


class PermanentFailure(DeliveryFailure):
    """The message will never be accepted as it is (SMTP 5xx): e.g. every recipient's
    Sieve script rejected it.  The client bounces it to its sender."""

    default_status = "5.3.0"


# -- the interface --------------------------------------------------------------------


class IMessageSink(Interface):
    """Takes accepted messages (the one hand-off from the front ends to delivery)."""

    def accept(envelope: Envelope, body: BodyFile) -> "Deferred[str]":
        """Take ownership of ``body`` and make the message durable.

        Fires, once the message is fsynced (file and directory) wherever it will be
        delivered from, with a short word for the log ("delivered", "queued"); fails
        with :class:`TemporaryFailure` or :class:`PermanentFailure` otherwise.  Either
        way ``body``'s file is moved or removed by the sink, never by the caller.
        """
