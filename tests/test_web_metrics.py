"""``/metrics`` after real traffic: mail in by SMTP and submission, a rejected
recipient, relayed mail delivered, deferred and bounced by a scripted peer, logins
good and bad over IMAP, POP3 and SMTP AUTH, TLS by STARTTLS and implicit TLS; then
the page is parsed with prometheus_client's own parser."""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.relay import Script, relay_server
from tests.support.tls import client_context
from tests.support.waiting import wait_for
from tests.support.web import get


def scrape(server) -> dict[str, list]:  # type: ignore[no-untyped-def]
    r = get(server, "/metrics")
    assert r.status == 200, r.body
    assert r.header("content-type").startswith("text/plain")
    families = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        families[fam.name] = fam.samples
    return families


def value(families: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for fams in families.values():
        for s in fams:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    assert found, f"no sample {name} {labels}"
    return total


@pytest.fixture
def traffic(server_factory, peers):  # type: ignore[no-untyped-def]
    def rcpt(addr: str) -> str:
        if addr.startswith("gone@"):
            return "550 5.1.1 no such user"
        if addr.startswith("later@"):
            return "451 4.7.1 greylisted"
        return "250 2.1.5 Ok"

    peer = peers(Script(rcpt=rcpt))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600).start()
    # Inbound to local mailboxes (the fast path), and one unknown recipient.
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("someone@far.test", ["alice@example.test"], b"Subject: one\r\n\r\nhello\r\n")
        s.sendmail("someone@far.test", ["bob@example.test"], b"Subject: two\r\n\r\nhello\r\n")
        code, _ = s.rcpt("nobody@example.test") if s.mail("someone@far.test")[0] == 250 else (0, b"")
        assert code == 550
        s.rset()
    # Submission with STARTTLS and AUTH, relayed: delivered, deferred, bounced.
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"]) as s:
        s.starttls(context=client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice@example.test", "wrong")
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["ok@remote.test"], b"From: alice@example.test\r\nSubject: r1\r\n\r\nx\r\n")
        s.sendmail("alice@example.test", ["later@remote.test"], b"From: alice@example.test\r\nSubject: r2\r\n\r\nx\r\n")
        s.sendmail("alice@example.test", ["gone@remote.test"], b"From: alice@example.test\r\nSubject: r3\r\n\r\nx\r\n")
    # IMAP over implicit TLS (one bad password, one good), POP3 with STLS.
    imap = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_context())
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("bob@example.test", "nope")
    imap.logout()
    imap = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_context())
    imap.login("bob@example.test", "bob-pw")
    pop = poplib.POP3("127.0.0.1", srv.ports["pop3"])
    pop.stls(context=client_context())
    pop.user("alice@example.test")
    pop.pass_("alice-pw")
    wait_for(lambda: "status=bounced" in srv.log() and "status=deferred" in srv.log()
             and "status=sent" in srv.log(), what="relay outcomes", server=srv)
    yield srv, imap
    imap.logout()
    pop.quit()


def test_metrics_count_the_traffic(traffic) -> None:
    srv, _imap = traffic
    m = scrape(srv)
    assert value(m, "mailsuite_messages_received_total", service="smtp") == 2
    assert value(m, "mailsuite_messages_received_total", service="submission") == 3
    # The two inbound messages went straight to Maildir (the bounce to alice is the queue's).
    assert value(m, "mailsuite_fast_path_deliveries_total") == 2
    assert value(m, "mailsuite_smtp_rejected_total", service="smtp", code="550", status="5.1.1") == 1
    # smtplib's login() tries PLAIN, then LOGIN: two 535s for one wrong password.
    assert value(m, "mailsuite_smtp_rejected_total", service="submission", code="535", status="5.7.8") == 2
    assert value(m, "mailsuite_messages_queued_total") == 3
    assert value(m, "mailsuite_recipients_total", outcome="delivered", kind="remote") == 1
    assert value(m, "mailsuite_recipients_total", outcome="deferred", kind="remote") == 1
    assert value(m, "mailsuite_recipients_total", outcome="bounced", kind="remote") == 1
    # The deferred message waits in the queue (the bounce's DSN went to alice locally).
    assert value(m, "mailsuite_queue_messages") == 1
    assert value(m, "mailsuite_queue_oldest_age_seconds") > 0
    assert value(m, "mailsuite_delivery_delay_seconds_count", kind="remote") == 1
    assert value(m, "mailsuite_relay_attempt_seconds_count") == 3
    assert value(m, "mailsuite_local_delivery_seconds_count") == 2


