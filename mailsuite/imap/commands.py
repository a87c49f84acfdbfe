"""The IMAP commands of the authenticated and selected states (a mixin of IMAPServer).

Mailbox commands go to the account (:mod:`mailsuite.imap.account`, over the store);
message commands go through the session's :class:`SelectedMailbox` view, so sequence
numbers are always this session's.  Store errors map to precise NO answers with
RFC 5530 response codes ([NONEXISTENT], [ALREADYEXISTS], [TRYCREATE], [LIMIT], ...).
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any, Callable, Iterable

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite import mutf7
from mailsuite import mime
from mailsuite.imap import condstore, msgdata, search, wire
from mailsuite.imap.account import IMAPAccount
from mailsuite.imap.errors import Bad, No, store_error, trap_store
from mailsuite.imap.fetch import FetchPlan
from mailsuite.imap.parser import Command
from mailsuite.imap.selected import SelectedMailbox, linger
from mailsuite.imap.wire import SYSTEM_FLAGS, flag_fetch_lines, uid_set_text
from mailsuite.store import errors as store_errors
from mailsuite.store.interface import SEARCH_CACHE_KEY, SEARCH_FIELDS, FolderInfo, IFolder, MessageRecord

log = Logger(namespace="mailsuite.imap")

DELIM = "."
_SYSTEM_BY_UPPER = {f.upper(): f for f in SYSTEM_FLAGS}
READ_AHEAD = 256  # messages whose files FETCH reads in one worker-pool call...
READ_AHEAD_BYTES = 8 * 1024 * 1024  # ...or this many bytes of them
_INDEX_LINES = 2000  # index-only FETCH lines written at a time (_stream_index_lines)
_KEYWORD_RE = re.compile(r"^[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~\x80-\U0010ffff]+$")


def normalize_flags(flags: list[str]) -> list[str]:
    """Client flags in canonical spelling; \\Recent is dropped (it cannot be set)."""
    out = []
    for f in flags:
        if f.startswith("\\"):
            canon = _SYSTEM_BY_UPPER.get(f.upper())
            if canon is None:
                if f.upper() == "\\RECENT":
                    continue
                raise Bad(f"Invalid system flag {f[:30]}")
            out.append(canon)
        else:
            if not _KEYWORD_RE.match(f):
                raise Bad("Invalid keyword")
            out.append(f)
    return list(dict.fromkeys(out))


class MailboxCommands:
    """Mixed into IMAPServer; uses self.write, self.account, self.selected, self.state."""

    selected: SelectedMailbox | None
    account: IMAPAccount
    utf8 = False  # mailbox names in UTF-8: after ENABLE UTF8=ACCEPT (RFC 6855) or IMAP4rev2
    utf8_accept = False  # ENABLE UTF8=ACCEPT was given

    # -- helpers -------------------------------------------------------------------

    def _name(self, raw: bytes) -> str:
        try:
            # RFC 6855 3: after ENABLE UTF8=ACCEPT names travel as UTF-8.
            name = raw.decode("utf-8") if self.utf8 else mutf7.decode(raw)
        except ValueError:
            raise No("Invalid mailbox name (not UTF-8)" if self.utf8 else
                     "Invalid mailbox name (not modified UTF-7)", "CANNOT") from None
        if name.upper() == "INBOX" or name.upper().startswith("INBOX" + DELIM):
            name = "INBOX" + name[5:]
        return name

    def _close_selected(self) -> None:
        if self.selected is not None:
            sel, self.selected = self.selected, None
            sel.close()
            if self.state == "selected":
                self.state = "auth"

    async def _open(self, name: str, trycreate: bool = False) -> IFolder:
        """The shared store Folder ``name`` (the caller gives it back with linger() or
        through its view); a missing folder is NO [NONEXISTENT], or NO [TRYCREATE] where
        the client may offer to create it (APPEND, COPY, MOVE: RFC 3501 6.3.11)."""
        try:
            return await self.account.open(name)
        except store_errors.NoSuchFolder:
            if trycreate:
                raise No("Mailbox does not exist", "TRYCREATE") from None
            raise No("Mailbox does not exist", "NONEXISTENT") from None
        except (store_errors.StoreError, store_errors.UnsafeName) as e:
            raise store_error(e) from None

    def _expunged_meanwhile(self, word: str) -> str:
        """The OK text when messages the command named were expunged by another session
        (not yet reported): rev2 names the case with RFC 9051 7.1's [EXPUNGEISSUED]."""
        code = "[EXPUNGEISSUED] " if self.rev2 else ""
        return f"{code}Some messages were expunged meanwhile; {word} completed"

    def _require_writable(self) -> None:
        if self.selected is None or self.selected.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")

    # -- SELECT / EXAMINE ------------------------------------------------------------

    def do_SELECT(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._select(cmd, readonly=False))

    def do_EXAMINE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._select(cmd, readonly=True))

    async def _select(self, cmd: Command, readonly: bool) -> str:
        params = self.select_params(cmd)  # RFC 7162 (CONDSTORE) / (QRESYNC (...)): BAD before closing
        if self.selected is not None and (self.qresync or self.rev2):
            self.write(b"* OK [CLOSED] Previous mailbox closed\r\n")  # RFC 7162 3.2.11, RFC 9051 7.1
        self._close_selected()
        name = self._name(cmd.args["mailbox"])
        folder = await self._open(name)
        view = SelectedMailbox(folder, readonly)
        view.rev2 = self.rev2
        try:
            await folder.sync()
            view.open()
        except BaseException:
            view.close()
            raise
        if self.transport is None or self._closing:
            view.close()
            return "gone"
        self.selected = view
        self.state = "selected"
        view.listen(self._folder_changed)
        records = folder.messages()
        out = [view.flags_header()]
        if self.rev2:
            # RFC 9051 6.3.2: EXISTS and the mailbox's LIST; no RECENT, no [UNSEEN n].
            out.append(b"* %d EXISTS\r\n" % view.exists + self.select_list_line(name))
        else:
            out.append(b"* %d EXISTS\r\n* %d RECENT\r\n" % (view.exists, len(view.recent)))
            for i, r in enumerate(records):
                if "\\Seen" not in r.flags:
                    out.append(b"* OK [UNSEEN %d] First unseen\r\n" % (i + 1))
                    break
        out.append(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uidvalidity)
        out.append(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uidnext)
        out.append(self.select_lines(view, params))
        self.write(b"".join(out))
        if params.qresync is not None:
            await self.qresync_select(view, params.qresync)
        return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {'EXAMINE' if readonly else 'SELECT'} completed"

    def _folder_changed(self, *args: Any) -> None:
        """The shared folder changed (any session, a delivery): push now when idling."""
        if self._idle is None or self.selected is None:
            return
        sel = self.selected

        def push(_: Any) -> None:
            if self.selected is sel and self._idle is not None:
                sel.report(self.write, expunges=True)

        sel.refresh().addCallback(push).addErrback(lambda f: log.failure("imap: idle update failed", f))

    # -- IDLE (RFC 2177) ---------------------------------------------------------------

    _idle: defer.Deferred | None = None
    _idle_poll: task.LoopingCall | None = None

    def do_IDLE(self, cmd: Command) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()

        def step(line: bytes) -> None:
            if line.upper() == b"DONE":
                waiter.callback("IDLE terminated")
            else:
                waiter.errback(Failure(Bad("Expected DONE")))

        self._continuation = step
        self._idle = waiter
        self.write(b"+ idling\r\n")
        if self.selected is not None:
            self.selected.report(self.write, expunges=True)
            poll = task.LoopingCall(self._folder_changed)
            poll.start(self.svc.idle_check_interval, now=False)
            self._idle_poll = poll

        def finished(result: Any) -> Any:
            self._idle = None
            if self._idle_poll is not None:
                if self._idle_poll.running:
                    self._idle_poll.stop()
                self._idle_poll = None
            return result

        return waiter.addBoth(finished)

    # -- folders ------------------------------------------------------------------------

    def do_CREATE(self, cmd: Command) -> defer.Deferred:
        name = self._name(cmd.args["mailbox"])
        if name.endswith(DELIM):
            name = name.rstrip(DELIM)
        if name.upper() == "INBOX":
            raise No("INBOX exists already", "ALREADYEXISTS")
        if cmd.args["use"]:
            raise No("Special-use folders are fixed on this server", "USEATTR")
        return self.account.create(name).addCallbacks(lambda _: "CREATE completed", trap_store)

    def do_DELETE(self, cmd: Command) -> defer.Deferred:
        name = self._name(cmd.args["mailbox"])
        if name == "INBOX":
            raise No("INBOX cannot be deleted", "CANNOT")
        d = self.account.delete(name)
        if self.rev2:
            d.addErrback(_has_children)  # RFC 9051 7.1 (rev1 keeps RFC 5530's CANNOT)
        return d.addCallbacks(lambda _: "DELETE completed", trap_store)

    def do_RENAME(self, cmd: Command) -> defer.Deferred:
        old = self._name(cmd.args["old"])
        new = self._name(cmd.args["new"])

        def renamed(_: Any) -> str:
            if self.rev2:
                self.write(self.oldname_line(old, new))
            return "RENAME completed"

        return self.account.rename(old, new).addCallbacks(renamed, trap_store)

    def do_SUBSCRIBE(self, cmd: Command) -> defer.Deferred:
        name = self._name(cmd.args["mailbox"])
        return self.account.subscribe(name, True).addCallbacks(lambda _: "SUBSCRIBE completed", trap_store)

    def do_UNSUBSCRIBE(self, cmd: Command) -> defer.Deferred:
        name = self._name(cmd.args["mailbox"])
        return self.account.subscribe(name, False).addCallbacks(lambda _: "UNSUBSCRIBE completed", trap_store)

    def do_NAMESPACE(self, cmd: Command) -> None:
        self.write(b'* NAMESPACE (("" ".")) NIL NIL\r\n')

    def do_ENABLE(self, cmd: Command) -> None:
        # RFC 5161: ENABLED lists what this command newly turned on.  UTF8=ACCEPT
        # (RFC 6855): mailbox names in UTF-8 from now on; message data is sent as
        # stored either way.
        enabled = []
        if "UTF8=ACCEPT" in cmd.args["capabilities"] and not self.utf8_accept:
            # (IMAP4rev2 turns UTF-8 names on too, but UTF8=ACCEPT is its own extension.)
            self.utf8 = self.utf8_accept = True
            enabled.append(b" UTF8=ACCEPT")
        enabled += self.enable_words(cmd.args["capabilities"])
        enabled += self.enable_rev2(cmd.args["capabilities"])  # RFC 9051 (imap/rev2.py)
        self.write(b"* ENABLED" + b"".join(enabled) + b"\r\n")

    def _encode_name(self, name: str) -> bytes:
        """A folder name as LIST patterns match it: UTF-8 or modified UTF-7."""
        return name.encode("utf-8") if self.utf8 else mutf7.encode(name)

    def do_LIST(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._list(cmd, lsub=False))

    def do_LSUB(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._list(cmd, lsub=True))

    async def _list(self, cmd: Command, lsub: bool) -> str:
        word = "LSUB" if lsub else "LIST"
        args = cmd.args
        ref_raw, pat_raws = args["reference"], args["patterns"]
        select, returns = set(args["select"]), set(args["return"])
        if args["extended"]:
            _check_list_options(lsub, select, returns)
        if len(pat_raws) == 1 and not pat_raws[0]:
            # RFC 3501 6.3.8: the delimiter and the root of the reference.
            root = ref_raw.split(DELIM.encode())[0] if ref_raw else b""
            self.write(b'* %s (\\Noselect) "." %s\r\n' % (word.encode(), wire.string(root)))
            return f"{word} completed"
        rxs = []
        for pat_raw in pat_raws:
            pattern = ref_raw + pat_raw if not pat_raw.upper().startswith(b"INBOX") else pat_raw
            if pattern[:5].upper() == b"INBOX" and (len(pattern) == 5 or pattern[5:6] in (b".", b"*", b"%")):
                pattern = b"INBOX" + pattern[5:]
            rxs.append(_pattern_regex(pattern))
        rx = rxs[0] if len(rxs) == 1 else _AnyOf(rxs)
        infos = await self.account.list_folders()
        subscribed_only = lsub or "SUBSCRIBED" in select
        special_only = "SPECIAL-USE" in select
        show_subscribed = "SUBSCRIBED" in select or "SUBSCRIBED" in returns
        status_items = [r[7:] for r in args["return"] if r.startswith("STATUS:")] if not lsub else []
        recursive = "RECURSIVEMATCH" in select and "SUBSCRIBED" in select
        out = []
        known = {i.name: i for i in infos}
        emitted: set[str] = set()
        subs: list[str] = await self.account.subscriptions() if (lsub or "SUBSCRIBED" in select) else []
        # RFC 5258 RECURSIVEMATCH: a listed name with a subscribed descendant that the
        # patterns do not list gets CHILDINFO ("SUBSCRIBED").
        childinfo: set[str] = set()
        if recursive:
            for sub in subs:
                if rx.match(self._encode_name(sub)):
                    continue
                parts = sub.split(DELIM)
                childinfo.update(DELIM.join(parts[:i]) for i in range(1, len(parts)))
        for info in infos:
            enc = self._encode_name(info.name)
            if not rx.match(enc):
                continue
            selected = not (subscribed_only and not info.subscribed) and not (special_only and not info.special_use)
            extra = b""
            if info.name in childinfo and not lsub:
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
            elif not selected:
                continue
            emitted.add(info.name)
            out.append(b"* %s %s \".\" %s%s\r\n" % (word.encode(), _attrs(info, lsub, show_subscribed),
                                                   wire.mailbox(info.name, self.utf8), extra))
            if status_items and not info.noselect:
                # RFC 5819: the STATUS of each selectable mailbox right after its LIST
                # line; one that cannot be read (deleted meanwhile) is left out.
                try:
                    out.append(await self._status_line(info.name, status_items))
                except No as e:
                    log.info("imap: LIST-STATUS skipped {name}: {why}", name=info.name, why=str(e))
        if not lsub and "SUBSCRIBED" in select:
            # RFC 5258 3.1: subscribed names that do not exist are listed \NonExistent,
            # as are missing parents that carry CHILDINFO.
            missing = [n for n in dict.fromkeys(list(subs) + sorted(childinfo)) if n not in known]
            for name in missing:
                if special_only or not rx.match(self._encode_name(name)):
                    continue
                attrs = b"(\\NonExistent \\Subscribed)" if name in subs else b"(\\NonExistent)"
                if self.rev2:  # RFC 9051 7.3.1: the child attributes on every name
                    prefix = name + DELIM
                    kids = name in childinfo or any(n.startswith(prefix) for n in known)
                    attrs = attrs[:-1] + (b" \\HasChildren)" if kids else b" \\HasNoChildren)")
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))' if name in childinfo else b""
                emitted.add(name)
                out.append(b'* LIST %s "." %s%s\r\n' % (attrs, wire.mailbox(name, self.utf8), extra))
        if lsub:
            # '%' matching a parent of a subscribed folder lists the parent as \Noselect.
            for s in subs:
                if rx.match(self._encode_name(s)):
                    continue  # listed itself; its parents only show under '%'
                parts = s.split(DELIM)
                for i in range(1, len(parts)):
                    parent = DELIM.join(parts[:i])
                    if parent in emitted:
                        continue
                    if rx.match(self._encode_name(parent)) and not (parent in known and known[parent].subscribed):
                        emitted.add(parent)
                        out.append(b'* LSUB (\\Noselect) "." %s\r\n' % wire.mailbox(parent, self.utf8))
            for s in subs:
                if s not in known and s not in emitted and rx.match(self._encode_name(s)):
                    emitted.add(s)
                    out.append(b'* LSUB () "." %s\r\n' % wire.mailbox(s, self.utf8))
        self.write(b"".join(out))
        return f"{word} completed"

    # -- STATUS ------------------------------------------------------------------------

    def do_STATUS(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._status(cmd))

    async def _status(self, cmd: Command) -> str:
        name = self._name(cmd.args["mailbox"])
        if "HIGHESTMODSEQ" in cmd.args["items"]:
            self.enable_condstore()  # a CONDSTORE-enabling command (RFC 7162 3.1)
        self.write(await self._status_line(name, cmd.args["items"]))
        return "STATUS completed"

    async def _status_line(self, name: str, items: list[str]) -> bytes:
        """``* STATUS name (ITEM n ...)`` for folder ``name`` (STATUS, and LIST-STATUS)."""
        folder = await self._open(name)
        try:
            await folder.sync()
            records = folder.messages()
            vals = []
            for item in items:
                if item == "MESSAGES":
                    v = len(records)
                elif item == "RECENT":
                    v = folder.recent_count()  # not yet claimed by a read-write SELECT
                elif item == "UIDNEXT":
                    v = folder.uidnext
                elif item == "UIDVALIDITY":
                    v = folder.uidvalidity
                elif item == "UNSEEN":
                    v = sum(1 for r in records if "\\Seen" not in r.flags)
                elif item == "SIZE":
                    v = sum(r.size for r in records)  # RFC 8438: the RFC822.SIZEs added up
                elif item == "HIGHESTMODSEQ":
                    v = folder.highest_modseq
                elif item == "DELETED":  # RFC 9208 4.4 (and RFC 9051)
                    v = sum(1 for r in records if "\\Deleted" in r.flags)
                elif item == "DELETED-STORAGE":  # RFC 9208 4.4: KiB an EXPUNGE would free
                    v = _kib(sum(r.stored_size for r in records if "\\Deleted" in r.flags))
                else:  # APPENDLIMIT
                    v = self.svc.append_limit
                vals.append(f"{item} {v}")
        finally:
            linger(folder)
        return b"* STATUS %s (%s)\r\n" % (wire.mailbox(name, self.utf8), " ".join(vals).encode())

    # -- APPEND --------------------------------------------------------------------------

    def do_APPEND(self, cmd: Command) -> defer.Deferred:
        d = defer.ensureDeferred(self._append(cmd))
        spooled = [m for _, _, m in cmd.args["messages"] if hasattr(m, "discard")]
        if spooled:  # big literals spooled to files: remove them

            def cleanup(result: Any) -> Any:
                for message in spooled:
                    message.discard()
                return result

            d.addBoth(cleanup)
        return d

    async def _append(self, cmd: Command) -> str:
        """APPEND of one message, or of several (MULTIAPPEND, RFC 3502): every message
        is checked before any is stored, then all are stored or none, and APPENDUID
        (RFC 4315) names the new UIDs as a set."""
        name = self._name(cmd.args["mailbox"])
        items = []
        for flags, date_text, message in cmd.args["messages"]:
            date = None
            if date_text is not None:
                try:
                    date = msgdata.parse_internaldate(date_text)
                except ValueError:
                    raise Bad("Invalid date-time in APPEND") from None
            if not message:
                raise No("Empty message", "CANNOT")
            # bytes, or a SpooledLiteral's file
            items.append((getattr(message, "path", message), normalize_flags(flags), date))
        folder = await self._open(name, trycreate=True)
        try:
            # RFC 9208 4.3: messages that would exceed the quota are refused, none stored.
            over = await self.account.quota_refusal(sum(len(m) for _, _, m in cmd.args["messages"]), len(items))
            if over is not None:
                raise No(over, "OVERQUOTA")
            if len(items) == 1:
                uids = [await folder.append(*items[0])]
            else:
                uids = await folder.append_many(items)
            uidvalidity = folder.uidvalidity
        except store_errors.StoreError as e:
            raise store_error(e) from None
        finally:
            linger(folder)
        return f"[APPENDUID {uidvalidity} {uid_set_text(uids).decode()}] APPEND completed"

    # -- selected state ------------------------------------------------------------------

    def do_CHECK(self, cmd: Command) -> defer.Deferred:
        return self.selected.refresh().addCallback(lambda _: "CHECK completed")

    def do_CLOSE(self, cmd: Command) -> defer.Deferred | str:
        sel = self.selected
        if sel.readonly:
            self._close_selected()
            return "CLOSE completed"
        deleted = [r.uid for _, r in sel.records_for(list(range(1, sel.exists + 1))) if "\\Deleted" in r.flags]

        def closed(_: Any) -> str:
            self._close_selected()
            return "CLOSE completed"

        if not deleted:
            return closed(None)
        return sel.folder.expunge(deleted).addCallbacks(closed, trap_store)

    def do_UNSELECT(self, cmd: Command) -> str:
        self._close_selected()
        return "UNSELECT completed"

    def do_EXPUNGE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._expunge(None))

    def do_UID_EXPUNGE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._expunge(cmd.args["set"]))

    async def _expunge(self, uidset: Any) -> str:
        self._require_writable()
        sel = self.selected
        await sel.refresh()
        seqs = list(range(1, sel.exists + 1)) if uidset is None else sel.seqs_for(uidset, uid=True)
        uids = [r.uid for _, r in sel.records_for(seqs) if "\\Deleted" in r.flags]
        if uids:
            try:
                done = await sel.folder.expunge(uids)
            except store_errors.StoreError as e:
                raise store_error(e) from None
            sel.forget_expunged(done if done is not None else uids, self.write)
        return self.expunge_code() + "EXPUNGE completed"

    # SEARCH
    def do_SEARCH(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._search(cmd, uid=False))

    def do_UID_SEARCH(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._search(cmd, uid=True))

    async def _search(self, cmd: Command, uid: bool) -> str:
        tokens = cmd.args["tokens"]
        returns = _search_returns(tokens)  # None: a plain RFC 3501 SEARCH
        if returns is not None:
            tokens = tokens[2:]
        elif self.rev2:
            returns = {"ALL"}  # RFC 9051 6.4.4: no RETURN means ALL, answered by ESEARCH
        sel = self.selected
        try:
            key = search.parse(tokens)
        except search.BadCharset:
            if returns is not None and "SAVE" in returns:
                sel.saved = frozenset()  # RFC 5182 2.1: a SAVE answered NO empties $
            raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)") from None
        except search.SearchSyntaxError as e:
            raise Bad(f"SEARCH: {e}") from None
        found = await self._search_matches(key, uid)
        word = f"{'UID ' if uid else ''}SEARCH completed"
        modseq = None
        if any(isinstance(k, search.ModSeq) for k in search.iter_keys(key)):
            self.enable_condstore()  # RFC 7162 3.1.5: the highest modseq of what was found
            modseq = self.search_modseq(found, uid)
        if returns is None:
            tail = b" (MODSEQ %d)\r\n" % modseq if modseq else b"\r\n"
            self.write(b"* SEARCH" + b"".join(b" %d" % n for n in found) + tail)
            return word
        if "SAVE" in returns:
            # RFC 5182 2.4: with MIN and/or MAX only those are kept, else every match.
            keep = found
            if found and ("MIN" in returns or "MAX" in returns):
                keep = ([found[0]] if "MIN" in returns else []) + ([found[-1]] if "MAX" in returns else [])
            sel.saved = frozenset(keep if uid else [sel.uids[n - 1] for n in keep])
            if returns == {"SAVE"}:
                return word  # SAVE alone answers no ESEARCH (RFC 5182 2.4)
        line = esearch_response(cmd.tag, uid, returns, found)
        if modseq:
            line = line[:-2] + b" MODSEQ %d\r\n" % modseq
        self.write(line)
        return word

    async def _search_matches(self, key: search.Key, uid: bool) -> list[int]:
        """The sequence numbers (or UIDs) of the selected messages ``key`` matches, ascending."""
        sel = self.selected
        uids = sel.uids
        matcher = search.Matcher(key, max_seq=len(uids), max_uid=uids[-1] if len(uids) else 0, saved=sel.saved)
        pairs = sel.records_for(list(range(1, len(uids) + 1)))
        found: list[int] = []
        recent = sel.recent
        folder = sel.folder
        needs = matcher.needs
        if needs == "none":
            for seq, r in pairs:
                if matcher.match(_SearchRecord(r, r.uid in recent), seq, None):
                    found.append(r.uid if uid else seq)
        elif needs == "header" and _cached_fields_suffice(key):
            found = await self._search_cached_headers(matcher, key, pairs, uid)
        else:
            # Reading message files blocks: do it in the worker pool, in batches.
            def scan(batch: list[tuple[int, MessageRecord]]) -> list[int]:
                hits = []
                for seq, r in batch:
                    src = _Source(folder, r.uid)
                    try:
                        if matcher.match(_SearchRecord(r, r.uid in recent), seq, src):
                            hits.append(r.uid if uid else seq)
                    except store_errors.MessageGone:
                        continue
                return hits

            step = 2000
            for i in range(0, len(pairs), step):
                found.extend(await folder.workers.run(scan, pairs[i : i + step]))
        return found

    async def _search_cached_headers(self, matcher: search.Matcher, matcher_key: Any, pairs: list[tuple[int, MessageRecord]],
                                     uid: bool) -> list[int]:
        """A search on From/To/Cc/Bcc/Subject: the fields come from the folder cache
        (read from the files in the worker pool on a miss, then cached)."""
        sel = self.selected
        folder = sel.folder
        recent = sel.recent
        has = folder.has_search_header
        missing = [r for _, r in pairs if not has(r.uid)]

        def load(batch: list[MessageRecord]) -> list[tuple[int, bytes | None]]:
            out: list[tuple[int, bytes | None]] = []
            for r in batch:
                try:
                    out.append((r.uid, folder.read_header(r.uid)))
                except store_errors.MessageGone:
                    out.append((r.uid, None))
            return out

        for i in range(0, len(missing), 2000):
            for u, data in await folder.workers.run(load, missing[i : i + 2000]):
                if data is not None:
                    folder.remember_header(u, data)
        cache_get = folder.cache_get
        found = []
        # One record and one source object, refilled per message (the matcher keeps neither).
        rec = _SearchRecord(None, False)
        src = _Header(b"")
        match = matcher.match
        needle = _ascii_needle(matcher_key)
        for seq, r in pairs:
            v = cache_get(r.uid, SEARCH_CACHE_KEY)
            if v is None:
                continue  # vanished meanwhile
            if needle is not None and needle not in v.lower() and v.isascii() and "=?" not in v:
                # Plain ASCII fields without encoded words decode to themselves, so a
                # needle absent from the raw text cannot match (see _ascii_needle).
                continue
            rec.fill(r, r.uid in recent)
            src.data = v.encode("latin-1")
            if match(rec, seq, src):
                found.append(r.uid if uid else seq)
        return found

    # FETCH
    def do_FETCH(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._fetch(cmd, uid=False))

    def do_UID_FETCH(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._fetch(cmd, uid=True))

    async def _stream_index_lines(self, plan: FetchPlan, pairs: Iterable[tuple[int, MessageRecord]],
                                  recent: set[int]) -> bool:
        """Write index-only FETCH lines (FLAGS, UID, sizes...) 2,000 at a time, each
        piece sent before the next is made (drained() flushes the cork), so that a
        client parsing them reads while the server formats: 10,005 lines of UID FETCH
        1:* (FLAGS) to imaplib took 45 ms against Dovecot's 39 when all were sent at
        the end.  False when the connection closed meanwhile."""
        it = iter(pairs)
        while True:
            lines = plan.render_index_only(islice(it, _INDEX_LINES), recent)
            if lines:
                self.write(b"".join(lines))
            if len(lines) < _INDEX_LINES:
                return True
            await self.drained()
            if self._closing:
                return False

    async def _fetch(self, cmd: Command, uid: bool) -> str:
        sel = self.selected
        atts, changedsince = await self.fetch_modifiers(cmd, uid)  # RFC 7162 CHANGEDSINCE / VANISHED
        try:
            plan = FetchPlan(atts, uid)
        except ValueError as e:
            raise Bad(f"Invalid section: {e}") from None
        try:
            seqs = sel.seqs_for(cmd.args["set"], uid)
        except ValueError as e:
            raise Bad(str(e)) from None
        if plan.index_only and changedsince is None and seqs and seqs[-1] - seqs[0] + 1 == len(seqs) \
                and sel.in_sync() and not (plan.sets_seen and not sel.readonly):
            # The sync command, UID FETCH 1:* (FLAGS), on a view in sync: the records
            # in a row, without building a (seq, record) pair for each (10,000: 0.6 ms).
            sel.announce_keywords(self.write)
            if not await self._stream_index_lines(plan, zip(seqs, sel.folder.messages()[seqs[0] - 1 : seqs[-1]]),
                                                  sel.recent):
                return "gone"
            return f"{'UID ' if uid else ''}FETCH completed"
        pairs = sel.records_for(seqs)
        missing = len(pairs) != len(seqs)
        if changedsince is not None:
            pairs = [(s, r) for s, r in pairs if r.modseq > changedsince]
        seen_set: set[int] = set()
        if plan.sets_seen and not sel.readonly:
            unseen = [r.uid for _, r in pairs if "\\Seen" not in r.flags]
            if unseen:
                await self._set_flags(unseen, ["\\Seen"], "+")
                seen_set = set(unseen)
                pairs = sel.records_for([s for s, _ in pairs])
        sel.announce_keywords(self.write)  # a keyword another session added, before FETCH shows it
        folder = sel.folder
        recent = sel.recent
        if plan.index_only and not seen_set:
            if not await self._stream_index_lines(plan, pairs, recent):
                return "gone"
            if missing:
                return self._expunged_meanwhile("FETCH")
            return f"{'UID ' if uid else ''}FETCH completed"

        # Files read ahead in the worker pool (many messages: the reactor must not stall
        # on thousands of reads); a single small message is read inline.
        ahead: dict[int, bytes] = {}
        heads: dict[int, bytes] = {}
        header_only = not plan.needs_message and plan.cached == ["envelope"]

        def must_read(r: MessageRecord) -> bool:
            return plan.needs_message or any(folder.cache_get(r.uid, k) is None for k in plan.cached)

        def read_many(batch: list[MessageRecord]) -> list[tuple[int, bytes | None]]:
            got: list[tuple[int, bytes | None]] = []
            for r in batch:
                try:
                    got.append((r.uid, folder.read_header(r.uid) if header_only else folder.read_message(r.uid)))
                except store_errors.MessageGone:
                    got.append((r.uid, None))
            return got

        def read(r: MessageRecord) -> bytes:
            data = ahead.pop(r.uid, None)
            return data if data is not None else folder.read_message(r.uid)

        def read_head(r: MessageRecord) -> bytes:
            head = heads.pop(r.uid, None)
            if head is None:
                head = folder.read_header(r.uid)
            folder.remember_header(r.uid, head)
            return head

        def cache(r: MessageRecord, key: str, compute: Callable[[], bytes]) -> bytes:
            return folder.cached(r.uid, key, compute)

        def was_read(r: MessageRecord, stored: bytes) -> None:
            # The file is in hand: keep its search fields too (SEARCH FROM/SUBJECT...).
            if not folder.has_search_header(r.uid):
                header, _ = mime.split_header(stored)
                folder.remember_header(r.uid, header)

        out: list[bytes] = []
        size = 0
        next_ahead = 0
        for i, (seq, r) in enumerate(pairs):
            if i == next_ahead:
                # The next window: up to READ_AHEAD messages or READ_AHEAD_BYTES.
                want, total, j = [], 0, i
                while j < len(pairs) and len(want) < READ_AHEAD and total < READ_AHEAD_BYTES:
                    r2 = pairs[j][1]
                    if must_read(r2):
                        want.append(r2)
                        total += 8192 if header_only else r2.size
                    j += 1
                next_ahead = j
                if len(want) > 1 or total > 256 * 1024:
                    for u, data in await folder.workers.run(read_many, want):
                        if data is not None:
                            (heads if header_only else ahead)[u] = data
            try:
                line = plan.render(seq, r, r.uid in recent, read, read_head, cache, r.uid in seen_set,
                                   was_read if plan.cached else None)
            except store_errors.MessageGone:
                missing = True
                continue
            out.extend(line)
            size += sum(len(piece) for piece in line)
            if size > 256 * 1024:
                self.write_pieces(out)
                out, size = [], 0
                await self.drained()
                if self._closing:
                    return "gone"
        if out:
            self.write_pieces(out)
        if missing:
            return self._expunged_meanwhile("FETCH")
        return f"{'UID ' if uid else ''}FETCH completed"

    async def _set_flags(self, uids: list[int], flags: list[str], mode: str,
                         unchangedsince: int | None = None) -> Any:
        """Fires with the changed records; with ``unchangedsince`` (RFC 7162) with
        (changed records, UIDs left alone because they changed since)."""
        sel = self.selected
        modified: list[int] = []
        try:
            if unchangedsince is None:
                changed = await sel.folder.store_flags(uids, flags, mode)
            else:
                changed, modified = await sel.folder.store_flags_unchanged_since(uids, flags, mode, unchangedsince)
        except store_errors.StoreError as e:
            raise store_error(e) from None
        # Our own change is answered by the command itself, not again as news; what
        # others changed meanwhile still is.  New keywords are announced first.
        sel.note_own_changes(changed)
        sel.announce_keywords(self.write)
        return changed if unchangedsince is None else (changed, modified)

    # STORE
    def do_STORE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._store(cmd, uid=False))

    def do_UID_STORE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._store(cmd, uid=True))

    async def _store(self, cmd: Command, uid: bool) -> str:
        self._require_writable()
        sel = self.selected
        a = cmd.args
        flags = normalize_flags(a["flags"])
        unchangedsince = self.store_modifier(cmd)  # RFC 7162 UNCHANGEDSINCE
        try:
            seqs = sel.seqs_for(a["set"], uid)
        except ValueError as e:
            raise Bad(str(e)) from None
        pairs = sel.records_for(seqs)
        changed: list[MessageRecord] = []
        modified: list[int] = []
        if pairs and unchangedsince is None:
            changed = await self._set_flags([r.uid for _, r in pairs], flags, a["mode"])
        elif pairs:
            changed, modified = await self._set_flags([r.uid for _, r in pairs], flags, a["mode"], unchangedsince)
        if self.condstore:
            skip = set(modified)
            pairs = [p for p in sel.records_for([s for s, _ in pairs]) if p[1].uid not in skip]
            self.write(b"".join(condstore.store_fetch_lines(pairs, sel.recent, uid, a["silent"],
                                                             {r.uid for r in changed})))
        elif not a["silent"] or uid:
            pairs = sel.records_for([s for s, _ in pairs])
            if not a["silent"]:
                self.write(b"".join(flag_fetch_lines(pairs, sel.recent, uid)))
        if modified:
            return self.modified_code(modified, uid) + "Conditional STORE failed"
        if len(pairs) != len(seqs):
            return self._expunged_meanwhile("STORE")
        return f"{'UID ' if uid else ''}STORE completed"

    # COPY / MOVE
    def do_COPY(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._copy(cmd, uid=False, move=False))

    def do_UID_COPY(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._copy(cmd, uid=True, move=False))

    def do_MOVE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._copy(cmd, uid=False, move=True))

    def do_UID_MOVE(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._copy(cmd, uid=True, move=True))

    async def _copy(self, cmd: Command, uid: bool, move: bool) -> str:
        if move:
            self._require_writable()
        sel = self.selected
        word = ("UID " if uid else "") + ("MOVE" if move else "COPY")
        try:
            seqs = sel.seqs_for(cmd.args["set"], uid)
        except ValueError as e:
            raise Bad(str(e)) from None
        name = self._name(cmd.args["mailbox"])
        dest = await self._open(name, trycreate=True)
        try:
            pairs = sel.records_for(seqs)
            uids = [r.uid for _, r in pairs]
            if not uids:
                return f"{word} completed (no messages)"
            if not move:  # a MOVE inside the account's one quota root frees what it takes
                over = await self.account.quota_refusal(
                    sum(r.stored_size for _, r in pairs), len(uids))
                if over is not None:
                    raise No(over, "OVERQUOTA")
            try:
                if move:
                    mapping = await sel.folder.move(uids, dest)
                else:
                    mapping = await sel.folder.copy(uids, dest)
            except store_errors.StoreError as e:
                raise store_error(e) from None
            code = b"COPYUID %d %s %s" % (dest.uidvalidity, uid_set_text(s for s, _ in mapping),
                                         uid_set_text(d for _, d in mapping))
        finally:
            linger(dest)
        if move:
            self.write(b"* OK [" + code + b"] Moved\r\n")
            sel.forget_expunged([s for s, _ in mapping], self.write)
            return f"{word} completed"
        return f"[{code.decode()}] {word} completed"


