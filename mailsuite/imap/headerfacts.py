"""What SORT and THREAD (RFC 5256) need of each message's header, computed once.

For every message a SORT or THREAD touches we need a handful of values from its
header: the sent date (RFC 5256 2.2), the first From/To/Cc mailbox and display name
(RFC 5256 3, RFC 5957), the base subject and whether the subject marks a reply or
forward (RFC 5256 2.1), the Message-ID and the references (RFC 5256 4).  They are
computed from the header block (read in the worker pool) by :func:`facts`, and kept
in the folder's per-message cache under :data:`FACTS_KEY` as a small JSON list, so a
second SORT of a big folder opens no file.

:func:`base_subject` is the one place the base-subject extraction of RFC 5256 2.1
lives; both SORT SUBJECT and both THREAD algorithms use it.
"""

from __future__ import annotations

import email.utils
import re
from typing import Any, NamedTuple

from mailsuite import mime

FACTS_KEY = "sortfacts1"

# Cap on how many references of one message are looked at: a References field of
# thousands of ids (hostile or broken) must not make THREAD quadratic.
MAX_REFERENCES = 100


class Facts(NamedTuple):
    """One message's values for SORT and THREAD (index order = the cached list)."""

    sent: float | None  # the Date: field in seconds since the epoch (UTC), None if unusable
    from_: str  # addr-mailbox of the first From address ("" when none)
    to: str
    cc: str
    display_from: str  # RFC 5957: the first From address's display name, else mailbox@host
    display_to: str
    subject: str  # the base subject (RFC 5256 2.1)
    reply: bool  # the subject had a subj-refwd, a "(fwd)" trailer or a [fwd: ...] wrapper
    message_id: str  # "" when missing or invalid
    references: list[str]  # References ids, or the first In-Reply-To id; oldest first


# --- base subject (RFC 5256 2.1 and its ABNF in section 5) -------------------------

_WSP = re.compile(r"[ \t\r\n]+")
# subj-blob = "[" *BLOBCHAR "]" *WSP, BLOBCHAR = any CHAR but "[" and "]"
_BLOB = r"\[[^\[\]]*\][ \t]*"
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = r"(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:"
# subj-leader = (*subj-blob subj-refwd) / WSP
_LEADER = re.compile(r"(?:(?:" + _BLOB + r")*" + _REFWD + r"|[ \t])", re.I)
_LEADING_BLOB = re.compile(_BLOB)
# subj-trailer = "(fwd)" / WSP
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])\Z", re.I)


def base_subject(raw: bytes) -> tuple[str, bool]:
    """The base subject of a Subject field's raw value, and whether the extraction
    removed a reply/forward marker (a subj-refwd, a "(fwd)" trailer, a [fwd: ...]
    wrapper; RFC 5256 4 step 5 needs that).  The text is decoded (RFC 2047) and the
    comparison form is left to the caller (i;ascii-casemap: :func:`collate`)."""
    # (1) decode encoded words; tabs, continuations and runs of spaces become one space
    text = _WSP.sub(" ", mime.decode_header_text(raw))
    reply = False
    while True:
        # (2) remove subj-trailers from the end, as long as there are any
        while True:
            m = _TRAILER.search(text)
            if m is None or not text:
                break
            if m.group() != " " and m.group() != "\t":
                reply = True
            text = text[: m.start()]
        # (3)-(5): subj-leaders, then one subj-blob if something remains after it
        while True:
            changed = False
            m = _LEADER.match(text)
            while m is not None and m.end() > 0:
                if m.group() not in (" ", "\t"):
                    reply = True
                text = text[m.end():]
                changed = True
                m = _LEADER.match(text)
            m = _LEADING_BLOB.match(text)
            if m is not None and m.end() < len(text):
                text = text[m.end():]
                changed = True
            if not changed:
                break
        # (6) "[fwd:" ... "]" around the whole: unwrap and start again from (2)
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def collate(text: str) -> bytes:
    """The i;ascii-casemap comparison form (RFC 4790 9.2): the UTF-8 octets with the
    ASCII letters a-z mapped to upper case; nothing else is folded."""
    return text.encode("utf-8", "surrogateescape").upper()


