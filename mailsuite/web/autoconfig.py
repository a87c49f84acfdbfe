"""Mail client autoconfiguration: Thunderbird's config-v1.1.xml, Outlook's
autodiscover (POX and the JSON redirect), and an Apple ``.mobileconfig`` profile.

All three describe the listeners of :func:`mailsuite.published.client_endpoints`
for a local domain and say nothing about whether an account exists (any address in a
local domain gets the same answer), so they cannot be used to probe for users.

* Thunderbird (wiki.mozilla.org "Thunderbird:Autoconfiguration:ConfigFileFormat")
  fetches ``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=A`` and
  ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=A``.
* Outlook POSTs a POX request (``.../outlook/requestschema/2006``) naming
  ``EMailAddress`` to ``/autodiscover/autodiscover.xml`` and gets a
  ``responseschema/2006a`` answer with one ``Protocol`` element per server; newer
  Outlooks first GET ``/autodiscover/autodiscover.json/v1.0/<address>?Protocol=AutodiscoverV1``
  and are sent to the POX URL.
* Apple devices install a configuration profile (``com.apple.mail.managed`` payload).
  It is unsigned: iOS shows it as "Not Verified", and the download page says so.
"""

from __future__ import annotations

import json
import plistlib
import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.web import resource
from twisted.web.server import Request

from mailsuite.published import ClientEndpoint, client_endpoints, endpoint_port, public_hostname

if TYPE_CHECKING:  # annotations only: the config module validates with code that uses this package
    from mailsuite import config as config_mod

# Largest autodiscover POST body read (a real request is ~400 bytes).
MAX_POX_BODY = 16 * 1024

POX_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
POX_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
POX_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


def _arg(request: Request, name: bytes) -> str:
    for key, values in request.args.items():
        if key.lower() == name.lower() and values:
            return values[0].decode("utf-8", "replace").strip()
    return ""


def _host(request: Request) -> str:
    return (request.getRequestHostname() or b"").decode("ascii", "replace").lower().rstrip(".")


def local_domain_of(cfg: config_mod.Config, address: str) -> str | None:
    """The local domain of ``address`` (``user@domain``), or None."""
    local, at, domain = address.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at or not local or domain not in cfg.server.domains:
        return None
    return domain


def _not_found(request: Request, what: str) -> bytes:
    request.setResponseCode(404)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"{what}\n".encode()


# -- Thunderbird -------------------------------------------------------------------


def thunderbird_xml(cfg: config_mod.Config, domain: str) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} mail"
    ET.SubElement(provider, "displayShortName").text = domain
    for ep in client_endpoints(cfg):
        tag = "outgoingServer" if ep.protocol == "smtp" else "incomingServer"
        server = ET.SubElement(provider, tag, type=ep.protocol)
        ET.SubElement(server, "hostname").text = ep.hostname
        ET.SubElement(server, "port").text = str(ep.port)
        ET.SubElement(server, "socketType").text = ep.socket_type
        ET.SubElement(server, "authentication").text = "password-cleartext"
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


class ThunderbirdConfig(resource.Resource):
    """``config-v1.1.xml`` for the domain of ``?emailaddress=`` or of the Host
    (``autoconfig.<domain>`` or the domain itself)."""

    isLeaf = True

    def __init__(self, cfg: config_mod.Config) -> None:
        super().__init__()
        self.cfg = cfg

    def render_GET(self, request: Request) -> bytes:
        address = _arg(request, b"emailaddress")
        if address:
            domain = local_domain_of(self.cfg, address)
        else:
            host = _host(request)
            host = host[len("autoconfig."):] if host.startswith("autoconfig.") else host
            domain = host if host in self.cfg.server.domains else None
        if domain is None:
            return _not_found(request, "no mail domain of this server")
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"max-age=3600")
        return thunderbird_xml(self.cfg, domain)


# -- Outlook -----------------------------------------------------------------------


def _pox_protocol(parent: ET.Element, ep: ClientEndpoint, address: str) -> None:
    proto = ET.SubElement(parent, "Protocol")
    ET.SubElement(proto, "Type").text = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}[ep.protocol]
    ET.SubElement(proto, "Server").text = ep.hostname
    ET.SubElement(proto, "Port").text = str(ep.port)
    ET.SubElement(proto, "DomainRequired").text = "off"
    ET.SubElement(proto, "LoginName").text = address
    ET.SubElement(proto, "SPA").text = "off"
    # SSL on + Encryption: "SSL" is implicit TLS, "TLS" is STARTTLS (what Outlook reads).
    ET.SubElement(proto, "SSL").text = "on" if ep.tls else "off"
    ET.SubElement(proto, "Encryption").text = {"SSL": "SSL", "STARTTLS": "TLS", "plain": "None"}[ep.socket_type]
    ET.SubElement(proto, "AuthRequired").text = "on"
    if ep.protocol == "smtp":
        ET.SubElement(proto, "UsePOPAuth").text = "off"
        ET.SubElement(proto, "SMTPLast").text = "off"


