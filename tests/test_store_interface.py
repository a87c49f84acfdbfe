"""The storage interface is the seam under IMAP and POP3 (issue 10 §3 step 3).

The Maildir store provides IMailStore / IAccountStore / IFolder; the protocol packages
import nothing of the store but the interface and its errors; no import cycle is left
inside store/ or imap/; message reading (whole, header only, cached values, SEARCH
fields) is the folder's job.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from mailsuite.store.errors import MessageGone, UnsafeName
from mailsuite.store.interface import IAccountStore, IFolder, IMailStore
from mailsuite.store.mailstore import MaildirStore
from tests.support.store import ACCOUNT, deliver, resolve

PACKAGE = Path(__file__).resolve().parent.parent / "mailsuite"


def _imports(path: Path) -> set[str]:
    """Every mailsuite module a file imports (at any depth: lazy imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mailsuite"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mailsuite"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists() else node.module)
    return out


def _module_graph(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (PACKAGE / package).glob("*.py"):
        name = f"mailsuite.{package}.{path.stem}"
        graph[name] = {m for m in _imports(path) if m.startswith(f"mailsuite.{package}.")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["store", "imap", "pop3"])
def test_no_import_cycle_inside_the_package(package: str) -> None:
    assert _cycles(_module_graph(package)) == []


@pytest.mark.parametrize("package", ["imap", "pop3"])
def test_protocols_reach_the_store_only_through_its_interface(package: str) -> None:
    allowed = {"mailsuite.store.interface", "mailsuite.store.errors", "mailsuite.store"}
    for path in (PACKAGE / package).glob("*.py"):
        used = {m for m in _imports(path) if m.startswith("mailsuite.store")}
        assert used <= allowed, f"{path.name} imports {sorted(used - allowed)}"
    # `from mailsuite.store import errors` is the only form of the bare package allowed
    for path in (PACKAGE / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mailsuite.store":
                assert [a.name for a in node.names] == ["errors"], path.name


def test_the_maildir_store_provides_the_interfaces(store: MaildirStore) -> None:
    assert verifyObject(IMailStore, store)
    account = store.account(ACCOUNT)
    assert verifyObject(IAccountStore, account)
    resolve(account.prepare())
    folder = resolve(account.open("INBOX"))
    try:
        assert verifyObject(IFolder, folder)
    finally:
        folder.close()


def test_an_unsafe_account_name_is_refused_before_any_disk_work(store: MaildirStore) -> None:
    with pytest.raises(UnsafeName):
        store.account("../etc@example.test")


def test_the_folder_reads_messages_whole_or_header_only(store: MaildirStore, tmp_path: Path) -> None:
    body = b"x" * 200_000
    deliver(store.mail_dir, b"From: a@example.test\nSubject: hi\nX-Other: 1\n\n" + body)
    folder = resolve(store.account(ACCOUNT).open("INBOX"))
    try:
        (rec,) = folder.messages()
        assert folder.read_message(rec.uid).endswith(body)
        assert folder.read_header(rec.uid) == b"From: a@example.test\nSubject: hi\nX-Other: 1\n\n"
        with folder.open_message(rec.uid) as f:  # streaming, for big messages
            assert f.read(5) == b"From:"
        # SEARCH fields: absent until a header was read, then kept in the folder cache
        assert folder.search_header(rec.uid) is None
        folder.remember_header(rec.uid, folder.read_header(rec.uid))
        assert folder.search_header(rec.uid) == b"From: a@example.test\nSubject: hi\n\n"
        # cached values are computed once
        calls: list[int] = []
        assert folder.cached(rec.uid, "k", lambda: calls.append(1) or b"v\xe9") == b"v\xe9"
        assert folder.cached(rec.uid, "k", lambda: calls.append(1) or b"other") == b"v\xe9"
        assert calls == [1]
        with pytest.raises(MessageGone):
            folder.read_message(rec.uid + 1)
    finally:
        folder.close()


def test_a_message_expunged_on_disk_reads_as_gone(store: MaildirStore) -> None:
    deliver(store.mail_dir, b"Subject: x\n\nbody\n")
    folder = resolve(store.account(ACCOUNT).open("INBOX"))
    try:
        (rec,) = folder.messages()
        for p in (store.account_dir(ACCOUNT) / "cur").iterdir():
            p.unlink()
        with pytest.raises(MessageGone):
            folder.read_header(rec.uid)
    finally:
        folder.close()
