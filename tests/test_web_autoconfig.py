"""Mail client autoconfiguration, fetched from the running server the way each client
does it: Thunderbird's two GETs (schema-checked), Outlook's POX POST and JSON lookup,
and the Apple profile read by plistlib and by Debian's plistutil."""

from __future__ import annotations

import json
import plistlib
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.programs import require
from tests.support.web import get, request

SCHEMA = Path(__file__).parent / "schemas" / "thunderbird-autoconfig-v1.1.xsd"
HOST = "mail.example.test"


def expected_servers(server) -> set[tuple[str, str, int, str]]:  # type: ignore[no-untyped-def]
    p = server.ports
    return {
        ("incomingServer", "imap", p["imaps"], "SSL"), ("incomingServer", "imap", p["imap"], "STARTTLS"),
        ("incomingServer", "pop3", p["pop3s"], "SSL"), ("incomingServer", "pop3", p["pop3"], "STARTTLS"),
        ("outgoingServer", "smtp", p["submissions"], "SSL"), ("outgoingServer", "smtp", p["submission"], "STARTTLS"),
    }


def validate(xml: bytes) -> None:
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log


@pytest.mark.parametrize("host, path", [
    ("autoconfig.example.test", "/mail/config-v1.1.xml"),
    ("example.test", "/.well-known/autoconfig/mail/config-v1.1.xml"),
])
def test_thunderbird_fetches_a_valid_config_naming_the_real_listeners(server, host: str, path: str) -> None:
    # What Thunderbird requests (MailServices accountcreation FetchConfig.sys.mjs).
    r = get(server, f"{path}?emailaddress={quote('alice@example.test')}", host=host, tls=True,
            headers={"Accept": "*/*", "User-Agent": "Mozilla/5.0 Thunderbird/128.0"})
    assert r.status == 200
    assert r.header("content-type").startswith("application/xml")
    validate(r.body)
    root = ET.fromstring(r.body)
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.test"
    servers = set()
    for el in provider:
        if el.tag in ("incomingServer", "outgoingServer"):
            assert el.findtext("hostname") == HOST
            assert el.findtext("username") == "%EMAILADDRESS%"
            servers.add((el.tag, el.get("type"), int(el.findtext("port")), el.findtext("socketType")))
    assert servers == expected_servers(server)
    # Implicit TLS is offered first (RFC 8314), so Thunderbird prefers it.
    first = provider.find("incomingServer")
    assert first.findtext("socketType") == "SSL"


def test_thunderbird_over_plain_http_too(server) -> None:
    r = get(server, "/mail/config-v1.1.xml", host="autoconfig.example.test")
    assert r.status == 200
    validate(r.body)


def test_autoconfig_for_a_foreign_domain_is_404(server) -> None:
    r = get(server, "/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.test", host="autoconfig.example.test")
    assert r.status == 404
    assert get(server, "/mail/config-v1.1.xml", host="autoconfig.elsewhere.test").status == 404


def test_the_answer_does_not_tell_whether_the_account_exists(server) -> None:
    known = get(server, "/mail/config-v1.1.xml?emailaddress=alice%40example.test").body
    unknown = get(server, "/mail/config-v1.1.xml?emailaddress=nobody%40example.test").body
    assert known == unknown


POX_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>%s</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
NS = {"r": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
      "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"])