def _has_children(f: Failure) -> Any:
    """IMAP4rev2's code for a \\Noselect name with children that cannot be deleted."""
    f.trap(store_errors.FolderHasChildren)
    raise No(str(f.value) or "Mailbox has children", "HASCHILDREN")


SEARCH_RETURN_OPTIONS = ("MIN", "MAX", "COUNT", "ALL", "SAVE")


def _search_returns(tokens: list[Any]) -> set[str] | None:
    """The result options of ``SEARCH RETURN (...)`` (RFC 4731, SAVE of RFC 5182), or
    None for a plain SEARCH.  ``RETURN ()`` means ALL; an unknown option is BAD."""
    if not (tokens and isinstance(tokens[0], str) and tokens[0].upper() == "RETURN"):
        return None
    if len(tokens) < 2 or not isinstance(tokens[1], list):
        raise Bad("SEARCH RETURN needs a list of result options")
    opts = set()
    for t in tokens[1]:
        if not isinstance(t, str) or t.upper() not in SEARCH_RETURN_OPTIONS:
            raise Bad(f"Unknown SEARCH result option {str(t)[:20]}")
        opts.add(t.upper())
    return opts or {"ALL"}


def esearch_response(tag: bytes, uid: bool, returns: set[str], found: list[int]) -> bytes:
    """``* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [COUNT n] [ALL set]`` (RFC 4731 3.1):
    MIN, MAX and ALL are left out when nothing matched, COUNT is then 0.  ``found`` is
    ascending."""
    out = [b'* ESEARCH (TAG "%s")' % tag]  # tag characters never need quoting
    if uid:
        out.append(b" UID")
    if found:
        if "MIN" in returns:
            out.append(b" MIN %d" % found[0])
        if "MAX" in returns:
            out.append(b" MAX %d" % found[-1])
    if "COUNT" in returns:
        out.append(b" COUNT %d" % len(found))
    if found and "ALL" in returns:
        out.append(b" ALL " + uid_set_text(found))
    return b"".join(out) + b"\r\n"


