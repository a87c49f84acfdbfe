"""RFC 5321 paths and ESMTP parameters after MAIL FROM: / RCPT TO:."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mailsuite.smtp.address import BadPath, domain_of, parse_path


@pytest.mark.parametrize(
    "arg, mailbox, params",
    [
        ("<alice@example.test>", "alice@example.test", {}),
        (" <alice@example.test>", "alice@example.test", {}),
        ("<a.b+tag@sub.example.test>", "a.b+tag@sub.example.test", {}),
        ('<"john doe"@example.test>', '"john doe"@example.test', {}),
        ("<x@[192.0.2.1]>", "x@[192.0.2.1]", {}),
        ("<x@[IPv6:2001:db8::1]>", "x@[IPv6:2001:db8::1]", {}),
        ("<@relay.test,@other.test:x@example.test>", "x@example.test", {}),
        ("<a@example.test> SIZE=1000 BODY=8BITMIME", "a@example.test", {"SIZE": "1000", "BODY": "8BITMIME"}),
        ("<a@example.test> size=10", "a@example.test", {"SIZE": "10"}),
        ("<a@example.test> SMTPUTF8", "a@example.test", {"SMTPUTF8": None}),
        ("alice@example.test", "alice@example.test", {}),  # no brackets, as Postfix tolerates
        ("alice@example.test SIZE=5", "alice@example.test", {"SIZE": "5"}),
    ],
)
def test_valid_paths(arg: str, mailbox: str, params: dict) -> None:
    assert parse_path(arg, allow_null=False) == (mailbox, params)


def test_null_sender() -> None:
    assert parse_path("<>", allow_null=True) == ("", {})
    assert parse_path("<> SIZE=10", allow_null=True) == ("", {"SIZE": "10"})


def test_null_path_not_allowed_for_recipients() -> None:
    with pytest.raises(BadPath):
        parse_path("<>", allow_null=False)


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "<>x",
        "<alice>",
        "<alice@>",
        "<@example.test>",
        "<alice@example.test",
        "alice@example.test>",
        "<alice@@example.test>",
        "<al ice@example.test>",
        "<alice@exa mple.test>",
        "<alice@-example.test>",
        "<alice@example..test>",
        "<.alice@example.test>",
        "<alice.@example.test>",
        "<alice@example.test>junk",
        "<alice@example.test> =bad",
        "<alice@example.test> SIZE=",
        "<a\x00@example.test>",
        "<\"unterminated@example.test>",
        "<" + "a" * 65 + "@example.test>",
        "<a@" + ("b" * 60 + ".") * 5 + "test>",
    ],
)
def test_malformed_paths(arg: str) -> None:
    with pytest.raises(BadPath):
        parse_path(arg, allow_null=True)


def test_domain_of_is_lower_case() -> None:
    assert domain_of("Alice@Example.TEST") == "example.test"


# -- properties -------------------------------------------------------------------

atext = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~",
                min_size=1, max_size=10)
local = st.lists(atext, min_size=1, max_size=4).map(".".join).filter(lambda s: len(s) <= 64)
label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
param_key = st.from_regex(r"\A[A-Z][A-Z0-9-]{0,8}\Z")
param_value = st.from_regex(r"\A[\x21-\x3c\x3e-\x7e]{1,10}\Z")


@settings(max_examples=300, deadline=None)
@given(local=local, domain=domain, params=st.dictionaries(param_key, param_value, max_size=3))
def test_well_formed_paths_round_trip(local: str, domain: str, params: dict) -> None:
    addr = f"{local}@{domain}"
    text = f"<{addr}>" + "".join(f" {k}={v}" for k, v in params.items())
    assert parse_path(text, allow_null=False) == (addr, params)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_badpath(text: str) -> None:
    try:
        mailbox, params = parse_path(text, allow_null=True)
    except BadPath:
        return
    # What is accepted is safe to put in a header or a log line.
    assert not any(c in mailbox for c in "\r\n\x00<> ") or mailbox.startswith('"')
    assert all(k == k.upper() for k in params)
