"""The MTA-STS policy (RFC 8461) served for ``mta-sts.<domain>`` of each local domain."""

from __future__ import annotations

from tests.support.web import get

PATH = "/.well-known/mta-sts.txt"


def test_policy_is_served_per_local_domain(server_factory) -> None:
    srv = server_factory(http={"mta_sts": {"mode": "enforce", "mx": ["mail.example.test", "*.backup.example.test"],
                                           "max_age": 86400}}).start()
    for domain in ("example.test", "other.test"):
        r = get(srv, PATH, host=f"mta-sts.{domain}", tls=True)
        assert r.status == 200
        assert r.header("content-type").startswith("text/plain")
        assert r.body == (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\n"
                          b"mx: *.backup.example.test\r\nmax_age: 86400\r\n")
    assert get(srv, PATH, host="mta-sts.elsewhere.test", tls=True).status == 404
    assert get(srv, PATH, host="example.test", tls=True).status == 404


def test_mx_defaults_to_the_public_host_name(server_factory) -> None:
    srv = server_factory(http={"public_hostname": "mx.example.test", "mta_sts": {"mode": "testing"}}).start()
    r = get(srv, PATH, host="mta-sts.example.test", tls=True)
    assert r.body == b"version: STSv1\r\nmode: testing\r\nmx: mx.example.test\r\nmax_age: 604800\r\n"


def test_mode_none_serves_no_policy(server) -> None:
    assert get(server, PATH, host="mta-sts.example.test", tls=True).status == 404
