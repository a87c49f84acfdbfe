"""Sieve's grammar (RFC 5228 section 8): text of a script to a tree of commands.

Our own parser rather than sievelib's: sievelib (tried in research/wave2-libraries.md
section 8) rejects subaddress's ``:user``/``:detail``, and knows neither index,
include, editheader, duplicate nor ``i;ascii-numeric``; it hands out raw tokens
(quotes kept, escapes and ``text:`` dot-stuffing not undone) and keeps its state per
thread.  The grammar is small (tokens, string lists, commands, tests), so writing it
costs less than patching around all that.  What each command *means* (its
arguments, the extension it needs) is checked in :mod:`mailsuite.sieve.grammar`.

Every node carries the line and column where it starts, so an error can say where
(ManageSieve's PUTSCRIPT answers with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_NESTING = 32  # blocks and test lists inside one another
MAX_SCRIPT_SIZE = 1024 * 1024


class SieveSyntaxError(Exception):
    """A script that cannot be run; ``line``/``column`` say where (1-based)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line:
            return f"line {self.line}: {self.message}"
        return self.message


@dataclass
class Tag:
    name: str  # with the colon, lower-cased: ":contains"
    line: int = 0
    column: int = 0


@dataclass
class Number:
    value: int
    line: int = 0
    column: int = 0


@dataclass
class Strings:
    values: list[str]
    is_list: bool  # written as [ ... ] (a single string fits where a list does, not vice versa)
    line: int = 0
    column: int = 0


Argument = Tag | Number | Strings


@dataclass
class Test:
    name: str
    args: list[Argument]
    tests: list["Test"]
    line: int = 0
    column: int = 0
    # Filled in by grammar.check: tag group -> (tag, value), and the positional arguments.
    tagged: dict = field(default_factory=dict)
    positional: list = field(default_factory=list)
    prepared: object = None  # the interpreter's per-node cache (match arguments, folded keys)


@dataclass
class Command:
    name: str
    args: list[Argument]
    tests: list[Test]
    block: list["Command"] | None
    line: int = 0
    column: int = 0
    tagged: dict = field(default_factory=dict)
    positional: list = field(default_factory=list)


