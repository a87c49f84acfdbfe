"""Running a checked Sieve script against one message for one recipient.

The interpreter walks the tree from :mod:`mailsuite.sieve.grammar` and collects
actions; it does nothing itself.  The caller (:mod:`mailsuite.sieve.delivery`) turns
the :class:`Outcome` into deliveries, redirects, a refusal or a vacation reply.  What
it needs from outside (included scripts, whether a folder exists, duplicate memory)
comes through :class:`ISieveHost`, so tests and ``mailsuite sieve test`` run it
without a store.

Runaway scripts are bounded: at most ``MAX_ACTIONS`` actions, ``MAX_REDIRECTS``
redirects, ``MAX_INCLUDE_DEPTH`` nested includes and ``MAX_INCLUDES`` included
scripts, ``MAX_STEPS`` evaluated commands and tests, and ``MAX_SECONDS`` of wall
time.  Exceeding one is a runtime error: the caller keeps the message in INBOX.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz
from typing import Any

from zope.interface import Interface

from mailsuite.sieve import match as m
from mailsuite.sieve.grammar import SET_MODIFIERS
from mailsuite.sieve.message import Message, addresses
from mailsuite.sieve.parser import Command, Test

MAX_ACTIONS = 32
MAX_REDIRECTS = 4
MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 32
MAX_STEPS = 100_000
MAX_SECONDS = 2.0
MAX_VARIABLE = 64 * 1024  # characters in one variable (RFC 5229: at least 4000)
MAX_VARIABLES = 256
PROTECTED_HEADERS = ("received", "auto-submitted")  # RFC 5293 section 7: never edited


class SieveRuntimeError(Exception):
    """The script cannot go on; its actions are dropped and the message kept."""


class ISieveHost(Interface):
    def load_script(location: str, name: str) -> Any:
        """A compiled script (``Script``) for include (":personal"/":global"), or None."""

    def mailbox_exists(name: str) -> bool:
        """Whether the recipient has this folder (RFC 5490 mailboxexists)."""

    def duplicate_seen(handle: str, key: str) -> bool:
        """Whether this (handle, id) was recorded within its period (RFC 7352)."""


@dataclass
class Script:
    name: str
    commands: list[Command]
    required: set[str]


@dataclass(frozen=True)
class Envelope:
    sender: str  # "" for <>
    recipient: str  # the RCPT TO address (envelope "to")
    account: str  # the local account the message is delivered to
    auth: str = ""


@dataclass
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass
class Vacation:
    reason: str
    subject: str | None
    from_: str | None
    addresses: list[str]
    mime: bool
    handle: str
    seconds: int


@dataclass
class Outcome:
    deliveries: list[FileInto] = field(default_factory=list)  # implicit keep resolved
    redirects: list[str] = field(default_factory=list)
    reject: str | None = None
    ereject: bool = False
    vacation: Vacation | None = None
    discarded: bool = False
    duplicates: list[tuple[str, str, int]] = field(default_factory=list)  # to record
    error: str | None = None
    log: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"error: {self.error} (message kept in INBOX)")
        for d in self.deliveries:
            flags = f" flags {' '.join(d.flags)}" if d.flags else ""
            out.append(f"store in {d.mailbox}{flags}{' (create)' if d.create else ''}")
        for r in self.redirects:
            out.append(f"redirect to <{r}>")
        if self.reject is not None:
            out.append(f"{'ereject' if self.ereject else 'reject'}: {self.reject}")
        if self.vacation is not None:
            out.append(f"vacation reply (if due): {self.vacation.subject or '(default subject)'}")
        if self.discarded and not self.deliveries and not self.redirects and self.reject is None:
            out.append("discard")
        return out


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


@dataclass
class _Frame:
    script: Script
    variables: dict[str, str] = field(default_factory=dict)
    match_vars: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


class Interpreter:
    """One run over the before/user/after scripts for one (message, recipient)."""

    def __init__(self, message: Message, envelope: Envelope, host: Any, now: float | None = None,
                 authserv_id: str = "") -> None:
        self.msg = message
        self.env = envelope
        self.host = host
        self.now = time.time() if now is None else now
        self.authserv_id = authserv_id
        self.actions: list[Any] = []
        self.implicit_keep = True
        self.keep_flags: tuple[str, ...] = ()
        self.redirects: list[str] = []
        self.reject: tuple[str, bool] | None = None
        self.vacation: Vacation | None = None
        self.duplicates: list[tuple[str, str, int]] = []
        self.globals: dict[str, str] = {}
        self.included: set[tuple[str, str]] = set()
        self.include_count = 0
        self.depth = 0
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self.log: list[str] = []
        self.explicit_keep = False

    # -- entry point -----------------------------------------------------------------

    def run(self, scripts: list[Script]) -> Outcome:
        """Run the scripts in order (global before, the user's, global after).  A stop
        in any of them ends the whole run (so an admin's "fileinto Junk; stop;" wins);
        actions and the implicit keep carry over from one script to the next."""
        try:
            for script in scripts:
                try:
                    self._run_script(script, _Frame(script))
                except _Stop:
                    break
        except (SieveRuntimeError, m.ComparatorError) as e:
            return Outcome(deliveries=[FileInto("INBOX")], error=str(e), log=self.log)
        out = Outcome(redirects=self.redirects, vacation=self.vacation, duplicates=self.duplicates, log=self.log)
        if self.reject is not None:
            out.reject, out.ereject = self.reject
        seen: dict[str, FileInto] = {}
        for a in self.actions:
            if isinstance(a, FileInto):
                key = a.mailbox.lower() if a.mailbox.upper() == "INBOX" else a.mailbox
                if key in seen:  # RFC 5228 4.1: one copy per mailbox; flags add up
                    seen[key].flags = tuple(dict.fromkeys(seen[key].flags + a.flags))
                    seen[key].create = seen[key].create or a.create
                else:
                    seen[key] = FileInto(a.mailbox, a.flags, a.create)
        if self.implicit_keep and self.reject is None:
            if "inbox" in seen:
                seen["inbox"].flags = tuple(dict.fromkeys(seen["inbox"].flags + self.keep_flags))
            else:
                seen["inbox"] = FileInto("INBOX", self.keep_flags)
        out.deliveries = list(seen.values())
        out.discarded = not self.implicit_keep
        return out

    def _run_script(self, script: Script, frame: _Frame) -> None:
        self.depth += 1
        if self.depth > MAX_INCLUDE_DEPTH:
            raise SieveRuntimeError(f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
        try:
            self._block(script.commands, frame)
        except _Return:
            pass
        finally:
            self.depth -= 1

    def _tick(self) -> None:
        """Every 64 steps: the step and time limits."""
        if self.steps > MAX_STEPS:
            raise SieveRuntimeError(f"script ran more than {MAX_STEPS} steps")
        if time.monotonic() > self.deadline:
            raise SieveRuntimeError(f"script ran longer than {MAX_SECONDS} seconds")

    # -- commands --------------------------------------------------------------------

    def _block(self, commands: list[Command], frame: _Frame) -> None:
        branch_taken = False
        for cmd in commands:
            self.steps += 1
            if self.steps & 63 == 0:
                self._tick()
            name = cmd.name
            if name == "if":
                branch_taken = self._test(cmd.tests[0], frame)
                if branch_taken:
                    self._block(cmd.block or [], frame)
                continue
            if name == "elsif":
                if not branch_taken:
                    branch_taken = self._test(cmd.tests[0], frame)
                    if branch_taken:
                        self._block(cmd.block or [], frame)
                continue
            if name == "else":
                if not branch_taken:
                    self._block(cmd.block or [], frame)
                branch_taken = True
                continue
            handler = getattr(self, "_cmd_" + name, None)
            if handler is not None:
                handler(cmd, frame)

    def _cmd_require(self, cmd: Command, frame: _Frame) -> None:
        pass

    def _cmd_stop(self, cmd: Command, frame: _Frame) -> None:
        raise _Stop()

    def _cmd_return(self, cmd: Command, frame: _Frame) -> None:
        raise _Return()

    def _action(self, action: Any) -> None:
        if len(self.actions) >= MAX_ACTIONS:
            raise SieveRuntimeError(f"more than {MAX_ACTIONS} actions")
        if self.reject is not None and not isinstance(action, str):
            raise SieveRuntimeError("reject cannot be combined with other actions")
        self.actions.append(action)

    def _flags_of(self, cmd: Command, frame: _Frame) -> tuple[str, ...]:
        if "flags" in cmd.tagged:
            return tuple(_split_flags([self._expand(f, frame) for f in cmd.tagged["flags"][1]]))
        if "imap4flags" in frame.script.required:
            return tuple(frame.flags)
        return ()

    def _cmd_keep(self, cmd: Command, frame: _Frame) -> None:
        self._action(FileInto("INBOX", self._flags_of(cmd, frame)))
        self.implicit_keep = False
        self.explicit_keep = True

    def _cmd_discard(self, cmd: Command, frame: _Frame) -> None:
        self.implicit_keep = False

    def _cmd_fileinto(self, cmd: Command, frame: _Frame) -> None:
        folder = self._expand(cmd.positional[0], frame)
        if not folder:
            raise SieveRuntimeError("fileinto with an empty folder name")
        self._action(FileInto(folder, self._flags_of(cmd, frame), "create" in cmd.tagged))
        if "copy" not in cmd.tagged:
            self.implicit_keep = False

    def _cmd_redirect(self, cmd: Command, frame: _Frame) -> None:
        target = self._expand(cmd.positional[0], frame).strip()
        found = addresses([target])
        if len(found) != 1 or "@" not in found[0]:
            raise SieveRuntimeError(f"redirect to an invalid address {target!r}")
        if len(self.redirects) >= MAX_REDIRECTS:
            raise SieveRuntimeError(f"more than {MAX_REDIRECTS} redirects")
        addr = found[0]
        if addr.lower() not in (r.lower() for r in self.redirects):
            self._action(("redirect", addr))
            self.redirects.append(addr)
        if "copy" not in cmd.tagged:
            self.implicit_keep = False

    def _cmd_reject(self, cmd: Command, frame: _Frame, extended: bool = False) -> None:
        if self.reject is not None:
            raise SieveRuntimeError("more than one reject")
        if self.explicit_keep or any(isinstance(a, FileInto) for a in self.actions) or self.redirects \
                or self.vacation is not None:
            raise SieveRuntimeError("reject cannot be combined with keep, fileinto, redirect or vacation")
        self.reject = (self._expand(cmd.positional[0], frame), extended)
        self.implicit_keep = False

    def _cmd_ereject(self, cmd: Command, frame: _Frame) -> None:
        self._cmd_reject(cmd, frame, extended=True)

    def _cmd_vacation(self, cmd: Command, frame: _Frame) -> None:
        if self.vacation is not None:
            raise SieveRuntimeError("more than one vacation")
        if self.reject is not None:
            raise SieveRuntimeError("vacation cannot be combined with reject")
        t = cmd.tagged
        if "period" in t:
            seconds = int(t["period"][1]) * (86400 if t["period"][0] == ":days" else 1)
        else:
            seconds = 7 * 86400
        reason = self._expand(cmd.positional[0], frame)
        subject = self._expand(t["subject"][1], frame) if "subject" in t else None
        from_ = self._expand(t["from"][1], frame) if "from" in t else None
        addrs = [self._expand(a, frame) for a in t["addresses"][1]] if "addresses" in t else []
        # RFC 5230 4.2: without :handle the reply is told apart by its arguments.
        handle = self._expand(t["handle"][1], frame) if "handle" in t else \
            "\0".join([reason, subject or "", from_ or "", " ".join(addrs), "mime" if "mime" in t else ""])
        self.vacation = Vacation(reason, subject, from_, addrs, "mime" in t, handle, seconds)
        if len(self.actions) >= MAX_ACTIONS:
            raise SieveRuntimeError(f"more than {MAX_ACTIONS} actions")

    def _cmd_set(self, cmd: Command, frame: _Frame) -> None:
        name = cmd.positional[0].lower()
        value = self._expand(cmd.positional[1], frame)
        mods = sorted((SET_MODIFIERS[g[3:]], g[3:]) for g in cmd.tagged if g.startswith("mod"))
        for _, mod in sorted(mods, reverse=True):
            if mod == ":lower":
                value = value.lower()
            elif mod == ":upper":
                value = value.upper()
            elif mod == ":lowerfirst":
                value = value[:1].lower() + value[1:]
            elif mod == ":upperfirst":
                value = value[:1].upper() + value[1:]
            elif mod == ":quotewildcard":
                value = re.sub(r"([*?\\])", r"\\\1", value)
            elif mod == ":length":
                value = str(len(value))
        self._set_var(frame, name, value)

    def _set_var(self, frame: _Frame, name: str, value: str) -> None:
        value = value[:MAX_VARIABLE]
        if name in self.globals or name.startswith("global."):
            self.globals[name.removeprefix("global.")] = value
            return
        if name not in frame.variables and len(frame.variables) >= MAX_VARIABLES:
            raise SieveRuntimeError(f"more than {MAX_VARIABLES} variables")
        frame.variables[name] = value

    def _cmd_global(self, cmd: Command, frame: _Frame) -> None:
        for name in cmd.positional[0]:
            self.globals.setdefault(name.lower(), "")

    def _flag_target(self, cmd: Command, frame: _Frame) -> tuple[str | None, list[str]]:
        if len(cmd.positional) == 2:
            return cmd.positional[0].lower(), _split_flags([self._expand(f, frame) for f in cmd.positional[1]])
        return None, _split_flags([self._expand(f, frame) for f in cmd.positional[0]])

    def _get_flags(self, frame: _Frame, var: str | None) -> list[str]:
        if var is None:
            return list(frame.flags)
        return _split_flags([self._lookup(frame, var)])

    def _put_flags(self, frame: _Frame, var: str | None, flags: list[str]) -> None:
        flags = list(dict.fromkeys(flags))
        if var is None:
            frame.flags = flags
            self.keep_flags = tuple(flags)
        else:
            self._set_var(frame, var, " ".join(flags))

    def _cmd_setflag(self, cmd: Command, frame: _Frame) -> None:
        var, flags = self._flag_target(cmd, frame)
        self._put_flags(frame, var, flags)

    def _cmd_addflag(self, cmd: Command, frame: _Frame) -> None:
        var, flags = self._flag_target(cmd, frame)
        have = self._get_flags(frame, var)
        lower = {f.lower() for f in have}
        self._put_flags(frame, var, have + [f for f in flags if f.lower() not in lower])

    def _cmd_removeflag(self, cmd: Command, frame: _Frame) -> None:
        var, flags = self._flag_target(cmd, frame)
        drop = {f.lower() for f in flags}
        self._put_flags(frame, var, [f for f in self._get_flags(frame, var) if f.lower() not in drop])

    def _cmd_include(self, cmd: Command, frame: _Frame) -> None:
        location = cmd.tagged.get("location", (":personal", None))[0][1:]
        name = self._expand(cmd.positional[0], frame)
        if "/" in name or name in ("", ".", ".."):
            raise SieveRuntimeError(f"include of an invalid script name {name!r}")
        key = (location, name)
        if "once" in cmd.tagged and key in self.included:
            return
        self.include_count += 1
        if self.include_count > MAX_INCLUDES:
            raise SieveRuntimeError(f"more than {MAX_INCLUDES} included scripts")
        script = self.host.load_script(location, name)
        if script is None:
            if "optional" in cmd.tagged:
                return
            raise SieveRuntimeError(f"included script {location}:{name} not found")
        self.included.add(key)
        self._run_script(script, _Frame(script, flags=list(frame.flags)))

    def _cmd_addheader(self, cmd: Command, frame: _Frame) -> None:
        name = self._expand(cmd.positional[0], frame)
        value = self._expand(cmd.positional[1], frame)
        if not re.fullmatch(r"[!-9;-~]+", name):
            raise SieveRuntimeError(f"addheader: invalid field name {name!r}")
        if name.lower() in PROTECTED_HEADERS:
            return  # RFC 5293 section 7: silently ignored
        self.msg.add_header(name, value, last="last" in cmd.tagged)

    def _cmd_deleteheader(self, cmd: Command, frame: _Frame) -> None:
        name = self._expand(cmd.positional[0], frame)
        if name.lower() in PROTECTED_HEADERS:
            return
        patterns = [self._expand(p, frame) for p in cmd.positional[1]] if len(cmd.positional) > 1 else None
        positions = [i for i, (n, v) in enumerate(self.msg.headers) if v is not None and n.lower() == name.lower()]
        if "index" in cmd.tagged:
            idx = int(cmd.tagged["index"][1])
            if "last" in cmd.tagged:
                idx = len(positions) - idx + 1
            positions = [positions[idx - 1]] if 1 <= idx <= len(positions) else []
        match, comparator, relation = self._match_args(cmd)
        doomed = []
        for i in positions:
            if patterns is not None:
                from mailsuite.sieve.message import _decode

                ok, _ = m.matches([_decode(self.msg.headers[i][1])], patterns, match, comparator, relation)
                if not ok:
                    continue
            doomed.append(i)
        for i in reversed(doomed):
            self.msg.delete_header(i)

    # -- tests -----------------------------------------------------------------------

    def _test(self, test: Test, frame: _Frame) -> bool:
        self.steps += 1
        if self.steps & 63 == 0:
            self._tick()
        return bool(_TEST_HANDLERS[test.name](self, test, frame))

    def _test_true(self, test: Test, frame: _Frame) -> bool:
        return True

    def _test_false(self, test: Test, frame: _Frame) -> bool:
        return False

    def _test_not(self, test: Test, frame: _Frame) -> bool:
        return not self._test(test.tests[0], frame)

    def _test_allof(self, test: Test, frame: _Frame) -> bool:
        return all(self._test(t, frame) for t in test.tests)

    def _test_anyof(self, test: Test, frame: _Frame) -> bool:
        return any(self._test(t, frame) for t in test.tests)

    def _test_exists(self, test: Test, frame: _Frame) -> bool:
        return all(self.msg.has(self._expand(h, frame)) for h in test.positional[0])

    def _test_size(self, test: Test, frame: _Frame) -> bool:
        limit = test.positional[0]
        if test.tagged["size"][0] == ":over":
            return self.msg.size > limit
        return self.msg.size < limit

    def _match_args(self, node: Any) -> tuple[str, str, str | None]:
        t = node.tagged
        match, relation = ":is", None
        if "match" in t:
            match = t["match"][0]
            if match in (":value", ":count"):
                relation = t["match"][1]
        comparator = t["comparator"][1] if "comparator" in t else "i;ascii-casemap"
        return match, comparator, relation

    def _compare(self, node: Any, frame: _Frame, values: list[str], keys: list[str]) -> bool:
        prep = node.prepared
        if prep is None:
            # Worked out once per node of a cached script: the match arguments, and the
            # case-folded keys when no variable can change them.
            match, comparator, relation = self._match_args(node)
            static = not any("${" in k for k in keys) or "variables" not in frame.script.required
            folded = [m.casefold(k, comparator) for k in keys] if static else None
            prep = node.prepared = (":value" if match == ":count" else match, comparator, relation,
                                    match == ":count", folded)
        match, comparator, relation, count, folded = prep
        if folded is None:
            keys = [self._expand(k, frame) for k in keys]
        ok, caps = m.matches(values, keys, match, comparator, relation, count=count, folded_keys=folded)
        if ok and caps is not None and "variables" in frame.script.required:
            frame.match_vars = caps
        return ok

    def _indexed(self, node: Any, values: list[str]) -> list[str]:
        if "index" not in node.tagged:
            return values
        idx = int(node.tagged["index"][1])
        if "last" in node.tagged:
            idx = len(values) - idx + 1
        return [values[idx - 1]] if 1 <= idx <= len(values) else []

    def _test_header(self, test: Test, frame: _Frame) -> bool:
        values: list[str] = []
        for h in test.positional[0]:
            values.extend(self._indexed(test, self.msg.values(self._expand(h, frame))))
        return self._compare(test, frame, values, test.positional[1])

    def _address_part(self, node: Any, addr: str, frame: _Frame) -> str | None:
        part = node.tagged.get("part", (":all", None))[0]
        local, at, domain = addr.rpartition("@")
        if not at:
            local, domain = addr, ""
        if part == ":all":
            return addr
        if part == ":localpart":
            return local
        if part == ":domain":
            return domain
        user, plus, detail = local.partition("+")
        if part == ":user":
            return user
        return detail if plus else None  # RFC 5233: no separator -> the test fails for it

    def _test_address(self, test: Test, frame: _Frame) -> bool:
        values: list[str] = []
        for h in test.positional[0]:
            found = [a for field in self._indexed(test, self.msg.addresses(self._expand(h, frame))) for a in field]
            values.extend(p for p in (self._address_part(test, a, frame) for a in found) if p is not None)
        return self._compare(test, frame, values, test.positional[1])

    def _test_envelope(self, test: Test, frame: _Frame) -> bool:
        values: list[str] = []
        for part in test.positional[0]:
            part = self._expand(part, frame).lower()
            if part == "from":
                addr = self.env.sender
            elif part == "to":
                addr = self.env.recipient
            elif part == "auth" and self.env.auth:
                addr = self.env.auth
            else:
                continue
            if addr == "" and "part" in test.tagged and test.tagged["part"][0] != ":all":
                continue  # the null path has no local part or domain
            p = self._address_part(test, addr, frame)
            if p is not None:
                values.append(p)
        return self._compare(test, frame, values, test.positional[1])

    def _test_body(self, test: Test, frame: _Frame) -> bool:
        transform = test.tagged.get("transform", (":text", None))
        if transform[0] == ":raw":
            values = [self.msg.body.decode("utf-8", "replace")]
        elif transform[0] == ":content":
            values = list(self.msg.text_parts([self._expand(t, frame) for t in transform[1]]))
        else:
            values = list(self.msg.text_parts(None))
        values = [v.replace("\r\n", "\n") for v in values]
        keys = [k.replace("\r\n", "\n") for k in test.positional[0]]
        # RFC 5173 5: match variables are not set by body.
        match, comparator, relation = self._match_args(test)
        ok, _ = m.matches(values, [self._expand(k, frame) for k in keys], ":value" if match == ":count" else match,
                          comparator, relation, count=match == ":count")
        return ok

    def _test_string(self, test: Test, frame: _Frame) -> bool:
        values = [self._expand(v, frame) for v in test.positional[0]]
        if self._match_args(test)[0] == ":count":
            values = [v for v in values if v != ""]
        return self._compare(test, frame, values, test.positional[1])

    def _test_hasflag(self, test: Test, frame: _Frame) -> bool:
        if len(test.positional) == 2:
            flags = _split_flags([self._lookup(frame, v.lower()) for v in test.positional[0]])
            keys = test.positional[1]
        else:
            flags, keys = list(frame.flags), test.positional[0]
        return self._compare(test, frame, flags, keys)

    def _test_mailboxexists(self, test: Test, frame: _Frame) -> bool:
        return all(self.host.mailbox_exists(self._expand(n, frame)) for n in test.positional[0])

    def _test_duplicate(self, test: Test, frame: _Frame) -> bool:
        t = test.tagged
        if "id" in t and t["id"][0] == ":uniqueid":
            key = self._expand(t["id"][1], frame)
        else:
            header = self._expand(t["id"][1], frame) if "id" in t else "message-id"
            values = self.msg.values(header)
            if not values:
                return False  # RFC 7352 3.1: no such header -> not a duplicate
            key = values[0].strip()
        handle = self._expand(t["handle"][1], frame) if "handle" in t else ""
        seconds = int(t["seconds"][1]) if "seconds" in t else 7 * 86400
        seen = self.host.duplicate_seen(handle, key)
        self.duplicates.append((handle, key, seconds))
        return bool(seen)

    def _date_of(self, test: Test, frame: _Frame) -> list[datetime]:
        values = self._indexed(test, self.msg.values(self._expand(test.positional[0], frame)))
        out = []
        for v in values:
            parsed = parsedate_tz(v)
            if parsed is None:
                continue
            try:
                offset = parsed[9] or 0
                dt = datetime(*parsed[:6], tzinfo=timezone(timedelta(seconds=offset)))
            except (ValueError, OverflowError):
                continue
            out.append(dt)
        return out

    def _zone(self, test: Test, frame: _Frame, dt: datetime) -> datetime:
        zone = test.tagged.get("zone")
        if zone is None:
            return dt.astimezone()  # local time of the server (RFC 5260 4.1)
        if zone[0] == ":originalzone":
            return dt
        z = self._expand(zone[1], frame)
        mz = re.fullmatch(r"([+-])(\d\d)(\d\d)", z)
        if not mz:
            return dt.astimezone()
        sign = 1 if mz.group(1) == "+" else -1
        return dt.astimezone(timezone(sign * timedelta(hours=int(mz.group(2)), minutes=int(mz.group(3)))))

    def _test_date(self, test: Test, frame: _Frame) -> bool:
        part = self._expand(test.positional[1], frame).lower()
        values = [_date_part(self._zone(test, frame, dt), part) for dt in self._date_of(test, frame)]
        return self._compare(test, frame, [v for v in values if v is not None], test.positional[2])

    def _test_currentdate(self, test: Test, frame: _Frame) -> bool:
        part = self._expand(test.positional[0], frame).lower()
        now = datetime.fromtimestamp(self.now, tz=timezone.utc)
        value = _date_part(self._zone(test, frame, now), part)
        return self._compare(test, frame, [value] if value is not None else [], test.positional[1])

    def _test_spamtest(self, test: Test, frame: _Frame) -> bool:
        from mailsuite.sieve.spam import spam_score

        value = spam_score(self.msg, self.authserv_id, percent="percent" in test.tagged)
        return self._compare(test, frame, [value], [test.positional[0]])

    def _test_virustest(self, test: Test, frame: _Frame) -> bool:
        # RFC 5235 3.2: "0" is "not tested"; we run no virus scanner.
        return self._compare(test, frame, ["0"], [test.positional[0]])

    # -- variables -------------------------------------------------------------------

    _REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*|[0-9]+)\}")

    def _lookup(self, frame: _Frame, name: str) -> str:
        if name.isdigit():
            i = int(name)
            return frame.match_vars[i] if i < len(frame.match_vars) else ""
        name = name.lower()
        if name.startswith("global."):
            return self.globals.get(name[7:], "")
        if name in self.globals:
            return self.globals[name]
        return frame.variables.get(name, "")

    def _expand(self, s: str, frame: _Frame) -> str:
        if "variables" not in frame.script.required or "${" not in s:
            return s
        return self._REF.sub(lambda mo: self._lookup(frame, mo.group(1)), s)[:MAX_VARIABLE]


_TEST_HANDLERS = {name[6:]: f for name, f in vars(Interpreter).items() if name.startswith("_test_")}


def _split_flags(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for f in v.split():
            if f.lower() not in (x.lower() for x in out):
                out.append(f)
    return out


def _date_part(dt: datetime, part: str) -> str | None:
    if part == "year":
        return f"{dt.year:04d}"
    if part == "month":
        return f"{dt.month:02d}"
    if part == "day":
        return f"{dt.day:02d}"
    if part == "date":
        return dt.strftime("%Y-%m-%d")
    if part == "julian":
        return str(int((dt - datetime(1858, 11, 17, tzinfo=dt.tzinfo)).days))
    if part == "hour":
        return f"{dt.hour:02d}"
    if part == "minute":
        return f"{dt.minute:02d}"
    if part == "second":
        return f"{dt.second:02d}"
    if part == "time":
        return dt.strftime("%H:%M:%S")
    if part == "iso8601":
        return dt.isoformat()
    if part == "std11":
        from email.utils import format_datetime

        return format_datetime(dt)
    if part == "zone":
        return dt.strftime("%z")
    if part == "weekday":
        return str((dt.weekday() + 1) % 7)
    return None