def test_metrics_count_logins_connections_and_tls(traffic) -> None:
    srv, _imap = traffic
    m = scrape(srv)
    assert value(m, "mailsuite_logins_total", protocol="imap", result="failed") == 1
    assert value(m, "mailsuite_logins_total", protocol="imap", result="ok") == 1
    assert value(m, "mailsuite_logins_total", protocol="smtp", result="failed") == 2  # PLAIN, then LOGIN
    assert value(m, "mailsuite_logins_total", protocol="smtp", result="ok") == 1
    assert value(m, "mailsuite_logins_total", protocol="pop3", result="ok") == 1
    smtp_listener = srv.sections["smtp"]["listen"][0]
    # The harness's start-up probe is one more plain connection per listener; on an
    # implicit-TLS listener it never finishes a handshake, so it is not a session.
    assert value(m, "mailsuite_connections_total", protocol="smtp", listener=smtp_listener) == 2
    imaps_listener = srv.sections["imap"]["listen_tls"][0]
    assert value(m, "mailsuite_connections_total", protocol="imap", listener=imaps_listener) == 2
    assert value(m, "mailsuite_connections_open", protocol="imap", listener=imaps_listener) == 1  # still logged in
    assert value(m, "mailsuite_connections_open", protocol="smtp", listener=smtp_listener) == 0
    assert value(m, "mailsuite_tls_connections_total", protocol="imap", version="TLSv1.3") == 2
    assert value(m, "mailsuite_tls_connections_total", protocol="submission", version="TLSv1.3") == 1
    assert value(m, "mailsuite_tls_connections_total", protocol="pop3", version="TLSv1.3") == 1
    # The scrape itself is an HTTP connection.
    assert value(m, "mailsuite_connections_total", protocol="http") >= 1


def test_process_metrics_are_present(server) -> None:
    wait_for(lambda: value(scrape(server), "mailsuite_fsync_seconds_count") >= 1, what="fsync probe")
    m = scrape(server)
    assert 0 <= value(m, "mailsuite_reactor_lag_seconds") < 5
    assert value(m, "mailsuite_worker_pool_queue_length") >= 0
    assert value(m, "mailsuite_worker_pool_busy_threads") >= 0
    assert value(m, "mailsuite_ldap_request_seconds_count") == 0  # the file directory here
    assert value(m, "mailsuite_today", what="received") == 0
    assert value(m, "mailsuite_start_time_seconds") > 0


def test_openmetrics_when_the_scraper_asks(server) -> None:
    r = get(server, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.header("content-type").startswith("application/openmetrics-text")
    assert r.body.rstrip().endswith(b"# EOF")


def test_metrics_refused_outside_metrics_networks(server_factory) -> None:
    srv = server_factory(http={"metrics_networks": ["192.0.2.0/24"]}).start()
    r = get(srv, "/metrics")
    assert r.status == 403
    assert b"mailsuite_" not in r.body


def test_metrics_off_means_no_page(server_factory) -> None:
    srv = server_factory(http={"metrics": False}).start()
    assert get(srv, "/metrics").status == 404


def test_the_metric_files_follow_a_fork_to_the_child_s_own_pid() -> None:
    # prometheus-client names a process's value file by the pid it is given; ours is
    # cached (no getpid per update), so a forked child must still see its own.
    import os

    from mailsuite import metrics

    assert metrics._this_pid() == os.getpid()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(w, b"ok" if metrics._this_pid() == os.getpid() else b"no")
        os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    assert os.read(r, 2) == b"ok"
    assert metrics._this_pid() == os.getpid() != child
    os.close(r)
