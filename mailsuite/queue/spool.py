"""The spool on disk: one JSON envelope and one body file per queued message.

Layout under ``<data_dir>/queue/``::

    spool/<id>.msg      the body, LF line ends, as received (Received: first)
    spool/<id>.json     the envelope with per-recipient state (format below)
    corrupt/            envelopes that could not be read, moved aside with a log line
    control/            requests from ``mailsuite queue`` to the running server
    lock                flock()ed by the running server for its lifetime

Every write is temp file → fsync → rename → fsync of ``spool/``.  A new message's body
is written (or moved in from ``incoming/``) and fsynced before its envelope is renamed
into place, so an envelope never names a missing body; a body without an envelope is
the leftover of a crash before the 250 and is removed at start.  The per-recipient
state lives in the envelope rather than in a directory per state: a state change is
then one small rewrite, not a rename of two files.

JSON, never pickle (DESIGN.md rule 5).  Envelope format, version 1::

    {"version": 1, "id": "...", "sender": "", "arrival": 1700000000.0,
     "client_ip": "...", "helo": "...", "auth_user": "...", "size": 123, "lines": 4,
     "delay_warned": false,
     "recipients": [{"address": "a@b", "kind": "local"|"remote", "orcpt": "a@b",
                     "state": "pending"|"sent"|"bounced", "attempts": 0,
                     "next_attempt": 0.0, "last_attempt": 0.0, "dsn": "", "error": "",
                     "relay": "", "notified": false}]}

Later additions, all optional (an envelope without them reads as before, and an older
reader ignores them): on the message ``"smtputf8": true`` (RFC 6531), ``"body":
"8BITMIME"|"BINARYMIME"`` (RFC 6152, 3030), ``"envid"`` and ``"ret": "FULL"|"HDRS"``
(RFC 3461), ``"requiretls": true`` (RFC 8689); on a recipient ``"notify":
"SUCCESS,DELAY"`` (or ``"NEVER"``; empty: the default, failures and delays) and
``"original": "rfc822;a@b"`` (the ORCPT parameter as received, decoded) and
``"tls_policy": "mta-sts enforce"`` (the TLS policy of the last attempt).

The functions here block (fsync); the scheduler runs them through the worker pool.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from mailsuite import fsutil
from twisted.logger import Logger

from mailsuite.handoff import BodyFile, temporary_failure

VERSION = 1
STATES = ("pending", "sent", "bounced")
KINDS = ("local", "remote")


class CorruptEnvelope(ValueError):
    pass


@dataclass(frozen=True)
class Recipient:
    address: str  # local: the account name; remote: the address to relay to
    kind: str  # local | remote
    orcpt: str = ""  # the RCPT TO that led here
    state: str = "pending"
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    dsn: str = ""  # last enhanced status code
    error: str = ""  # last reply or reason
    relay: str = ""
    notified: bool = False  # a DSN went out for this bounce
    notify: str = ""  # RFC 3461 NOTIFY, upper case, comma separated; "": not given
    original: str = ""  # RFC 3461 ORCPT as "addr-type;address" (decoded), if given
    tls_policy: str = ""  # the outbound TLS policy of the last attempt (relay.TLSPlan)

    @property
    def final(self) -> bool:
        return self.state != "pending"


@dataclass(frozen=True)
class Record:
    id: str
    sender: str
    arrival: float
    recipients: tuple[Recipient, ...]
    size: int = 0
    lines: int = 0
    client_ip: str = ""
    helo: str = ""
    auth_user: str = ""
    folder: str = ""  # local copies' folder ("" = INBOX; "Junk" after failed sender checks)
    delay_warned: bool = False
    smtputf8: bool = False
    body: str = ""  # "", "8BITMIME" or "BINARYMIME" (the BODY= parameter)
    envid: str = ""  # RFC 3461 ENVID (decoded)
    ret: str = ""  # RFC 3461 RET: "", "FULL" or "HDRS"
    requiretls: bool = False  # RFC 8689
    version: int = VERSION

    @property
    def done(self) -> bool:
        return all(r.final for r in self.recipients)

    def with_recipient(self, index: int, **changes: Any) -> "Record":
        rcpts = list(self.recipients)
        rcpts[index] = replace(rcpts[index], **changes)
        return replace(self, recipients=tuple(rcpts))

    def due_now(self) -> "Record":
        """The same record with every waiting recipient due at once (flush, retry)."""
        rcpts = tuple(replace(r, next_attempt=0.0) if not r.final else r for r in self.recipients)
        return replace(self, recipients=rcpts)

    def to_json(self) -> bytes:
        d = asdict(self)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @staticmethod
    def from_json(data: bytes) -> "Record":
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptEnvelope(f"not JSON: {e}") from None
        if not isinstance(d, dict) or d.get("version") != VERSION:
            raise CorruptEnvelope("not a version 1 envelope")
        try:
            rcpts = tuple(_recipient(r) for r in d["recipients"])
            rec = Record(
                id=_str(d["id"]), sender=_str(d["sender"]), arrival=_num(d["arrival"]), recipients=rcpts,
                size=int(d.get("size", 0)), lines=int(d.get("lines", 0)),
                client_ip=_str(d.get("client_ip", "")), helo=_str(d.get("helo", "")),
                auth_user=_str(d.get("auth_user", "")), folder=_str(d.get("folder", "")), delay_warned=bool(d.get("delay_warned", False)),
                smtputf8=bool(d.get("smtputf8", False)), body=_str(d.get("body", "")),
                envid=_str(d.get("envid", "")), ret=_str(d.get("ret", "")),
                requiretls=bool(d.get("requiretls", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptEnvelope(f"bad field: {e}") from None
        if not rec.id or not _safe_id(rec.id) or not rcpts:
            raise CorruptEnvelope("missing id or recipients")
        return rec


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("expected a number")
    return float(v)


def _recipient(d: Any) -> Recipient:
    if not isinstance(d, dict):
        raise TypeError("recipient is not an object")
    r = Recipient(
        address=_str(d["address"]), kind=_str(d["kind"]), orcpt=_str(d.get("orcpt", "")),
        state=_str(d.get("state", "pending")), attempts=int(d.get("attempts", 0)),
        next_attempt=_num(d.get("next_attempt", 0.0)), last_attempt=_num(d.get("last_attempt", 0.0)),
        dsn=_str(d.get("dsn", "")), error=_str(d.get("error", "")), relay=_str(d.get("relay", "")),
        notified=bool(d.get("notified", False)), notify=_str(d.get("notify", "")),
        original=_str(d.get("original", "")), tls_policy=_str(d.get("tls_policy", "")),
    )
    if r.kind not in KINDS or r.state not in STATES or not r.address:
        raise ValueError(f"bad recipient {r.address!r}")
    return r


def _safe_id(qid: str) -> bool:
    return qid.isalnum() and len(qid) <= 64


# ---------------------------------------------------------------------------
# Blocking disk functions.


@dataclass(frozen=True)
class SpoolPaths:
    root: Path  # <data_dir>/queue

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def corrupt(self) -> Path:
        return self.root / "corrupt"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def envelope(self, qid: str) -> Path:
        return self.spool / f"{qid}.json"

    def body(self, qid: str) -> Path:
        return self.spool / f"{qid}.msg"

    def make(self) -> None:
        for d in (self.spool, self.corrupt, self.control):
            os.makedirs(d, mode=0o700, exist_ok=True)


def write_new(paths: SpoolPaths, record: Record, body: BodyFile) -> None:
    """Put a new message into the spool durably (blocking).  ``body`` is taken over:
    its file, if any, is moved in; in-memory bytes are written."""
    final_body = paths.body(record.id)
    if body.data is not None:
        fsutil.write_synced(final_body, body.data)
    else:
        fsutil.fsync_file(body.path)
        os.rename(body.path, final_body)
    # One folder fsync makes both names durable: the envelope's rename comes last,
    # so an envelope never names a body that is not there.
    fsutil.atomic_write(paths.envelope(record.id), record.to_json())


def write_record(paths: SpoolPaths, record: Record) -> None:
    """Replace a message's envelope durably (blocking)."""
    fsutil.atomic_write(paths.envelope(record.id), record.to_json())


