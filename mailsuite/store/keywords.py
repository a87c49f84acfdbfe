"""Flags ↔ Maildir file-name letters, and the per-folder keywords file (blocking).

System flags live in the ``:2,`` info of the file name as the standard letters, so
mutt, mbsync and Dovecot see them: D \\Draft, F \\Flagged, P $Forwarded (as isync
maps it), R \\Answered, S \\Seen, T \\Deleted.  IMAP keywords take the letters a..z,
assigned through ``dovecot-keywords`` in the folder directory (Dovecot's file and
format, ``<index> <name>`` with 0 = a, so a Maildir keeps its keywords when it moves
between Dovecot and us).  The file is rewritten atomically under the folder lock; a
letter, once given to a keyword, keeps it.  Keyword names compare case-insensitively.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from mailsuite import fsutil
from mailsuite.store.errors import TooManyKeywords

KEYWORDS_FILE = "dovecot-keywords"
SYSTEM_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
LETTER_OF = {v.lower(): k for k, v in SYSTEM_FLAGS.items()}
KEYWORD_LETTERS = string.ascii_lowercase
# Flags IMAP sessions may set that are not stored (\Recent is per session).
SESSION_FLAGS = {"\\recent"}
_NOT_ATOM = set('(){%*"\\]')


def is_system_flag(flag: str) -> bool:
    return flag.lower() in LETTER_OF


class Keywords:
    """The keyword ↔ letter map of one folder."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEYWORDS_FILE
        self.names: dict[str, str] = {}  # letter -> name
        self.letters: dict[str, str] = {}  # name.lower() -> letter
        self.mtime_ns = -1

    def load(self) -> bool:
        """(Re)read the file if it changed; True if the map changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            changed = bool(self.names)
            self.names, self.letters, self.mtime_ns = {}, {}, -1
            return changed
        if st.st_mtime_ns == self.mtime_ns:
            return False
        names: dict[str, str] = {}
        for line in self.path.read_text("utf-8", "replace").splitlines():
            idx, _, name = line.partition(" ")
            if idx.isdigit() and int(idx) < 26 and name and " " not in name:
                names[KEYWORD_LETTERS[int(idx)]] = name
        self.mtime_ns = st.st_mtime_ns
        changed = names != self.names
        self.names = names
        self.letters = {n.lower(): l for l, n in names.items()}
        return changed

    def letters_for(self, keywords: set[str] | frozenset[str]) -> str:
        """Letters for ``keywords``, adding new ones to the file (folder lock held)."""
        missing = [k for k in keywords if k.lower() not in self.letters]
        if missing:
            self.load()
            missing = [k for k in missing if k.lower() not in self.letters]
        if missing:
            free = [l for l in KEYWORD_LETTERS if l not in self.names]
            if len(free) < len(missing):
                raise TooManyKeywords("no more keywords can be stored in this folder")
            for k, letter in zip(sorted(missing), free):
                self.names[letter] = k
                self.letters[k.lower()] = letter
            self._write()
        return "".join(self.letters[k.lower()] for k in keywords)

    def known_letters(self, keywords: set[str] | frozenset[str]) -> str:
        """Letters of the keywords that have one (for removing flags: no file write)."""
        return "".join(self.letters[k.lower()] for k in keywords if k.lower() in self.letters)

    def _write(self) -> None:
        text = "".join(f"{KEYWORD_LETTERS.index(l)} {n}\n" for l, n in sorted(self.names.items()))
        # Durable with the folder fsynced: a message's file name holds keyword letters,
        # which mean nothing if the mapping is lost in a crash.
        fsutil.atomic_write(self.path, text.encode("utf-8"))
        self.mtime_ns = os.stat(self.path).st_mtime_ns

    def can_add(self) -> bool:
        return len(self.names) < 26


def split_flags(flags: set[str] | frozenset[str] | list[str]) -> tuple[str, frozenset[str]]:
    """(system letters, keywords) of IMAP flag names; \\Recent and unknown
    backslash-flags are dropped."""
    letters = []
    keywords = set()
    for f in flags:
        low = f.lower()
        if low in LETTER_OF:
            letters.append(LETTER_OF[low])
        elif f.startswith("\\") or not f or any(c in _NOT_ATOM or not "\x21" <= c <= "\x7e" for c in f):
            continue  # not a keyword IMAP can name (RFC 3501 flag-keyword is an atom)
        else:
            keywords.add(f)
    return "".join(sorted(set(letters))), frozenset(keywords)
