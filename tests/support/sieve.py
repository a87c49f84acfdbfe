"""A Sieve interpreter host for tests: included scripts, folders and duplicate ids
from plain Python values instead of a Maildir (mailsuite.sieve.interpreter.ISieveHost)."""

from __future__ import annotations

from zope.interface import implementer

from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.interpreter import ISieveHost, Script


@implementer(ISieveHost)
class FakeHost:
    def __init__(self, scripts: dict[str, bytes] | None = None, folders: tuple[str, ...] = (),
                 seen: set[str] | None = None, all_folders_exist: bool = False) -> None:
        self.scripts = scripts or {}
        self.folders = folders
        self.seen = seen or set()
        self.all_folders_exist = all_folders_exist

    def load_script(self, location: str, name: str) -> Script | None:
        if name not in self.scripts:
            return None
        cmds, req = compile_script(self.scripts[name])
        return Script(name, cmds, req)

    def mailbox_exists(self, name: str) -> bool:
        return self.all_folders_exist or name in self.folders

    def duplicate_seen(self, handle: str, key: str) -> bool:
        return key in self.seen