_LIST_SELECT = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"}


def _check_list_options(lsub: bool, select: set[str], returns: set[str]) -> None:
    """BAD for what RFC 5258 3 says a server must refuse: unknown selection or return
    options, RECURSIVEMATCH alone (or only with REMOTE), and any of it on LSUB."""
    if lsub:
        raise Bad("LSUB takes no LIST-EXTENDED options")
    unknown = select - _LIST_SELECT
    if unknown:
        raise Bad(f"Unknown LIST selection option {sorted(unknown)[0][:20]}")
    if "RECURSIVEMATCH" in select and not (select - {"RECURSIVEMATCH", "REMOTE"}):
        raise Bad("RECURSIVEMATCH needs another selection option")
    unknown = {r for r in returns if not r.startswith("STATUS:")} - _LIST_RETURN
    if unknown:
        raise Bad(f"Unknown LIST return option {sorted(unknown)[0][:20]}")


class _AnyOf:
    """Several LIST patterns (LIST-EXTENDED): a name matches if any of them does."""

    def __init__(self, rxs: list[re.Pattern[bytes]]) -> None:
        self.rxs = rxs

    def match(self, name: bytes) -> bool:
        return any(rx.match(name) for rx in self.rxs)


def _attrs(info: FolderInfo, lsub: bool, show_subscribed: bool) -> bytes:
    attrs = []
    if info.noselect:
        attrs.append("\\Noselect")
    if not lsub:
        attrs.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
        if info.special_use:
            attrs.append(info.special_use)
        if show_subscribed and info.subscribed:
            attrs.append("\\Subscribed")
    return ("(" + " ".join(attrs) + ")").encode("ascii")


