"""directory/: the only code that knows where users live (users file or LDAP)."""

from mailsuite.directory.interface import (
    Account,
    DirectoryUnavailable,
    IDirectory,
    Resolution,
    normalize_address,
)

__all__ = ["Account", "DirectoryUnavailable", "IDirectory", "Resolution", "normalize_address"]