def remove(paths: SpoolPaths, qid: str, durable: bool = False) -> None:
    """Remove a message: envelope first, so a crash in between leaves an orphan body
    (removed at start), never an envelope without its body.  ``durable``: fsync the
    folder too, so the removal survives a crash."""
    for p in (paths.envelope(qid), paths.body(qid)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if durable:
        fsutil.fsync_dir(paths.spool)


def remove_many(paths: SpoolPaths, qids: list[str]) -> None:
    """Remove finished messages, not durably (see the scheduler for why that is safe)."""
    for qid in qids:
        remove(paths, qid)


def read_record(paths: SpoolPaths, qid: str) -> Record:
    try:
        data = paths.envelope(qid).read_bytes()
    except FileNotFoundError:
        raise KeyError(qid) from None
    return Record.from_json(data)


@dataclass
class ScanResult:
    records: list[Record] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    orphans: int = 0


def scan(paths: SpoolPaths, clean: bool = True) -> ScanResult:
    """Every readable envelope in the spool (blocking).  With ``clean``, corrupt
    envelopes are moved to corrupt/ (with their body), orphan bodies and temp files
    removed."""
    out = ScanResult()
    try:
        names = os.listdir(paths.spool)
    except FileNotFoundError:
        return out
    name_set = set(names)
    envelopes = set()
    for name in sorted(names):
        path = paths.spool / name
        if name.endswith(".tmp"):
            if clean:
                _unlink(path)
            continue
        if not name.endswith(".json"):
            continue
        qid = name[: -len(".json")]
        envelopes.add(qid)
        try:
            rec = Record.from_json(path.read_bytes())
            if rec.id != qid:
                raise CorruptEnvelope(f"names id {rec.id!r}")
            if f"{qid}.msg" not in name_set:
                raise CorruptEnvelope("its body file is missing")
        except (OSError, CorruptEnvelope) as e:
            out.corrupt.append((name, str(e)))
            if clean:
                stamp = time.strftime("%Y%m%d%H%M%S")
                os.rename(path, paths.corrupt / f"{name}.{stamp}")
                if f"{qid}.msg" in name_set:
                    os.rename(paths.body(qid), paths.corrupt / f"{qid}.msg.{stamp}")
            continue
        out.records.append(rec)
    for name in names:
        if name.endswith(".msg") and name[: -len(".msg")] not in envelopes:
            out.orphans += 1
            if clean:
                _unlink(paths.spool / name)
    out.records.sort(key=lambda r: r.arrival)
    return out


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def iter_headers(path: Path, limit: int = 64 * 1024) -> Iterator[bytes]:
    """The header lines of the message at ``path`` (LF ends), at most ``limit`` bytes."""
    with open(path, "rb") as f:
        data = f.read(limit)
    end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 1]
    yield from head.splitlines(keepends=True)


def write_durably(paths: SpoolPaths, record: Record, body: BodyFile, workers: Any) -> Any:
    """:func:`write_new` in the worker pool ``workers``; a spool that cannot be written
    (disk full, permissions) fails with TemporaryFailure, so the client tries again
    later, and what was written is removed.  Used by the queue manager and by a
    worker process's hand-over alike."""
    log = Logger(namespace="mailsuite.queue")
    d = workers.run(write_new, paths, record, body)

    def failed(f: Any) -> None:
        f.trap(OSError)
        log.error("queue: {qid}: cannot write to the spool: {why}", qid=record.id, why=f.getErrorMessage())
        workers.run(remove, paths, record.id).addErrback(
            lambda f2: log.warn("queue: {qid}: leftovers stay until the next start: {why}",
                                qid=record.id, why=f2.getErrorMessage()))
        raise temporary_failure(f.value, f"spool write failed: {f.getErrorMessage()}")

    return d.addErrback(failed)
