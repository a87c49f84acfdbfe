"""Client text in log lines (mailsuite/logtext.py): it can neither start a line nor a
field of ours, and no control byte reaches the log (issue 16 finding 1)."""

from __future__ import annotations

from mailsuite.logtext import escaped, printable, quoted, token


def test_quoted_escapes_quotes_backslashes_and_every_control_character() -> None:
    assert quoted('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert quoted(b"\x1b[2J\x00\x07\r\n") == '"\\x1b[2J\\x00\\x07\\x0d\\x0a"'
    assert quoted("\u202e\u2028\x85") == '"\\u202e\\u2028\\x85"'  # bidi override, separators, C1
    assert quoted(b"\xff") == '"\\\\xff"'  # undecodable bytes stay visible, escaped


def test_quoted_text_is_bounded() -> None:
    assert quoted("x" * 500, 10) == '"' + "x" * 10 + '..."'


def test_printable_keeps_our_reply_text_readable() -> None:
    assert printable("<a@b>: Relay access denied") == "<a@b>: Relay access denied"
    assert printable("<a\nb>") == "<a\\x0ab>"


def test_escaped_cannot_close_an_address_field() -> None:
    assert escaped("a> rip=1.2.3.4 <b") == "a\\x3e rip=1.2.3.4 \\x3cb"


def test_token_is_one_word() -> None:
    assert token("evil rip=10.0.0.1\tuser") == "evil?rip=10.0.0.1?user"
    assert token("") == "-"
