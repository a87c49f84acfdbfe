"""FETCH responses: one message's data items, formatted by msgdata.py (parsed by mailsuite.mime), from the store.

A :class:`FetchPlan` is built once per FETCH command from its attributes: it knows
whether message bytes are needed at all (FLAGS/UID/SIZE/INTERNALDATE come from the
index record alone), which cached values (ENVELOPE, BODYSTRUCTURE, BODY) to ask the
folder's cache for, and whether \\Seen must be set (a non-PEEK body section, RFC822,
RFC822.TEXT).  :meth:`FetchPlan.render` returns the bytes of one ``* n FETCH (...)``
response.  BODY[] is the file's bytes with LF made CRLF, byte-exact otherwise, so its
length equals RFC822.SIZE; partial ``<a.b>`` is sliced and echoed as ``<a>``
(RFC 3501 §6.4.5).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from mailsuite import mime
from mailsuite.imap import binary, msgdata
from mailsuite.imap.parser import FetchAtt
from mailsuite.imap.wire import flag_fetch_lines, flags_bytes
from mailsuite.store.interface import MessageRecord

CACHED = {"ENVELOPE": "envelope", "BODYSTRUCTURE": "bodystructure", "BODY": "body"}
INDEX_ITEMS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d",
               "INTERNALDATE": b"INTERNALDATE %s", "MODSEQ": b"MODSEQ (%d)"}


class FetchPlan:
    def __init__(self, atts: list[FetchAtt], uid_command: bool) -> None:
        names = [a.name for a in atts]
        if uid_command and "UID" not in names:
            atts = [FetchAtt("UID")] + list(atts)
        self.atts = atts
        self.sections: dict[int, msgdata.Section] = {}
        self.binary: dict[int, tuple[int, ...]] = {}  # BINARY[...] / BINARY.SIZE[...] (RFC 3516)
        self.needs_message = False
        self.sets_seen = False
        for i, a in enumerate(atts):
            if a.name == "BODY[]":
                self.sections[i] = msgdata.parse_section(a.section or b"")  # ValueError -> BAD
                self.needs_message = True
                if not a.peek:
                    self.sets_seen = True
            elif a.name in ("BINARY[]", "BINARY.SIZE"):
                self.binary[i] = binary.parse_section(a.section)  # ValueError -> BAD
                self.needs_message = True
                if a.name == "BINARY[]" and not a.peek:
                    self.sets_seen = True
            elif a.name in ("RFC822", "RFC822.TEXT"):
                self.needs_message = True
                self.sets_seen = True
            elif a.name == "RFC822.HEADER":
                self.needs_message = True
        self.wants_flags = "FLAGS" in names
        self.cached = [CACHED[n] for n in names if n in CACHED]
        self.index_only = all(a.name in INDEX_ITEMS for a in self.atts)

    def render_index_only(self, pairs: Iterable[tuple[int, MessageRecord]], recent: set[int]) -> list[bytes]:
        """FETCH responses for items the index record holds (UID, FLAGS, RFC822.SIZE,
        INTERNALDATE, MODSEQ): the common sync command ``UID FETCH 1:* (FLAGS)`` over a
        big folder, formatted with one %-template per message."""
        template = b"* %d FETCH (" + b" ".join(INDEX_ITEMS[a.name] for a in self.atts) + b")\r\n"
        getters = [a.name for a in self.atts]
        if getters == ["UID", "FLAGS"] or getters == ["FLAGS"]:
            return flag_fetch_lines(pairs, recent, len(getters) == 2)
        out = []
        for seq, r in pairs:
            values: list[Any] = [seq]
            for g in getters:
                if g == "UID":
                    values.append(r.uid)
                elif g == "FLAGS":
                    values.append(flags_bytes(r.flags, r.uid in recent))
                elif g == "RFC822.SIZE":
                    values.append(r.size)
                elif g == "INTERNALDATE":
                    values.append(msgdata.format_internaldate(r.internaldate))
                else:
                    values.append(r.modseq)
            out.append(template % tuple(values))
        return out

    def render(self, seq: int, rec: MessageRecord, recent: bool, read: Callable[[MessageRecord], bytes],
               read_header: Callable[[MessageRecord], bytes],
               cache: Callable[[MessageRecord, str, Callable[[], bytes]], bytes], add_flags: bool = False,
               was_read: Callable[[MessageRecord, bytes], None] | None = None) -> list[bytes]:
        """``read(rec)`` → the stored bytes of the message; ``cache(rec, key, compute)``
        → a cached value computed by ``compute`` on a miss; ``was_read(rec, stored)``
        is told when the message file had to be read (to fill other caches)."""
        # The response as pieces: a big literal is one piece of its own, so it is not
        # copied again into one long bytes object (the transport joins once anyway).
        out: list[bytes] = [b"* %d FETCH (" % seq]
        sep = [b""]

        def item(data: bytes) -> None:
            out.append(sep[0] + data)
            sep[0] = b" "

        def lit(label: bytes, data: bytes) -> None:
            out.append(sep[0] + label + b" {%d}\r\n" % len(data))
            out.append(data)
            sep[0] = b" "

        msg: mime.Message | None = None
        stored: bytes | None = None

        def message() -> mime.Message:
            nonlocal msg, stored
            if msg is None:
                if stored is None:
                    stored = read(rec)
                msg = mime.parse(stored)
            return msg

        for i, a in enumerate(self.atts):
            n = a.name
            if n == "UID":
                item(b"UID %d" % rec.uid)
            elif n == "FLAGS":
                item(b"FLAGS " + flags_bytes(rec.flags, recent))
            elif n == "RFC822.SIZE":
                item(b"RFC822.SIZE %d" % rec.size)
            elif n == "INTERNALDATE":
                item(b"INTERNALDATE " + msgdata.format_internaldate(rec.internaldate))
            elif n == "ENVELOPE":
                item(b"ENVELOPE " + cache(rec, "envelope", lambda: msgdata.envelope(msg) if msg is not None else
                                          msgdata.envelope_of_header(mime.split_header(stored)[0]
                                                                     if stored is not None else read_header(rec))))
            elif n == "BODYSTRUCTURE":
                item(b"BODYSTRUCTURE " + cache(rec, "bodystructure", lambda: msgdata.bodystructure(message(), True)))
            elif n == "BODY":
                item(b"BODY " + cache(rec, "body", lambda: msgdata.bodystructure(message(), False)))
            elif n == "MODSEQ":
                item(b"MODSEQ (%d)" % rec.modseq)
            elif n == "RFC822":
                lit(b"RFC822", message().data)
            elif n == "RFC822.HEADER":
                lit(b"RFC822.HEADER", msgdata.section(message(), msgdata.Section(text="HEADER")) or b"")
            elif n == "RFC822.TEXT":
                lit(b"RFC822.TEXT", msgdata.section(message(), msgdata.Section(text="TEXT")) or b"")
            elif n in ("BINARY[]", "BINARY.SIZE"):
                m = message()
                pieces = binary.fetch_item(a, self.binary[i], m, stored)
                out.append(sep[0] + pieces[0])
                out.extend(pieces[1:])
                sep[0] = b" "
            elif n == "BODY[]":
                sec = self.sections[i]
                if not sec.parts and not sec.text:
                    if stored is None:
                        stored = read(rec)
                    data = _wire(stored, rec.size) if msg is None else msg.data
                else:
                    data = msgdata.section(message(), sec)
                label = b"BODY[" + msgdata.section_label(sec) + b"]"
                if a.partial is not None:
                    origin, length = a.partial
                    label += b"<%d>" % origin
                    if data is not None:
                        data = msgdata.partial(data, origin, length)
                if data is None:
                    item(label + b" NIL")
                elif not data:
                    item(label + b' ""')
                else:
                    lit(label, data)
        if stored is not None and was_read is not None:
            was_read(rec, stored)
        if add_flags and not self.wants_flags:
            item(b"FLAGS " + flags_bytes(rec.flags, recent))
        out.append(b")\r\n")
        return out


def _wire(stored: bytes, wire_size: int) -> bytes:
    """mime.to_wire, with a shortcut for files already stored in wire form (copied in
    from elsewhere with CRLF): when the file is as long as its known wire size, there
    is no bare LF to convert."""
    if len(stored) == wire_size and b"\x00" not in stored:
        return stored
    return mime.to_wire(stored)
