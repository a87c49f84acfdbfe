"""The peer programs the tests drive, each from a Debian package that scripts/test
installs and checks.  Where one is missing, a test that needs it is skipped on a
developer's machine and fails under ``CI=true`` (a skipped peer must never pass CI)."""

from __future__ import annotations

import os
import shutil

import pytest

CI = os.environ.get("CI", "").lower() == "true"


def find(program: str) -> str | None:
    """The program's path: a name on PATH (or in /usr/sbin, where Postfix, slapd and
    OpenDKIM put theirs), or an absolute path that exists."""
    if os.path.isabs(program):
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _why(program: str, package: str) -> str:
    return f"{program} not found: apt-get install --no-install-recommends {package} (scripts/test does)"


def require(program: str, package: str) -> str:
    """The program's path, inside a test or fixture; skip without it (fail under CI)."""
    path = find(program)
    if path is None:
        if CI:
            pytest.fail(_why(program, package))
        pytest.skip(_why(program, package))
    return path


def needs(*pairs: tuple[str, str], root: bool = False) -> pytest.MarkDecorator:
    """A mark (test or ``pytestmark``) for tests that need these (program, package)
    pairs (and root, with ``root``): skipped where one is missing, except under CI,
    where the test runs and fails."""
    why = [_why(p, pkg) for p, pkg in pairs if find(p) is None]
    if root and os.geteuid() != 0:
        why.append("needs root")
    return pytest.mark.skipif(bool(why) and not CI, reason="; ".join(why))


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        if CI:
            pytest.fail(f"needs root: {why}")
        pytest.skip(f"needs root: {why}")