def _pattern_regex(pattern: bytes) -> re.Pattern[bytes]:
    out = []
    for c in pattern:
        if c == 0x2A:
            out.append(b".*")
        elif c == 0x25:
            out.append(b"[^.]*")
        else:
            out.append(re.escape(bytes([c])))
    return re.compile(b"".join(out) + b"\\Z", re.S)


class _SearchRecord:
    """What search.Matcher wants of a message: the record plus this session's \\Recent."""

    __slots__ = ("uid", "flags", "keywords", "size", "internaldate", "recent", "modseq")

    def __init__(self, r: MessageRecord | None, recent: bool) -> None:
        if r is not None:
            self.fill(r, recent)

    def fill(self, r: MessageRecord, recent: bool) -> None:
        self.uid = r.uid
        self.flags = r.flags
        self.keywords = r.flags
        self.size = r.size
        self.internaldate = r.internaldate
        self.recent = recent
        self.modseq = r.modseq


class _Source:
    """A MessageSource reading one message of a folder (in the worker pool)."""

    __slots__ = ("folder", "uid")

    def __init__(self, folder: IFolder, uid: int) -> None:
        self.folder = folder
        self.uid = uid

    def header(self) -> bytes:
        return self.folder.read_header(self.uid)

    def message(self) -> bytes:
        return self.folder.read_message(self.uid)


