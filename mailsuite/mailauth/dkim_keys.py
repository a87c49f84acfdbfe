"""DKIM keys on disk: ``<data_dir>/dkim/<domain>/<selector>.key`` (mode 0600).

RSA keys are PEM (PKCS#8, 2048 bits); Ed25519 keys (RFC 8463) are the base64 32-byte
seed, the form dkimpy and ``dknewkey --ktype ed25519`` use.  Which key signs is
config (``[dkim] selector`` and ``selectors``); any other key on disk is only
published (``mailsuite dns-records``), so a new selector can be generated and put
in DNS before the config switches to it (key rotation).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsuite.fsutil import atomic_write

# A selector is a DNS label (RFC 6376 3.1): it names a file, so nothing else passes.
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class DKIMKeyError(Exception):
    """A key that cannot be made or read; the message says which and why."""


@dataclass(frozen=True)
class DKIMKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    private: bytes  # what dkimpy's sign() takes

    @property
    def signature_algorithm(self) -> bytes:
        return b"ed25519-sha256" if self.algorithm == "ed25519" else b"rsa-sha256"

    def public_b64(self) -> str:
        if self.algorithm == "ed25519":
            seed = base64.b64decode(self.private)
            pub = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return base64.b64encode(raw).decode()
        key = serialization.load_pem_private_key(self.private, password=None)
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def txt_record(self) -> str:
        """The TXT value to publish at ``<selector>._domainkey.<domain>``."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_b64()}"


def check_names(domain: str, selector: str) -> None:
    if not _DOMAIN.match(domain):
        raise DKIMKeyError(f"{domain!r} is not a lower-case domain name")
    if not _LABEL.match(selector):
        raise DKIMKeyError(f"{selector!r} is not a valid selector (letters, digits, '-')")


def key_dir(data_dir: Path) -> Path:
    return data_dir / "dkim"


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    check_names(domain, selector)
    return key_dir(data_dir) / domain / f"{selector}.key"


def _algorithm_of(data: bytes) -> str:
    return "rsa" if data.lstrip().startswith(b"-----BEGIN") else "ed25519"


def load(data_dir: Path, domain: str, selector: str) -> DKIMKey:
    """Read one key; raises DKIMKeyError naming the file."""
    path = key_path(data_dir, domain, selector)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DKIMKeyError(f"{path}: {e.strerror}") from None
    algorithm = _algorithm_of(data)
    try:
        if algorithm == "rsa":
            serialization.load_pem_private_key(data, password=None)
        else:
            data = data.strip()
            if len(base64.b64decode(data, validate=True)) != 32:
                raise ValueError("not 32 bytes")
    except ValueError as e:
        raise DKIMKeyError(f"{path}: not an RSA PEM or Ed25519 key: {e}") from None
    return DKIMKey(domain, selector, algorithm, data)


def keys_on_disk(data_dir: Path, domain: str) -> list[DKIMKey]:
    """Every readable key of ``domain``, by selector (for dns-records)."""
    d = key_dir(data_dir) / domain
    out = []
    if d.is_dir():
        for p in sorted(d.glob("*.key")):
            try:
                out.append(load(data_dir, domain, p.stem))
            except DKIMKeyError:
                continue
    return out


def generate(data_dir: Path, domain: str, selector: str, algorithm: str = "rsa", bits: int = 2048) -> DKIMKey:
    """Make a new key file (refuses to overwrite one: that would break the
    published record); returns the key."""
    path = key_path(data_dir, domain, selector)
    if path.exists():
        raise DKIMKeyError(f"{path} already exists; pick a new selector to rotate keys")
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    elif algorithm == "ed25519":
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        data = base64.b64encode(seed) + b"\n"
    else:
        raise DKIMKeyError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start (never readable by others, not even briefly).
    atomic_write(path, data, mode=0o600)
    return load(data_dir, domain, selector)
