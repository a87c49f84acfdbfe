"""The front-end base shared by every line protocol (SMTP/submission, IMAP, POP3, and
ManageSieve): each security rule of a listener lives here once.

A protocol composes these pieces; none of them writes protocol syntax itself (the
protocol turns an outcome into its own answer through :mod:`.answers`):

* :class:`LineBuffer` (framing.py): the input of one connection.  ``feed(data)``,
  then ``next_line()`` gives lines without their CRLF, ``None`` when no whole line is
  buffered, or :data:`TOO_LONG` once for a line over the limit (its tail is skipped);
  ``take(n)`` / ``take_all()`` give raw bytes (literals, DATA);
  ``hold(transport, busy)`` pauses the transport while a command runs and too much
  pipelined input waits, and resumes it afterwards.
* :func:`start_tls` (framing.py): the STARTTLS / STLS switch.  Everything buffered
  behind the command is dropped (and logged), then the handshake starts: plaintext
  pipelined behind STARTTLS never runs inside TLS (CVE-2011-0411 class).
* :class:`ConnectionCounts`, :func:`set_no_delay` and :func:`ack_now` (connections.py): the per-IP
  connection limit (one count shared by the listeners of a role), TCP_NODELAY and
  TCP_QUICKACK under any TLS wrappers.
* :class:`SASLExchange` (sasl.py): PLAIN (RFC 4616) and LOGIN, one decoder for every
  protocol.  ``start(initial)`` and ``respond(line)`` return a challenge (bytes, for
  the protocol to base64 and frame) or :class:`Credentials`; bad input raises
  :class:`SASLError` with an :class:`Outcome`.
* :class:`LoginGate` (login.py): login-with-throttle, the one glue between the auth
  throttle (auth/throttle.py) and the cred portal.  ``login(ip, credentials,
  interface)`` fires with a :class:`Login` or fails with :class:`LoginFailed` whose
  ``outcome`` says which answer to give; it counts failures, logs the fail2ban line,
  refuses during a cool-down and applies the authorization-identity rule.
* :class:`RequestDeadline` (pacing.py): a slow client's request (a command line,
  DATA, a literal) must arrive within a deadline stretched by a minimum data rate;
  ``received(n)`` per chunk, ``open(is_open)`` after each round, ``stop()`` at the end.
* :func:`sending.send` (sending.py): a reply given straight to the socket of a plain
  TCP connection when nothing is queued before it, else ``transport.write``; saves a
  reactor round per command.
* :class:`Outcome` and :func:`classify` (answers.py): the one mapping of failures to
  temporary or permanent answers, with each protocol's answer in one table.
"""

from mailsuite.frontend.answers import (
    IMAP_ANSWERS, MANAGESIEVE_ANSWERS, POP3_ANSWERS, SMTP_ANSWERS, Outcome, classify,
)
from mailsuite.frontend.connections import ConnectionCounts, Slot, ack_now, set_no_delay
from mailsuite.frontend.framing import TOO_LONG, LineBuffer, start_tls
from mailsuite.frontend.login import Login, LoginFailed, LoginGate
from mailsuite.frontend.pacing import RequestDeadline
from mailsuite.frontend.sasl import MECHANISMS, Credentials, SASLError, SASLExchange

__all__ = [
    "IMAP_ANSWERS", "MANAGESIEVE_ANSWERS", "POP3_ANSWERS", "SMTP_ANSWERS", "Outcome", "classify",
    "ConnectionCounts", "Slot", "ack_now", "set_no_delay",
    "TOO_LONG", "LineBuffer", "start_tls",
    "Login", "LoginFailed", "LoginGate", "RequestDeadline",
    "MECHANISMS", "Credentials", "SASLError", "SASLExchange",
]