# --- message ids -----------------------------------------------------------------

# A msg-id as found in practice: "<" left "@" right ">", no white space or brackets
# inside.  Comments and words between ids (old In-Reply-To forms) are skipped.
_MSG_ID = re.compile(rb"<([^<>\s@]+@[^<>\s@]+)>")


def message_ids(raw: bytes, limit: int = MAX_REFERENCES) -> list[str]:
    """The valid msg-ids of a field value, in order, without the angle brackets (the
    last ``limit`` of them: the nearest ancestors matter most)."""
    ids = [m.group(1).decode("utf-8", "replace") for m in _MSG_ID.finditer(raw)]
    return ids[-limit:]


# --- dates and addresses -----------------------------------------------------------


def sent_date(raw: bytes | None) -> float | None:
    """The Date: value as UTC seconds (the zone taken into account, RFC 5256 2.2), or
    None when missing or unparseable (the caller then uses the internal date)."""
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_tz(raw.decode("latin-1"))
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


def _first_address(values: list[bytes]) -> mime.Address | None:
    if not values:
        return None
    for addr in mime.parse_addresses(b",".join(values)):
        if addr[2] is not None and addr[3] is not None:  # not a group marker
            return addr
    return None


def _text(value: bytes | None) -> str:
    return mime.decode_header_text(value) if value else ""


def _display(addr: mime.Address | None) -> str:
    """RFC 5957 DISPLAYFROM/DISPLAYTO: the decoded display name if there is one,
    otherwise the address itself."""
    if addr is None:
        return ""
    name = _text(addr[0]).strip()
    if name:
        return name
    return _text(addr[2]) + "@" + _text(addr[3])


def facts(header: bytes) -> Facts:
    """The SORT/THREAD values of a header block (any line ends).  Never raises."""
    lowered = header.lower()

    def values(name: bytes) -> list[bytes]:
        return [mime.unfold(v) for v in mime.header_values(header, name, lowered)]

    frm, to, cc = _first_address(values(b"from")), _first_address(values(b"to")), _first_address(values(b"cc"))
    subjects = values(b"subject")
    subject, reply = base_subject(subjects[0]) if subjects else ("", False)
    dates = values(b"date")
    ids = message_ids(b" ".join(values(b"message-id")), 1)
    refs = message_ids(b" ".join(values(b"references")))
    if not refs:
        refs = message_ids(b" ".join(values(b"in-reply-to")))[:1]
    return Facts(
        sent=sent_date(dates[0]) if dates else None,
        from_=_text(frm[2]) if frm else "",
        to=_text(to[2]) if to else "",
        cc=_text(cc[2]) if cc else "",
        display_from=_display(frm),
        display_to=_display(to),
        subject=subject,
        reply=reply,
        message_id=ids[0] if ids else "",
        references=refs,
    )


def from_cache(value: Any) -> Facts | None:
    """A cached list back as Facts (None when absent or of another shape)."""
    if isinstance(value, list) and len(value) == len(Facts._fields):
        return Facts(*value)
    return None


async def load(folder: Any, records: list[Any]) -> dict[int, Facts]:
    """The Facts of ``records`` (MessageRecords of ``folder``) by UID: from the folder
    cache, the rest read and computed in the worker pool (in batches, so the reactor
    never waits on thousands of reads) and then cached.  A message expunged meanwhile
    is left out."""
    from mailsuite.store.errors import MessageGone

    out: dict[int, Facts] = {}
    missing = []
    get = folder.cache_get
    for r in records:
        f = from_cache(get(r.uid, FACTS_KEY))
        if f is None:
            missing.append(r)
        else:
            out[r.uid] = f

    def compute(batch: list[Any]) -> list[tuple[int, Facts]]:
        done = []
        for r in batch:
            try:
                done.append((r.uid, facts(folder.read_header(r.uid))))
            except MessageGone:
                continue
        return done

    for i in range(0, len(missing), 1000):
        for uid, f in await folder.workers.run(compute, missing[i : i + 1000]):
            out[uid] = f
            folder.cache_put(uid, FACTS_KEY, list(f))
    return out
