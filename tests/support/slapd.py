"""A real OpenLDAP slapd for tests: own slapd.conf, schema, LDIF and test CA in a folder.

:class:`Slapd` starts ``/usr/sbin/slapd`` in the foreground on free loopback ports
(``ldap://`` and ``ldaps://``, StartTLS offered on the first), loads :func:`base_ldif`
with ``slapadd`` before the first start, and can be paused (SIGSTOP: the server accepts
TCP but never answers), resumed, stopped and restarted on the same ports.  Certificates
come from a CA made by :func:`tests.support.tls.make_ca`.

Without a slapd binary the LDAP tests are skipped, except under ``CI=true`` where that
is a failure (scripts/test installs slapd with apt).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import free_port
from tests.support.tls import TestCA

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

SUFFIX = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-secret"
SERVICE_DN = f"cn=mailsuite,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret"
MAIL_GROUP = f"cn=mailusers,ou=groups,{SUFFIX}"

# The attributes mail servers usually take from the Sun/iPlanet or qmail schemas, under
# a private test arc so that this file needs nothing else.
TEST_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.99999.7.1.1 NAME 'mailAlternateAddress'
  DESC 'another address of this entry'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
attributetype ( 1.3.6.1.4.1.99999.7.1.2 NAME 'mailQuota'
  DESC 'mailbox quota in bytes'
  EQUALITY caseIgnoreIA5Match
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.7.1.3 NAME 'mailHost'
  DESC 'the mail node that holds this mailbox (proxy mode)'
  EQUALITY caseIgnoreIA5Match
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.7.1.4 NAME 'mailUTF8Address'
  DESC 'an internationalised address (RFC 6531): UTF-8, which IA5String mail cannot hold'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} )
objectclass ( 1.3.6.1.4.1.99999.7.2.1 NAME 'mailsuiteRecipient' SUP top AUXILIARY
  MAY ( mail $ mailAlternateAddress $ mailQuota $ mailHost $ mailUTF8Address ) )
"""


def slapd_available() -> bool:
    return os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK) and (MODULE_DIR / "back_mdb.la").exists()


def require_slapd() -> None:
    """Skip the calling test module without slapd, or fail under CI=true."""
    import pytest

    from tests.support.programs import CI

    if slapd_available():
        return
    why = f"slapd not found at {SLAPD}: apt-get install --no-install-recommends slapd ldap-utils (scripts/test does)"
    if CI:
        pytest.fail(why)
    pytest.skip(why, allow_module_level=True)


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# ---------------------------------------------------------------------------
# Directory content.


def _ldif_entry(dn: str, attrs: list[tuple[str, str]]) -> str:
    lines = [f"dn: {dn}"]
    for k, v in attrs:
        if v != v.strip() or any(ord(c) > 126 or ord(c) < 32 for c in v) or v.startswith((":", "<")):
            lines.append(f"{k}:: {base64.b64encode(v.encode()).decode()}")
        else:
            lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n\n"


@dataclass(frozen=True)
class Person:
    uid: str
    password: str
    mail: str
    alternates: tuple[str, ...] = ()
    quota: str = ""
    in_mail_group: bool = True
    host: str = ""  # mailHost: the backend node in proxy mode

    @property
    def dn(self) -> str:
        return f"uid={self.uid},ou=people,{SUFFIX}"


PEOPLE = (
    Person("alice", "alice-pw", "alice@example.test", ("a.smith@example.test", "alice@other.test"), quota="1G"),
    Person("bob", "bob-pw", "Bob@Example.test", ("robert@example.test",)),
    # Outside the required group: may neither log in nor receive when it is required.
    Person("carol", "carol-pw", "carol@example.test", in_mail_group=False),
    # Lives elsewhere: mail to the local alternate address is forwarded.
    Person("dave", "dave-pw", "dave@partner.test", ("dave@example.test",)),
)


