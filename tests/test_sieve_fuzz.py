"""Whatever a user uploads or a sender sends, the Sieve code answers with a syntax
error or an outcome, never with another exception (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.interpreter import Envelope, Interpreter, Script
from mailsuite.sieve.message import Message
from mailsuite.sieve.parser import SieveSyntaxError
from tests.support.sieve import FakeHost

TOKENS = ['require', '"fileinto"', '"variables"', '"body"', '"vacation"', 'if', 'elsif', 'else', 'header', 'address',
          'envelope', 'body', 'exists', 'size', 'not', 'anyof', 'allof', 'true', 'false', 'keep', 'discard', 'stop',
          'fileinto', 'redirect', 'vacation', 'set', 'string', ':is', ':contains', ':matches', ':over', ':days',
          ':comparator', '"i;octet"', '"subject"', '"a*b?"', '"${1}"', '10K', '[', ']', '(', ')', '{', '}', ',',
          ';', 'text:\n.\n', '"', '#c\n', '/*', '*/', '\\', '\n', ' ']
SCRIPT = st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join) | st.text(max_size=200)
MESSAGE = st.binary(max_size=400) | st.lists(
    st.sampled_from([b"Subject: ", b"From: ", b"To: <a@b>", b"=?utf-8?q?x?=", b"\n", b"\n\n", b": ", b"a@b",
                     b"\t", b"\xff", b"<", b">", b","]), max_size=40).map(b"".join)

ROBUST = """require ["fileinto", "variables", "body", "envelope", "vacation", "date", "index", "editheader",
                     "relational", "comparator-i;ascii-numeric", "subaddress", "imap4flags"];
if header :matches "subject" "*?*" { set "s" "${1}${2}"; }
if address :all :contains ["from", "to", "cc"] "@" { addflag "x"; }
if envelope :detail "to" "" { keep; }
if body :text :contains "x" { fileinto "B"; }
if date :value "ge" :comparator "i;ascii-numeric" "date" "year" "2000" { fileinto "D"; }
if header :index 1 :last :count "ge" :comparator "i;ascii-numeric" "received" "1" { keep; }
deleteheader :matches "x-*" "*";
addheader "X-Seen" "${s}";
if exists "list-id" { discard; } else { vacation :days 1 "${s}"; }
"""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCRIPT)
def test_any_script_text_compiles_or_gives_a_syntax_error(text: str) -> None:
    try:
        compile_script(text.encode("utf-8", "surrogatepass"))
    except SieveSyntaxError as e:
        assert e.line >= 0 and str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGE)
def test_any_message_gets_an_outcome(raw: bytes) -> None:
    commands, required = compile_script(ROBUST.encode())
    out = Interpreter(Message(raw), Envelope("a+b@c", "d+e@f", "d@f"), FakeHost(all_folders_exist=True)).run([Script("r", commands, required)])
    assert out.error is None and (out.deliveries or out.discarded)