def pox_response(cfg: config_mod.Config, address: str) -> bytes:
    root = ET.Element("Autodiscover", xmlns=POX_RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=POX_OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    # One Protocol per kind (Outlook takes the first of each): implicit TLS first.
    seen = set()
    for ep in client_endpoints(cfg):
        if ep.protocol not in seen:
            seen.add(ep.protocol)
            _pox_protocol(account, ep, address)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def pox_error(code: int, message: str) -> bytes:
    root = ET.Element("Autodiscover", xmlns=POX_RESPONSE_NS)
    response = ET.SubElement(root, "Response")
    err = ET.SubElement(response, "Error", Id="0")
    ET.SubElement(err, "ErrorCode").text = str(code)
    ET.SubElement(err, "Message").text = message
    ET.SubElement(err, "DebugData")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def pox_request_address(body: bytes) -> str | None:
    """The ``EMailAddress`` of a POX request, or None if it is not one."""
    try:
        root = ET.fromstring(body)  # expat: no external entities, expansion limits
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rpartition("}")[2] == "EMailAddress" and el.text:
            return el.text.strip()
    return None


class AutodiscoverXML(resource.Resource):
    isLeaf = True

    def __init__(self, cfg: config_mod.Config) -> None:
        super().__init__()
        self.cfg = cfg

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        body = request.content.read(MAX_POX_BODY + 1) if request.content else b""
        if len(body) > MAX_POX_BODY:
            request.setResponseCode(413)
            return pox_error(600, "Invalid Request")
        address = pox_request_address(body)
        if address is None:
            request.setResponseCode(400)
            return pox_error(600, "Invalid Request")
        if local_domain_of(self.cfg, address) is None:
            return pox_error(603, "The e-mail address cannot be found.")
        return pox_response(self.cfg, address)

    # Some clients probe with GET first; Exchange answers an error document too.
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        return pox_error(600, "Invalid Request")


def https_base(cfg: config_mod.Config) -> str:
    port = next((p for p in map(endpoint_port, cfg.http.listen_tls) if p is not None), 443)
    host = public_hostname(cfg)
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


class AutodiscoverJSON(resource.Resource):
    """Outlook's "AutodiscoverV1" lookup: the URL of the POX endpoint."""

    isLeaf = True

    def __init__(self, cfg: config_mod.Config) -> None:
        super().__init__()
        self.cfg = cfg

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        # /autodiscover/autodiscover.json/v1.0/<address>?Protocol=... or ?Email=...
        address = _arg(request, b"email")
        if not address and len(request.postpath) >= 2:
            address = request.postpath[1].decode("utf-8", "replace")
        protocol = _arg(request, b"protocol")
        if protocol.lower() != "autodiscoverv1":
            request.setResponseCode(400)
            return json.dumps({
                "ErrorCode": "InvalidProtocol",
                "ErrorMessage": "The given protocol value is invalid. Supported values are 'AutodiscoverV1'",
            }).encode()
        if local_domain_of(self.cfg, address) is None:
            request.setResponseCode(404)
            return json.dumps({"ErrorCode": "NotFound", "ErrorMessage": "no mail domain of this server"}).encode()
        return json.dumps({
            "Protocol": "AutodiscoverV1",
            "Url": https_base(self.cfg) + "/autodiscover/autodiscover.xml",
        }).encode()


# -- Apple -------------------------------------------------------------------------

PROFILE_NAMESPACE = uuid.UUID("5b0e7a52-63c1-4a7e-9d0e-6d61696c7375")


def mobileconfig(cfg: config_mod.Config, address: str) -> bytes:
    """An unsigned configuration profile with one mail account for ``address``.

    The UUIDs derive from the address, so downloading it again replaces the installed
    profile instead of adding a second account."""
    eps = client_endpoints(cfg)
    incoming = next((e for e in eps if e.protocol == "imap"), None) or next((e for e in eps if e.protocol == "pop3"), None)
    outgoing = next((e for e in eps if e.protocol == "smtp"), None)
    if incoming is None or outgoing is None:
        raise LookupError("no IMAP/POP3 or submission listener is configured")
    domain = address.rpartition("@")[2]
    reverse = ".".join(reversed(public_hostname(cfg).split(".")))
    account: dict[str, Any] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mailsuite.mail.{address}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, "account:" + address)).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountName": address.partition("@")[0],
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": incoming.hostname,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": incoming.tls,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": outgoing.hostname,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": outgoing.tls,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
        "PreventMove": False,
        "PreventAppSheet": False,
        "SMIMEEnabled": False,
        "allowMailDrop": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mailsuite.{address}",
        "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, "profile:" + address)).upper(),
        "PayloadDisplayName": f"Mail for {address}",
        "PayloadDescription": f"IMAP/POP3 and SMTP settings of {domain} for {address}. Unsigned profile.",
        "PayloadOrganization": domain,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


_FORM = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mail settings for iPhone, iPad and Mac</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:1rem auto;padding:0 1rem}}
input,button{{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}}
.warn{{background:#fff4d6;border:1px solid #e0b84a;padding:.5rem}}</style></head>
<body><h1>Mail settings for Apple devices</h1>
<p>Enter your address to download a configuration profile that sets up your mail account.</p>
<p class="warn">The profile is <strong>not signed</strong>: your device shows it as
"Not Verified". It contains only server names and your address, never a password.</p>
<form method="get" action="/mobileconfig">
<label for="address">Email address</label>
<input id="address" name="address" type="email" required placeholder="you@{domain}">
<button type="submit">Download profile</button></form></body></html>
"""


class MobileConfig(resource.Resource):
    """``/mobileconfig``: the download form, or the profile for ``?address=``."""

    isLeaf = True

    def __init__(self, cfg: config_mod.Config) -> None:
        super().__init__()
        self.cfg = cfg

    def render_GET(self, request: Request) -> bytes:
        address = _arg(request, b"address").lower()
        if not address:
            from html import escape

            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return _FORM.format(domain=escape(self.cfg.server.domains[0])).encode()
        if local_domain_of(self.cfg, address) is None or any(c.isspace() or c in '"<>' for c in address):
            return _not_found(request, "not an address of a mail domain of this server")
        try:
            body = mobileconfig(self.cfg, address)
        except LookupError as e:
            return _not_found(request, str(e))
        request.setHeader(b"content-type", b"application/x-apple-aspen-config")
        filename = quote(address.replace("@", "_at_"), safe="") + ".mobileconfig"
        request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode())
        return body
