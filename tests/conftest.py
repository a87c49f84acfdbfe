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
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A MaildirStore in tmp_path whose blocking work runs inline (Deferreds fire at
    once), on a clock that only moves when a test advances it."""
    from twisted.internet.task import Clock

    from mailsuite.store.mailstore import MaildirStore
    from mailsuite.store.notify import ChangeHub
    from mailsuite.workers import InlineWorkers

    return MaildirStore(tmp_path / "mail", InlineWorkers(), ChangeHub(), Clock(), linger=0)
