"""Fixtures: a running mailsuite per test, stopped afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.server import Server, make_server

# Fixtures shared by several modules: the IMAP server and its accounts, relay peers,
# the admin pages' server.
pytest_plugins = ["tests.support.imap", "tests.support.relay", "tests.support.admin"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = make_server(tmp_path / "srv")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def build(name: str = "srv", **kw) -> Server:  # type: ignore[no-untyped-def]
        srv = make_server(tmp_path / name, **kw)
        started.append(srv)
        return srv

    yield build
    for srv in started:
        srv.stop()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A MaildirStore in tmp_path whose blocking work runs inline (Deferreds fire at once)."""
    from mailsuite import workers
    from mailsuite.store.mailstore import MaildirStore
    from tests.support.store import inline_run

    monkeypatch.setattr(workers, "run", inline_run)
    return MaildirStore(tmp_path / "mail", linger=0)
