"""The IMAP protocol's input framing, in process (StringTransport): however TCP splits
the bytes, lines, literals and LITERAL+ give the same responses (hypothesis)."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import StringTransport

from mailsuite.config import IMAPConfig
from mailsuite.imap.server import IMAPFactoryConfig, IMAPServerFactory
from tests.support.fakes import FakePortal
from tests.support.sockets import split_at

# The avatar: an account without quota limits, as IMAP's CAPABILITY reads it.
PORTAL = FakePortal(lambda user, pw: (user, pw) == (b"us er", b"p\"w{3}"),
                    avatar=lambda name: SimpleNamespace(name=name, quotas=None))


def run(chunks: list[bytes]) -> bytes:
    conf = IMAPFactoryConfig(hostname="h", service=IMAPConfig(), portal=PORTAL,
                             allow_plaintext_auth=True, throttle=None)
    proto = IMAPServerFactory(conf).buildProtocol(None)
    tr = StringTransport(peerAddress=SimpleNamespace(host="127.0.0.1"))
    proto.makeConnection(tr)
    for c in chunks:
        proto.dataReceived(c)
    out = tr.value()
    proto.connectionLost(None)
    return out


SCRIPT = (
    b"a1 CAPABILITY\r\n"
    b"a2 NOOP\r\n"
    b"a3 LOGIN {5}\r\nus er {6+}\r\np\"w{3}\r\n"
    b"a4 ID (\"name\" {4+}\r\ntest)\r\n"
    b"bogus\r\n"
    b"a5 FROB\r\n"
    b"a6 NAMESPACE\r\n"
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_responses_do_not_depend_on_how_input_is_split(cuts: list[int]) -> None:
    assert run(split_at(SCRIPT, cuts)) == run([SCRIPT])


def test_the_script_gets_the_expected_answers() -> None:
    out = run([SCRIPT]).split(b"\r\n")
    tagged = [line for line in out if line[:2] in (b"a1", b"a2", b"a3", b"a4", b"a5", b"a6", b"* ")]
    assert b"a3 OK Logged in" in out
    assert out.count(b"+ OK") == 1  # only the synchronizing literal is invited
    assert b"bogus BAD Missing command" in out
    assert b"a5 BAD Unknown command FROB" in out
    assert b'* NAMESPACE (("" ".")) NIL NIL' in out
    assert tagged


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    run([data])


def test_a_long_answer_leaves_piece_by_piece_while_it_is_made() -> None:
    """Output is gathered while a command runs and sent at its end; a long answer
    (FETCH 1:* over a big folder) asks ``drained()`` between pieces, and each piece
    then goes out at once, so the client reads one while the server makes the next
    (before, 35 MB of FETCH (ENVELOPE) to imaplib took the server's time plus the
    client's)."""
    conf = IMAPFactoryConfig(hostname="h", service=IMAPConfig(), portal=PORTAL,
                             allow_plaintext_auth=True, throttle=None)
    proto = IMAPServerFactory(conf).buildProtocol(None)
    tr = StringTransport(peerAddress=SimpleNamespace(host="127.0.0.1"))
    proto.makeConnection(tr)
    tr.clear()
    proto._cork()  # as while the server works through a client's input
    proto.write_pieces([b"* 1 FETCH (FLAGS ())\r\n"])
    assert tr.value() == b""
    fired: list[object] = []
    proto.drained().addCallback(fired.append)
    assert fired == [None]
    assert tr.value() == b"* 1 FETCH (FLAGS ())\r\n"
    proto.write_pieces([b"* 2 FETCH (FLAGS ())\r\n"])  # gathered again until the end
    assert tr.value() == b"* 1 FETCH (FLAGS ())\r\n"
    proto._uncork()
    assert tr.value() == b"* 1 FETCH (FLAGS ())\r\n* 2 FETCH (FLAGS ())\r\n"
    proto.connectionLost(None)
