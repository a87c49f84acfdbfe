"""The seams of DESIGN.md, checked on the source: which layer may import which.

Imports are read with ``ast`` from every module under ``mailsuite/`` (function-level
imports included: a lazy import is still a dependency).  A "package" below is a
subpackage (``mailsuite.queue``) or a top-level module (``mailsuite.config``).
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mailsuite"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    """mailsuite.queue.spool -> mailsuite.queue; mailsuite.config -> mailsuite.config."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports() -> dict[str, set[str]]:
    """module -> every mailsuite module or name it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        found: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Imports under "if TYPE_CHECKING:" serve annotations only: not a dependency at run time.
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from mailsuite import fsutil" imports the module mailsuite.fsutil.
                found.update(f"{node.module}.{a.name}" for a in node.names)
                found.add(node.module)
        out[module] = {m for m in found if m == "mailsuite" or m.startswith("mailsuite.")}
    return out


IMPORTS = _imports()


def _importing(prefix: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in IMPORTS.items() if m == prefix or m.startswith(prefix + ".")}


def _offenders(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} imports {d}"
        for m, deps in _importing(importer).items()
        for d in deps
        if any(d == f or d.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_smtp_knows_delivery_only_through_the_handoff() -> None:
    assert _offenders("mailsuite.smtp", ("mailsuite.queue", "mailsuite.store", "mailsuite.delivery")) == []


def test_the_handoff_depends_on_nothing_but_the_durability_module() -> None:
    deps = {d for d in IMPORTS["mailsuite.handoff"] if d != "mailsuite"}
    assert deps <= {"mailsuite.fsutil"}


def test_delivery_knows_neither_the_front_ends_nor_the_queue() -> None:
    assert _offenders("mailsuite.delivery", ("mailsuite.smtp", "mailsuite.queue", "mailsuite.imap",
                                             "mailsuite.pop3")) == []


# Programs: the admin command and the worker process's main (run with -m, never
# imported).  They may import the wiring; nothing imports them.
ENTRY_POINTS = ("mailsuite.cli", "mailsuite.process.worker")


def test_nothing_below_the_wiring_imports_it() -> None:
    """service.py wires; the entry points run it: no layer reaches back up to them."""
    wiring = ("mailsuite.service",) + ENTRY_POINTS
    assert [o for o in _offenders("mailsuite", wiring) if not o.startswith(wiring)] == []


# The storage interface (store/interface.py, with its errors) is all IMAP and POP3
# know of the store, as Dovecot's protocols know lib-storage.
STORE_SEAM = {
    "mailsuite.imap": {"mailsuite.store", "mailsuite.store.interface", "mailsuite.store.errors"},
    "mailsuite.pop3": {"mailsuite.store", "mailsuite.store.interface", "mailsuite.store.errors"},
}


@pytest.mark.parametrize("protocol", sorted(STORE_SEAM))
def test_imap_and_pop3_reach_the_store_only_through_its_seam(protocol: str) -> None:
    # A dotted name is a module, or a name in the module that holds it.
    used = {
        d if d in IMPORTS else d.rsplit(".", 1)[0]
        for deps in _importing(protocol).values()
        for d in deps
        if d == "mailsuite.store" or d.startswith("mailsuite.store.")
    }
    assert used <= STORE_SEAM[protocol]


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, deps in IMPORTS.items():
        if module in ENTRY_POINTS:
            continue
        a = _package_of(module)
        for d in deps:
            b = _package_of(d)
            if b not in (a, "mailsuite"):
                graph[a].add(b)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


# Cycles present when this test was written, for their owners to cut (then remove the
# entry): mailauth/records.py (DNS records) reads the public host name and MTA-STS
# policy id from web/, and web/admin/pages.py shows those records.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycle_between_packages() -> None:
    graph = _package_graph()
    cycles = [c for c in _cycles(graph) if c not in KNOWN_CYCLES]
    detail = [
        f"{a} -> {b} ({', '.join(sorted(m for m in IMPORTS if _package_of(m) == a and any(_package_of(d) == b for d in IMPORTS[m])))})"
        for comp in cycles for a in comp for b in sorted(graph[a]) if b in comp
    ]
    assert cycles == [], "\n".join(detail)


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
