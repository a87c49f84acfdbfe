"""The configured directory backend ([directory] backend = "file" or "ldap")."""

from __future__ import annotations

from typing import Any

from mailsuite.directory.files import FileDirectory
from mailsuite.directory.interface import IDirectory
from mailsuite.workers import IWorkers


def make_directory(cfg: Any, workers: IWorkers, metrics: Any = None) -> IDirectory:
    """The directory for a whole mailsuite Config; ``workers`` checks passwords of the
    file backend (the LDAP backend has its own bounded pool)."""
    d = cfg.directory
    if d.backend == "ldap":
        from mailsuite.directory.ldap import make_ldap_directory  # ldap3 only when used

        return make_ldap_directory(cfg, metrics)
    return FileDirectory(
        d.users_file,
        d.aliases_file,
        cfg.server.domains,
        postmaster=cfg.server.postmaster,
        allow_plaintext_passwords=d.allow_plaintext_passwords,
        recipient_delimiter=cfg.server.recipient_delimiter,
        workers=workers,
    )