def base_ldif(extra_people: tuple[Person, ...] = ()) -> str:
    people = PEOPLE + extra_people
    out = [
        _ldif_entry(SUFFIX, [("objectClass", "top"), ("objectClass", "dcObject"), ("objectClass", "organization"),
                             ("dc", "example"), ("o", "Example")]),
        _ldif_entry(f"ou=people,{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", "people")]),
        _ldif_entry(f"ou=groups,{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", "groups")]),
        _ldif_entry(f"ou=services,{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", "services")]),
        _ldif_entry(SERVICE_DN, [("objectClass", "organizationalRole"), ("objectClass", "simpleSecurityObject"),
                                 ("cn", "mailsuite"), ("userPassword", ssha(SERVICE_PW))]),
    ]
    for p in people:
        attrs = [("objectClass", "inetOrgPerson"), ("objectClass", "mailsuiteRecipient"), ("uid", p.uid),
                 ("cn", p.uid.title()), ("sn", p.uid.title()), ("mail", p.mail), ("userPassword", ssha(p.password))]
        attrs += [("mailAlternateAddress", a) for a in p.alternates]
        if p.quota:
            attrs.append(("mailQuota", p.quota))
        if p.host:
            attrs.append(("mailHost", p.host))
        out.append(_ldif_entry(p.dn, attrs))
    members = [("member", p.dn) for p in people if p.in_mail_group]
    out.append(_ldif_entry(MAIL_GROUP, [("objectClass", "groupOfNames"), ("cn", "mailusers")] + members))
    # A mailing list: a group with an address; carol is skipped (not a mail user),
    # dave is forwarded, the nested group adds bob (once).
    out.append(_ldif_entry(f"cn=team,ou=groups,{SUFFIX}", [
        ("objectClass", "groupOfNames"), ("objectClass", "mailsuiteRecipient"), ("cn", "team"),
        ("mail", "team@example.test"), ("mailAlternateAddress", "all@example.test"),
        ("member", PEOPLE[0].dn), ("member", PEOPLE[2].dn), ("member", PEOPLE[3].dn),
        ("member", f"cn=inner,ou=groups,{SUFFIX}"),
    ]))
    # A list of local people only (delivered at once, without the relay queue).
    out.append(_ldif_entry(f"cn=staff,ou=groups,{SUFFIX}", [
        ("objectClass", "groupOfNames"), ("objectClass", "mailsuiteRecipient"), ("cn", "staff"),
        ("mail", "staff@example.test"), ("member", PEOPLE[0].dn), ("member", PEOPLE[1].dn),
    ]))
    out.append(_ldif_entry(f"cn=inner,ou=groups,{SUFFIX}", [
        ("objectClass", "groupOfNames"), ("cn", "inner"), ("member", PEOPLE[1].dn), ("member", PEOPLE[0].dn),
    ]))
    return "".join(out)


# ---------------------------------------------------------------------------
# The server.


@dataclass
class Slapd:
    root: Path
    ca: TestCA
    ldif: str = field(default_factory=base_ldif)
    port: int = field(default_factory=free_port)
    ldaps_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    def _write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "db").mkdir(exist_ok=True)
        (self.root / "mailsuite-test.schema").write_text(TEST_SCHEMA)
        conf = self.root / "slapd.conf"
        conf.write_text(f"""\
include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
include {self.root}/mailsuite-test.schema
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {self.root}/slapd.pid
argsfile {self.root}/slapd.args
TLSCACertificateFile {self.ca.ca_cert}
TLSCertificateFile {self.ca.server_cert}
TLSCertificateKeyFile {self.ca.server_key}
database mdb
maxsize 268435456
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {self.root}/db
index objectClass eq
index uid,mail,mailAlternateAddress eq
index member eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
""")
        return conf

    def load(self) -> None:
        conf = self._write_config()
        ldif = self.root / "base.ldif"
        ldif.write_text(self.ldif)
        subprocess.run([SLAPADD, "-q", "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True)

    def start(self, timeout: float = 15.0) -> "Slapd":
        conf = self.root / "slapd.conf"
        if not conf.exists():
            self.load()
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/"
        self.proc = subprocess.Popen(
            [SLAPD, "-f", str(conf), "-h", urls, "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "slapd.log", "ab"),
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n{(self.root / 'slapd.log').read_text()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not answer on {self.url}")

    def _answers(self) -> bool:
        # An anonymous bind (LDAPv3, empty DN) answered with success.
        msg = bytes.fromhex("300c020101600702010304008000")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(msg)
                return s.recv(64)[:1] == b"\x30"
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: connections still open (the kernel accepts them) but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
