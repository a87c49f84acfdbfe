"""Fuzzing every protocol front end with command *streams* (hypothesis): sequences of
plausible commands, arguments and garbage, cut into random chunks, sent over real
sockets to one real server (SMTP MX, submission, IMAP, POP3, ManageSieve).

Each case must leave the server serving: the next connection is greeted; and at the
end the log holds no traceback and nothing CRITICAL.  A short run in CI
(FUZZ_EXAMPLES, default 150 per protocol); ``FUZZ_EXAMPLES=10000`` for the long one."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import Server, make_server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
RUNS: dict[str, int] = {}

SMTP = ["EHLO x", "HELO x", "MAIL FROM:<a@remote.test>", "MAIL FROM:<>", "RCPT TO:<alice@example.test>",
        "RCPT TO:<bob@remote.test>", "DATA", "Subject: x", ".", "..", "BDAT 5", "BDAT 0 LAST", "RSET", "NOOP",
        "VRFY alice", "EXPN x", "HELP", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "AUTH PLAIN AGFsaWNlAHB3",
        "MAIL FROM:<a@b> SIZE=99999999999", "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8", "RCPT TO:<\"a b\"@x>",
        "RCPT TO:<a@[127.0.0.1]>", "QUIT", "*", "="]
IMAP = ["a CAPABILITY", "a NOOP", "a LOGIN alice@example.test alice-pw", "a LOGIN {5}", "a LOGIN {5+}", "hello",
        "a SELECT INBOX", "a EXAMINE INBOX", "a FETCH 1:* (FLAGS)", "a FETCH 1 BODY[]", "a UID FETCH 1:* (UID)",
        "a STORE 1 +FLAGS (\\Seen)", "a SEARCH ALL", "a SEARCH NOT NOT OR ALL ALL", "a SEARCH (((", "a LIST \"\" *",
        "a CREATE x", "a DELETE x", "a RENAME x y", "a APPEND INBOX {3+}", "abc", "a IDLE", "DONE", "a EXPUNGE",
        "a CLOSE", "a ID (\"name\" \"x\")", "a ENABLE UTF8=ACCEPT", "a STARTTLS", "a AUTHENTICATE PLAIN", "*",
        "a LOGOUT", "a COPY 1 Trash", "a MOVE 1 Trash", "a STATUS INBOX (MESSAGES RECENT)", "a GETQUOTAROOT INBOX",
        "a SORT (REVERSE DATE SUBJECT) UTF-8 ALL", "a UID SORT (SIZE) US-ASCII 1:*", "a SORT (", "a SORT () x",
        "a THREAD REFERENCES UTF-8 ALL", "a UID THREAD ORDEREDSUBJECT UTF-8 ALL", "a THREAD X",
        "a FETCH 1 BINARY[1]", "a FETCH 1:* (BINARY.PEEK[2]<0.10> BINARY.SIZE[1])", "a APPEND INBOX ~{3+}"]
POP3 = ["CAPA", "USER alice@example.test", "PASS alice-pw", "PASS x", "STAT", "LIST", "LIST 1", "UIDL", "RETR 1",
        "TOP 1 0", "DELE 1", "RSET", "NOOP", "STLS", "AUTH PLAIN", "AUTH", "APOP a b", "UTF8", "QUIT", "*"]
SIEVE = ["CAPABILITY", "NOOP", "STARTTLS", "AUTHENTICATE \"PLAIN\"", "AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"",
         "LISTSCRIPTS", "HAVESPACE \"a\" 100", "PUTSCRIPT \"a\" {10+}", "keep;", "CHECKSCRIPT {4+}", "stop",
         "SETACTIVE \"a\"", "GETSCRIPT \"a\"", "DELETESCRIPT \"a\"", "RENAMESCRIPT \"a\" \"b\"", "UNAUTHENTICATE",
         "LOGOUT", "\"", "{"]

garbage = st.binary(min_size=0, max_size=40)


def streams(words: list[str]) -> st.SearchStrategy[tuple[bytes, list[int]]]:
    line = st.one_of(st.sampled_from(words).map(str.encode), garbage,
                     st.tuples(st.sampled_from(words), garbage).map(lambda t: t[0].encode() + b" " + t[1]))
    ending = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
    body = st.lists(st.tuples(line, ending).map(lambda t: t[0] + t[1]), min_size=1, max_size=25).map(b"".join)
    return st.tuples(body, st.lists(st.integers(1, 64), min_size=1, max_size=8))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Loopback is exempt from the login throttle here, so that thousands of bad
    # AUTHs are answered at once rather than delayed (the throttle has its own tests).
    srv = make_server(tmp_path_factory.mktemp("fuzz") / "srv", server={"allow_plaintext_auth": True},
                      limits={"auth_exempt_networks": ["127.0.0.0/8"]})
    srv.start()
    yield srv
    srv.stop()
    log = srv.log()
    bad = [l for l in log.splitlines() if "CRITICAL" in l or "Traceback" in l]
    assert not bad, bad[:10]


def play(port: int, stream: bytes, cuts: list[int]) -> None:
    """Send ``stream`` in chunks of the ``cuts`` sizes (TCP_NODELAY, so chunk edges
    tend to reach the server as separate reads), reading whatever comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.recv(4096)  # the greeting
        s.setblocking(False)
        i, k = 0, 0
        try:
            while i < len(stream):
                n = cuts[k % len(cuts)]
                s.sendall(stream[i:i + n])
                i, k = i + n, k + 1
                try:
                    if not s.recv(65536):
                        return
                except BlockingIOError:
                    pass
            s.settimeout(0.02)
            while s.recv(65536):
                pass
        except OSError:
            return  # the server closed on us, or answers are still coming: both fine


def still_serving(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(4096), "no greeting after a fuzz case"


def fuzz(port: int, words: list[str], name: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(streams(words))
    def case(data: tuple[bytes, list[int]]) -> None:
        stream, cuts = data
        play(port, stream, cuts)
        RUNS[name] = RUNS.get(name, 0) + 1

    started = time.monotonic()
    case()
    still_serving(port)
    print(f"fuzz {name}: {RUNS.get(name, 0)} streams in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("proto,port_name,words", [
    ("smtp", "smtp", SMTP), ("submission", "submission", SMTP), ("imap", "imap", IMAP), ("pop3", "pop3", POP3),
    ("managesieve", "managesieve", SIEVE),
])
def test_protocol_survives_fuzzed_command_streams(server: Server, proto: str, port_name: str, words: list[str]) -> None:
    fuzz(server.ports[port_name], words, proto)
    still_serving(server.ports[port_name])