def test_outlook_pox_post_gets_imap_pop3_and_smtp_settings(server, path: str) -> None:
    r = request(server, "POST", path, tls=True, host="autodiscover.example.test",
                body=POX_REQUEST % b"alice@example.test",
                headers={"Content-Type": "text/xml", "User-Agent": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0)"})
    assert r.status == 200
    root = ET.fromstring(r.body)
    account = root.find("o:Response/o:Account", NS)
    assert account.findtext("o:AccountType", namespaces=NS) == "email"
    assert account.findtext("o:Action", namespaces=NS) == "settings"
    protocols = {p.findtext("o:Type", namespaces=NS): p for p in account.findall("o:Protocol", NS)}
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    for kind, port in (("IMAP", server.ports["imaps"]), ("POP3", server.ports["pop3s"]), ("SMTP", server.ports["submissions"])):
        p = protocols[kind]
        assert p.findtext("o:Server", namespaces=NS) == HOST
        assert int(p.findtext("o:Port", namespaces=NS)) == port
        assert p.findtext("o:SSL", namespaces=NS) == "on"
        assert p.findtext("o:Encryption", namespaces=NS) == "SSL"
        assert p.findtext("o:LoginName", namespaces=NS) == "alice@example.test"


def test_outlook_pox_for_a_foreign_address_is_an_autodiscover_error(server) -> None:
    r = request(server, "POST", "/autodiscover/autodiscover.xml", body=POX_REQUEST % b"eve@elsewhere.test")
    root = ET.fromstring(r.body)
    assert root.findtext("r:Response/r:Error/r:ErrorCode", namespaces=NS) == "603"


def test_outlook_pox_garbage_is_refused(server) -> None:
    r = request(server, "POST", "/autodiscover/autodiscover.xml", body=b"<not xml")
    assert r.status == 400
    entity_bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                   + b"".join(b'<!ENTITY %s "%s">' % (chr(98 + i).encode(), (b"&" + chr(97 + i).encode() + b";") * 10) for i in range(8))
                   + b"]><Autodiscover><Request><EMailAddress>&i;</EMailAddress></Request></Autodiscover>")
    r = request(server, "POST", "/autodiscover/autodiscover.xml", body=entity_bomb)
    assert r.status == 400


def test_a_body_beyond_the_limit_is_413_and_the_server_lives_on(server) -> None:
    r = request(server, "POST", "/autodiscover/autodiscover.xml", body=b"x" * (200 * 1024))
    assert r.status == 413
    assert get(server, "/mail/config-v1.1.xml?emailaddress=alice%40example.test").status == 200


def test_outlook_json_lookup_points_to_the_pox_url(server) -> None:
    r = get(server, "/autodiscover/autodiscover.json/v1.0/alice@example.test?Protocol=AutodiscoverV1", tls=True)
    assert r.status == 200
    assert json.loads(r.body) == {
        "Protocol": "AutodiscoverV1",
        "Url": f"https://{HOST}:{server.ports['https']}/autodiscover/autodiscover.xml",
    }
    r = get(server, "/autodiscover/autodiscover.json?Email=alice%40example.test&Protocol=ActiveSync", tls=True)
    assert r.status == 400
    assert json.loads(r.body)["ErrorCode"] == "InvalidProtocol"


def test_apple_profile_download_page_says_it_is_unsigned(server) -> None:
    r = get(server, "/mobileconfig", tls=True)
    assert r.status == 200
    assert b"not signed" in r.body
    assert b'name="viewport"' in r.body


def test_apple_profile_reads_with_plistlib_and_plistutil(server, tmp_path: Path) -> None:
    r = get(server, "/mobileconfig?address=alice%40example.test", tls=True)
    assert r.status == 200
    assert r.header("content-type") == "application/x-apple-aspen-config"
    assert "attachment" in r.header("content-disposition")
    profile = plistlib.loads(r.body)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "alice@example.test"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"], mail["IncomingMailServerUseSSL"]) == (
        HOST, server.ports["imaps"], True)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (server.ports["submissions"], True)
    assert "Password" not in "".join(k for k in mail if k != "OutgoingPasswordSameAsIncomingPassword")
    # The same download again is the same profile (same UUIDs: it replaces, not adds).
    assert get(server, "/mobileconfig?address=alice%40example.test", tls=True).body == r.body

    plistutil = require("plistutil", "libplist-utils")
    src, binary, back = tmp_path / "a.mobileconfig", tmp_path / "a.bin", tmp_path / "a.xml"
    src.write_bytes(r.body)
    subprocess.run([plistutil, "-i", str(src), "-o", str(binary), "-f", "bin"], check=True, timeout=10)
    assert binary.read_bytes().startswith(b"bplist00")
    subprocess.run([plistutil, "-i", str(binary), "-o", str(back), "-f", "xml"], check=True, timeout=10)
    assert plistlib.loads(back.read_bytes()) == profile


def test_apple_profile_only_for_local_domains(server) -> None:
    assert get(server, "/mobileconfig?address=eve%40elsewhere.test").status == 404