_TOKEN = re.compile(
    rb"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*(?:\n|\Z))
  | (?P<bracket>/\*.*?\*/)
  | (?P<textstart>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>"(?:[^"\\]|\\.)*")
  | (?P<special>[\[\](){},;])
    """,
    re.VERBOSE | re.DOTALL,
)
_MULTILINE_END = re.compile(rb"\r?\n\.\r?\n")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass
class _Tok:
    kind: str
    value: object
    line: int
    column: int


def tokenize(src: bytes) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    n = len(src)
    while pos < n:
        col = pos - line_start + 1
        if src.startswith(b"text:", pos):
            m = _TOKEN.match(src, pos)
            if m is None or m.lastgroup != "textstart":
                raise SieveSyntaxError("text: must be followed by a line break", line, col)
            body_start = m.end()
            end_at = after = -1
            scan = body_start
            while scan < n:
                nl = src.find(b"\n", scan)
                stop = n if nl < 0 else nl
                if src[scan:stop].rstrip(b"\r") == b".":
                    end_at, after = scan, (n if nl < 0 else nl + 1)
                    break
                scan = stop + 1
            if end_at < 0:
                raise SieveSyntaxError("text: without the closing '.' line", line, col)
            raw = src[body_start:end_at]
            lines = raw.split(b"\n")[:-1] if raw else []
            lines = [l + b"\n" for l in lines]
            # Dot-unstuffing: a line starting with ".." loses one dot (RFC 5228 2.4.2).
            text = b"".join(l[1:] if l.startswith(b"..") else l for l in lines)
            toks.append(_Tok("string", _decode(text, line, col), line, col))
            line += src.count(b"\n", pos, after)
            line_start = src.rfind(b"\n", 0, after) + 1
            pos = after
            continue
        m = _TOKEN.match(src, pos)
        if m is None:
            ch = src[pos:pos + 1]
            if ch == b'"':
                raise SieveSyntaxError("unterminated string", line, col)
            if src.startswith(b"/*", pos):
                raise SieveSyntaxError("unterminated comment", line, col)
            raise SieveSyntaxError(f"unexpected character {ch.decode('latin-1')!r}", line, col)
        kind = m.lastgroup
        text = m.group()
        if kind == "tag":
            toks.append(_Tok("tag", text.decode("ascii").lower(), line, col))
        elif kind == "number":
            t = text.decode("ascii")
            mult = _UNITS.get(t[-1].lower(), 1)
            value = int(t.rstrip("KkMmGg")) * mult
            if value >= 1 << 63:
                raise SieveSyntaxError("number too large", line, col)
            toks.append(_Tok("number", value, line, col))
        elif kind == "ident":
            toks.append(_Tok("ident", text.decode("ascii").lower(), line, col))
        elif kind == "quoted":
            # In a quoted string a backslash quotes the next character (RFC 5228 2.4.2).
            inner = re.sub(rb"\\(.)", rb"\1", text[1:-1], flags=re.DOTALL)
            toks.append(_Tok("string", _decode(inner, line, col), line, col))
        elif kind == "special":
            toks.append(_Tok(text.decode(), text.decode(), line, col))
        nl = text.count(b"\n")
        if nl:
            line += nl
            line_start = pos + text.rfind(b"\n") + 1
        pos = m.end()
    toks.append(_Tok("eof", None, line, pos - line_start + 1))
    return toks


def _decode(raw: bytes, line: int, col: int) -> str:
    try:
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\n", "\r\n")
    except UnicodeDecodeError:
        raise SieveSyntaxError("string is not valid UTF-8", line, col) from None


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind:
            raise SieveSyntaxError(f"expected {what}, found {_describe(tok)}", tok.line, tok.column)
        return tok

    def enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise SieveSyntaxError(f"nested more than {MAX_NESTING} deep", tok.line, tok.column)

    def commands(self, top: bool) -> list[Command]:
        out: list[Command] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if not top:
                    raise SieveSyntaxError("missing '}'", tok.line, tok.column)
                return out
            if tok.kind == "}":
                if top:
                    raise SieveSyntaxError("unexpected '}'", tok.line, tok.column)
                return out
            out.append(self.command())

    def command(self) -> Command:
        name = self.expect("ident", "a command")
        args, tests = self.arguments()
        tok = self.take()
        if tok.kind == ";":
            return Command(name.value, args, tests, None, name.line, name.column)  # type: ignore[arg-type]
        if tok.kind == "{":
            self.enter(tok)
            block = self.commands(top=False)
            self.expect("}", "'}'")
            self.depth -= 1
            return Command(name.value, args, tests, block, name.line, name.column)  # type: ignore[arg-type]
        raise SieveSyntaxError(f"expected ';' or '{{' after {name.value}, found {_describe(tok)}",
                               tok.line, tok.column)

    def arguments(self) -> tuple[list[Argument], list[Test]]:
        args: list[Argument] = []
        while True:
            tok = self.peek()
            if tok.kind == "tag":
                self.take()
                args.append(Tag(tok.value, tok.line, tok.column))  # type: ignore[arg-type]
            elif tok.kind == "number":
                self.take()
                args.append(Number(tok.value, tok.line, tok.column))  # type: ignore[arg-type]
            elif tok.kind == "string":
                self.take()
                args.append(Strings([tok.value], False, tok.line, tok.column))  # type: ignore[list-item]
            elif tok.kind == "[":
                args.append(self.string_list())
            else:
                break
        tests: list[Test] = []
        tok = self.peek()
        if tok.kind == "ident":
            tests = [self.test()]
        elif tok.kind == "(":
            tests = self.test_list()
        return args, tests

    def string_list(self) -> Strings:
        start = self.take()
        values = []
        while True:
            s = self.expect("string", "a string")
            values.append(s.value)
            tok = self.take()
            if tok.kind == "]":
                return Strings(values, True, start.line, start.column)  # type: ignore[arg-type]
            if tok.kind != ",":
                raise SieveSyntaxError(f"expected ',' or ']' in a string list, found {_describe(tok)}",
                                       tok.line, tok.column)

    def test(self) -> Test:
        name = self.expect("ident", "a test")
        self.enter(name)
        args, tests = self.arguments()
        self.depth -= 1
        return Test(name.value, args, tests, name.line, name.column)  # type: ignore[arg-type]

    def test_list(self) -> list[Test]:
        start = self.take()
        self.enter(start)
        tests = []
        while True:
            tests.append(self.test())
            tok = self.take()
            if tok.kind == ")":
                self.depth -= 1
                return tests
            if tok.kind != ",":
                raise SieveSyntaxError(f"expected ',' or ')' in a test list, found {_describe(tok)}",
                                       tok.line, tok.column)


def _describe(tok: _Tok) -> str:
    if tok.kind == "eof":
        return "end of script"
    if tok.kind == "string":
        return "a string"
    if tok.kind in ("ident", "tag", "number"):
        return f"{tok.value!r}"
    return f"'{tok.kind}'"


def parse(src: bytes) -> list[Command]:
    """The commands of a script; SieveSyntaxError with the position otherwise."""
    if len(src) > MAX_SCRIPT_SIZE:
        raise SieveSyntaxError(f"script larger than {MAX_SCRIPT_SIZE} bytes")
    return _Parser(tokenize(src)).commands(top=True)