class _Header:
    """A MessageSource that has only the cached search header fields."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def header(self) -> bytes:
        return self.data

    def message(self) -> bytes:
        raise AssertionError("a header-only search asked for the body")


def _ascii_needle(key: Any) -> str | None:
    """A string every matching message's cached header text must contain: the value of
    a header key that all matches need (the key itself, or one of an AND), when it is
    lower-case ASCII without white space (so it cannot span a folded line).  None when
    no such key.  (An address written with comments or quoting is in the cached text a
    second time as ENVELOPE shows it: see store.messages.search_fields.)"""
    keys = key.keys if isinstance(key, search.And) else (key,)
    for k in keys:
        if isinstance(k, search.Header) and k.value and k.value.isascii():
            v = k.value.lower()
            if not any(c.isspace() for c in v):
                return v
    return None


def _cached_fields_suffice(key: Any) -> bool:
    """Whether every header key of a search names a field in SEARCH_FIELDS (and no key
    needs the body or the whole header)."""
    if isinstance(key, search.Header):
        return key.name.encode("ascii", "replace").lower() in SEARCH_FIELDS and key.value != ""
    if isinstance(key, (search.Body, search.Text)):
        return False
    if isinstance(key, search.DateKey):
        return not key.sent
    if isinstance(key, search.And):
        return all(_cached_fields_suffice(k) for k in key.keys)
    if isinstance(key, search.Or):
        return _cached_fields_suffice(key.left) and _cached_fields_suffice(key.right)
    if isinstance(key, search.Not):
        return _cached_fields_suffice(key.key)
    return True


def _kib(octets: int) -> int:
    """RFC 9208 5.1: STORAGE is in units of 1024 octets; what is used is rounded up
    (a 1-octet message uses 1), so usage never reads as below a limit it reached."""
    return -(-octets // 1024)


class QuotaCommands:
    """RFC 9208 GETQUOTAROOT, GETQUOTA, SETQUOTA.  One quota root per account, named
    ``""``, covering all its folders; its limits come from the directory, so SETQUOTA
    is refused."""

    account: IMAPAccount

    def _quota_line(self, usage: Any) -> bytes:
        limits = self.account.limits
        parts = []
        if limits.storage is not None:
            parts.append(b"STORAGE %d %d" % (_kib(usage.bytes), limits.storage // 1024))
        if limits.messages is not None:
            parts.append(b"MESSAGE %d %d" % (usage.messages, limits.messages))
        return b'* QUOTA "" (' + b" ".join(parts) + b")\r\n"

    def do_GETQUOTAROOT(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._getquotaroot(cmd))

    async def _getquotaroot(self, cmd: Command) -> str:
        name = self._name(cmd.args["mailbox"])  # type: ignore[attr-defined]
        folder = await self._open(name)  # type: ignore[attr-defined]  # NO [NONEXISTENT] for a missing one
        linger(folder)
        if not self.account.limits:  # RFC 9208 4.2.2: a mailbox without a quota root
            self.write(b"* QUOTAROOT %s\r\n" % wire.mailbox(name, self.utf8))  # type: ignore[attr-defined]
            return "GETQUOTAROOT completed"
        usage = await self.account.usage()
        self.write(b'* QUOTAROOT %s ""\r\n' % wire.mailbox(name, self.utf8)  # type: ignore[attr-defined]
                   + self._quota_line(usage))
        return "GETQUOTAROOT completed"

    def do_GETQUOTA(self, cmd: Command) -> defer.Deferred:
        return defer.ensureDeferred(self._getquota(cmd))

    async def _getquota(self, cmd: Command) -> str:
        if cmd.args["root"] != b"" or not self.account.limits:
            raise No("No such quota root", "NONEXISTENT")
        self.write(self._quota_line(await self.account.usage()))  # type: ignore[attr-defined]
        return "GETQUOTA completed"

    def do_SETQUOTA(self, cmd: Command) -> None:
        raise No("Quotas are set in the directory, not over IMAP", "CANNOT")
