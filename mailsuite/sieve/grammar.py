"""What each Sieve command and test takes, and the check of a parsed script against it.

One table (:data:`COMMANDS`, :data:`TESTS`) says for every command and test the
extension it needs, its tagged arguments (grouped: at most one tag per group, e.g.
one match type) and its positional arguments.  :func:`check` walks a parsed script,
fills in each node's ``tagged``/``positional`` and raises SieveSyntaxError, with the
position, for anything a server must refuse before running the script: an unknown
command, an extension used without ``require``, a wrong argument, ``elsif`` without
``if``.  The extensions we support are :data:`EXTENSIONS` (ManageSieve's SIEVE
capability lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailsuite.sieve.parser import Command, Number, SieveSyntaxError, Strings, Tag, Test, parse

EXTENSIONS = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "vacation",
    "vacation-seconds", "imap4flags", "body", "variables", "relational", "subaddress",
    "copy", "date", "index", "include", "mailbox", "editheader", "duplicate",
    "comparator-i;ascii-numeric", "comparator-i;ascii-casemap", "comparator-i;octet",
    "spamtest", "spamtestplus", "virustest",
)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None, "i;ascii-numeric": "comparator-i;ascii-numeric"}
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")
SET_MODIFIERS = {":lower": 40, ":upper": 40, ":lowerfirst": 30, ":upperfirst": 30,
                 ":quotewildcard": 20, ":length": 10}
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class TagSpec:
    group: str
    value: str | None = None  # "string", "strings", "number" or None (a flag)
    ext: str | None = None  # the extension the tag needs (None: the command's own)


@dataclass(frozen=True)
class Spec:
    ext: str | None = None  # the extension that brings the command (None: core)
    shapes: tuple[tuple[str, ...], ...] = ((),)  # accepted lists of positional kinds
    tags: dict[str, TagSpec] = field(default_factory=dict)
    tests: str = "none"  # "none" | "one" | "list"
    block: bool = False


def _tags(*groups: dict[str, TagSpec]) -> dict[str, TagSpec]:
    out: dict[str, TagSpec] = {}
    for g in groups:
        out.update(g)
    return out


COMPARATOR = {":comparator": TagSpec("comparator", "string")}
MATCH = {
    ":is": TagSpec("match"), ":contains": TagSpec("match"), ":matches": TagSpec("match"),
    ":value": TagSpec("match", "string", "relational"), ":count": TagSpec("match", "string", "relational"),
}
ADDRESS_PART = {
    ":all": TagSpec("part"), ":localpart": TagSpec("part"), ":domain": TagSpec("part"),
    ":user": TagSpec("part", None, "subaddress"), ":detail": TagSpec("part", None, "subaddress"),
}
INDEX = {":index": TagSpec("index", "number", "index"), ":last": TagSpec("last", None, "index")}
FLAGS = {":flags": TagSpec("flags", "strings", "imap4flags")}
COPY = {":copy": TagSpec("copy", None, "copy")}
ZONE = {":zone": TagSpec("zone", "string"), ":originalzone": TagSpec("zone")}

COMMANDS: dict[str, Spec] = {
    "require": Spec(shapes=(("strings",),)),
    "if": Spec(tests="one", block=True),
    "elsif": Spec(tests="one", block=True),
    "else": Spec(block=True),
    "stop": Spec(),
    "keep": Spec(tags=_tags(FLAGS)),
    "discard": Spec(),
    "redirect": Spec(shapes=(("string",),), tags=_tags(COPY)),
    "fileinto": Spec("fileinto", (("string",),),
                     _tags(COPY, FLAGS, {":create": TagSpec("create", None, "mailbox")})),
    "reject": Spec("reject", (("string",),)),
    "ereject": Spec("ereject", (("string",),)),
    "vacation": Spec("vacation", (("string",),), {
        ":days": TagSpec("period", "number"),
        ":seconds": TagSpec("period", "number", "vacation-seconds"),
        ":subject": TagSpec("subject", "string"),
        ":from": TagSpec("from", "string"),
        ":addresses": TagSpec("addresses", "strings"),
        ":mime": TagSpec("mime"),
        ":handle": TagSpec("handle", "string"),
    }),
    "setflag": Spec("imap4flags", (("strings",), ("string", "strings"))),
    "addflag": Spec("imap4flags", (("strings",), ("string", "strings"))),
    "removeflag": Spec("imap4flags", (("strings",), ("string", "strings"))),
    "set": Spec("variables", (("string", "string"),),
                {m: TagSpec("mod" + m) for m in SET_MODIFIERS}),
    "include": Spec("include", (("string",),), {
        ":personal": TagSpec("location"), ":global": TagSpec("location"),
        ":once": TagSpec("once"), ":optional": TagSpec("optional"),
    }),
    "return": Spec("include"),
    "global": Spec("include", (("strings",),)),
    "addheader": Spec("editheader", (("string", "string"),), {":last": TagSpec("last")}),
    # RFC 5293 5: deleteheader's :index/:last come with editheader itself.
    "deleteheader": Spec("editheader", (("string",), ("string", "strings")),
                         _tags({":index": TagSpec("index", "number"), ":last": TagSpec("last")}, COMPARATOR, MATCH)),
}

TESTS: dict[str, Spec] = {
    "address": Spec(shapes=(("strings", "strings"),), tags=_tags(COMPARATOR, MATCH, ADDRESS_PART, INDEX)),
    "header": Spec(shapes=(("strings", "strings"),), tags=_tags(COMPARATOR, MATCH, INDEX)),
    "envelope": Spec("envelope", (("strings", "strings"),), _tags(COMPARATOR, MATCH, ADDRESS_PART)),
    "exists": Spec(shapes=(("strings",),)),
    "size": Spec(shapes=(("number",),), tags={":over": TagSpec("size"), ":under": TagSpec("size")}),
    "allof": Spec(tests="list"),
    "anyof": Spec(tests="list"),
    "not": Spec(tests="one"),
    "true": Spec(),
    "false": Spec(),
    "body": Spec("body", (("strings",),), _tags(COMPARATOR, MATCH, {
        ":raw": TagSpec("transform"), ":text": TagSpec("transform"),
        ":content": TagSpec("transform", "strings"),
    })),
    "string": Spec("variables", (("strings", "strings"),), _tags(COMPARATOR, MATCH)),
    "hasflag": Spec("imap4flags", (("strings",), ("strings", "strings")), _tags(COMPARATOR, MATCH)),
    "date": Spec("date", (("string", "string", "strings"),), _tags(COMPARATOR, MATCH, INDEX, ZONE)),
    "currentdate": Spec("date", (("string", "strings"),), _tags(COMPARATOR, MATCH, {":zone": TagSpec("zone", "string")})),
    "mailboxexists": Spec("mailbox", (("strings",),)),
    "duplicate": Spec("duplicate", ((),), {
        ":handle": TagSpec("handle", "string"), ":header": TagSpec("id", "string"),
        ":uniqueid": TagSpec("id", "string"), ":seconds": TagSpec("seconds", "number"),
        ":last": TagSpec("last"),
    }),
    "spamtest": Spec("spamtest", (("string",),), _tags(COMPARATOR, MATCH, {":percent": TagSpec("percent", None, "spamtestplus")})),
    "virustest": Spec("virustest", (("string",),), _tags(COMPARATOR, MATCH)),
}
# Extensions that imply others (RFC 5429: ereject is reject's sibling, not included).
_IMPLIES = {"spamtestplus": ("spamtest",), "vacation-seconds": ("vacation",)}


def _fail(node: Command | Test | Tag | Number | Strings, message: str) -> SieveSyntaxError:
    return SieveSyntaxError(message, node.line, node.column)


class _Checker:
    def __init__(self) -> None:
        self.required: set[str] = {"comparator-i;octet", "comparator-i;ascii-casemap"}

    def script(self, commands: list[Command]) -> None:
        seen_other = False
        for cmd in commands:
            if cmd.name == "require":
                if seen_other:
                    raise _fail(cmd, "require must come before any other command")
                self.command(cmd, None)
                for ext in cmd.positional[0]:
                    if ext not in EXTENSIONS:
                        raise _fail(cmd, f"unsupported extension {ext!r}")
                    self.required.add(ext)
                    self.required.update(_IMPLIES.get(ext, ()))
                continue
            seen_other = True
        self.block(commands, top=True)

    def block(self, commands: list[Command], top: bool = False) -> None:
        prev = None
        for cmd in commands:
            if cmd.name == "require":
                if not top:
                    raise _fail(cmd, "require is only allowed at the top of the script")
                prev = cmd.name
                continue
            if cmd.name in ("elsif", "else") and prev not in ("if", "elsif"):
                raise _fail(cmd, f"{cmd.name} without a preceding if")
            self.command(cmd, prev)
            prev = cmd.name

    def command(self, cmd: Command, prev: str | None) -> None:
        spec = COMMANDS.get(cmd.name)
        if spec is None:
            if cmd.name in TESTS:
                raise _fail(cmd, f"{cmd.name} is a test, not a command")
            raise _fail(cmd, f"unknown command {cmd.name!r}")
        self.arguments(cmd, spec, "command")
        if spec.block and cmd.block is None:
            raise _fail(cmd, f"{cmd.name} needs a block {{ ... }}")
        if not spec.block and cmd.block is not None:
            raise _fail(cmd, f"{cmd.name} takes no block")
        for t in cmd.tests:
            self.test(t)
        if cmd.block is not None:
            self.block(cmd.block)
        self.extra_command(cmd)

    def test(self, test: Test) -> None:
        spec = TESTS.get(test.name)
        if spec is None:
            raise _fail(test, f"unknown test {test.name!r}")
        self.arguments(test, spec, "test")
        for t in test.tests:
            self.test(t)
        self.extra_test(test)

    def need(self, ext: str | None, node: Command | Test | Tag, what: str) -> None:
        if ext is not None and ext not in self.required:
            raise _fail(node, f"{what} needs require \"{ext}\"")

    def arguments(self, node: Command | Test, spec: Spec, kind: str) -> None:
        self.need(spec.ext, node, f"{kind} {node.name}")
        args = list(node.args)
        tagged: dict[str, tuple[str, object]] = {}
        positional: list[object] = []
        kinds: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if isinstance(arg, Tag):
                if positional:
                    raise _fail(arg, f"tag {arg.name} after positional arguments of {node.name}")
                ts = spec.tags.get(arg.name)
                if ts is None:
                    raise _fail(arg, f"{node.name} has no tag {arg.name}")
                self.need(ts.ext, arg, f"tag {arg.name}")
                if ts.group in tagged:
                    raise _fail(arg, f"{arg.name} conflicts with {tagged[ts.group][0]} in {node.name}")
                value: object = None
                if ts.value is not None:
                    i += 1
                    if i >= len(args):
                        raise _fail(arg, f"{arg.name} needs a {ts.value} argument")
                    value = self._value(args[i], ts.value, f"argument of {arg.name}")
                tagged[ts.group] = (arg.name, value)
            elif isinstance(arg, Number):
                positional.append(arg.value)
                kinds.append("number")
            else:
                positional.append(arg.values)
                kinds.append("strings" if arg.is_list else "string")
            i += 1
        shape = None
        for candidate in spec.shapes:
            if len(candidate) == len(kinds) and all(
                want == got or (want == "strings" and got == "string") for want, got in zip(candidate, kinds)
            ):
                shape = candidate
                break
        if shape is None:
            want = " or ".join(" ".join(s) or "no positional arguments" for s in spec.shapes)
            raise _fail(node, f"{node.name} takes {want}")
        node.tagged = tagged
        # Strings stay lists; a "string" position holds its one string.
        node.positional = [v[0] if k == "string" and isinstance(v, list) else v for v, k in zip(positional, shape)]
        if spec.tests == "none" and node.tests:
            raise _fail(node, f"{node.name} takes no test")
        if spec.tests == "one" and len(node.tests) != 1:
            raise _fail(node, f"{node.name} needs exactly one test")
        if spec.tests == "list" and not node.tests:
            raise _fail(node, f"{node.name} needs a test list ( ... )")
        self.common(node)

    def _value(self, arg: object, kind: str, what: str) -> object:
        if kind == "number":
            if not isinstance(arg, Number):
                raise _fail(arg, f"{what} must be a number")  # type: ignore[arg-type]
            return arg.value
        if not isinstance(arg, Strings):
            raise _fail(arg, f"{what} must be a string")  # type: ignore[arg-type]
        if kind == "string":
            if arg.is_list:
                raise _fail(arg, f"{what} must be a single string")
            return arg.values[0]
        return arg.values

    def common(self, node: Command | Test) -> None:
        """Checks shared by every node with a comparator or match type."""
        t = node.tagged
        if "comparator" in t:
            name = str(t["comparator"][1]).lower()
            if name not in COMPARATORS:
                raise _fail(node, f"unknown comparator {name!r}")
            self.need(COMPARATORS[name], node, f"comparator {name}")
            t["comparator"] = (":comparator", name)
        if "match" in t and t["match"][0] in (":value", ":count"):
            op = str(t["match"][1]).lower()
            if op not in RELATIONS:
                raise _fail(node, f"relational operator must be one of {', '.join(RELATIONS)}")
            t["match"] = (t["match"][0], op)
        if "last" in t and "index" not in t and node.name != "duplicate" and node.name != "addheader":
            raise _fail(node, ":last needs :index")
        if "index" in t and not int(t["index"][1]) >= 1:  # type: ignore[call-overload]
            raise _fail(node, ":index must be 1 or more")

    def extra_command(self, cmd: Command) -> None:
        if cmd.name == "set":
            name = cmd.positional[0]
            if not _VAR_NAME.match(name):
                raise _fail(cmd, f"invalid variable name {name!r}")
        if cmd.name in ("setflag", "addflag", "removeflag") and len(cmd.positional) == 2:
            if not _VAR_NAME.match(cmd.positional[0]):
                raise _fail(cmd, f"invalid variable name {cmd.positional[0]!r}")
        if cmd.name == "vacation":
            if "period" in cmd.tagged and cmd.tagged["period"][1] < 0:  # type: ignore[operator]
                raise _fail(cmd, "vacation period must not be negative")
        if cmd.name == "include":
            name = cmd.positional[0]
            if "variables" not in self.required and ("/" in name or name in ("", ".", "..")):
                raise _fail(cmd, f"invalid script name {name!r}")
        if cmd.name == "global":
            for name in cmd.positional[0]:
                if not _VAR_NAME.match(name):
                    raise _fail(cmd, f"invalid variable name {name!r}")

    def extra_test(self, test: Test) -> None:
        if test.name == "date" or test.name == "currentdate":
            part = test.positional[-2].lower()
            if part not in DATE_PARTS and "${" not in part:
                raise _fail(test, f"unknown date part {part!r}")
        if test.name == "duplicate" and "seconds" in test.tagged and test.tagged["seconds"][1] < 0:  # type: ignore[operator]
            raise _fail(test, ":seconds must not be negative")


_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)


def _decode_encoded(text: str) -> str:
    """RFC 5228 2.4.2.4: ${hex:41 42} and ${unicode:263a}; a malformed one stays as written."""

    def one(m: re.Match[str]) -> str:
        kind, body = m.group(1).lower(), m.group(2).strip()
        items = body.split()
        try:
            if kind == "hex":
                if not all(re.fullmatch(r"[0-9A-Fa-f]+", x) for x in items):
                    return m.group()
                return bytes(int(x, 16) for x in items).decode("utf-8")
            out = []
            for x in items:
                if not re.fullmatch(r"[0-9A-Fa-f]+", x):
                    return m.group()
                cp = int(x, 16)
                if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                    raise ValueError(f"invalid unicode character {x}")
                out.append(chr(cp))
            return "".join(out)
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"invalid encoded character {m.group()}") from None

    return _ENCODED.sub(one, text)


def _walk_strings(commands: list[Command]):  # type: ignore[no-untyped-def]
    stack: list[Command | Test] = list(commands)
    while stack:
        node = stack.pop()
        for a in node.args:
            if isinstance(a, Strings):
                yield a
        stack.extend(node.tests)
        if isinstance(node, Command) and node.block:
            stack.extend(node.block)


def check(commands: list[Command]) -> set[str]:
    """Validate a parsed script in place; return the extensions it requires."""
    c = _Checker()
    # encoded-character is decided before anything else reads a string.
    for cmd in commands:
        if cmd.name != "require":
            break
        for a in cmd.args:
            if isinstance(a, Strings) and "encoded-character" in a.values:
                for s in _walk_strings(commands):
                    try:
                        s.values = [_decode_encoded(v) for v in s.values]
                    except ValueError as e:
                        raise _fail(s, str(e)) from None
    c.script(commands)
    return c.required


def compile_script(src: bytes) -> tuple[list[Command], set[str]]:
    """Parse and check; SieveSyntaxError (with line and column) if the script is bad."""
    commands = parse(src)
    return commands, check(commands)
