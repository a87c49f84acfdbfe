"""IMAP4rev2 (RFC 9051) for one session, next to IMAP4rev1 (RFC 3501).

The server advertises both ``IMAP4rev1`` and ``IMAP4rev2``; a session speaks rev1
until the client says ``ENABLE IMAP4rev2`` (RFC 9051 6.3.1), and rev1 sessions behave
exactly as before.  Most of rev2 is rev1 plus extensions this server already has
(NAMESPACE, UNSELECT, UIDPLUS, ESEARCH, SEARCHRES, ENABLE, IDLE, SASL-IR, LIST-EXTENDED,
LIST-STATUS, MOVE, BINARY, SPECIAL-USE, STATUS=SIZE, STATUS DELETED, LITERAL+ which
covers rev2's LITERAL-).  What changes for an enabled session (RFC 9051 Appendix E):

* no ``\\Recent``: SELECT sends no ``* n RECENT``, nor does news of new mail, and the
  session never claims \\Recent for itself (the view's recent set stays empty, so
  FETCH FLAGS never shows it), which leaves \\Recent to the next rev1 session;
* SELECT/EXAMINE answer FLAGS, EXISTS, the LIST of the mailbox, UIDVALIDITY, UIDNEXT
  and PERMANENTFLAGS (6.3.2): no ``[UNSEEN n]`` (gone from rev2), and ``* OK
  [CLOSED]`` first when another mailbox was selected (7.1);
* ``SEARCH`` without RETURN is ``SEARCH RETURN (ALL)``: answered ``* ESEARCH (TAG
  "t") [UID] ALL set``, never ``* SEARCH`` (6.4.4, 7.3.4);
* mailbox names travel as UTF-8, not modified UTF-7 (5.1), as after UTF8=ACCEPT;
* RENAME is followed by ``* LIST () "." new ("OLDNAME" (old))`` (the LIST extended
  data item of 7.3.1), LIST gives \\HasChildren/\\HasNoChildren on \\NonExistent
  names too, and DELETE of a \\Noselect name with children is ``NO [HASCHILDREN]``;
* FETCH or STORE that named messages another session expunged (not yet told) ends
  ``OK [EXPUNGEISSUED]`` (7.1).

This mixin keeps the flag and the small pieces of output; commands.py and selected.py
ask it where rev1 and rev2 differ.
"""

from __future__ import annotations

from typing import Any

from mailsuite.imap import wire

REV2 = "IMAP4rev2"


class Rev2Commands:
    """Mixed into IMAPServer: whether this session enabled IMAP4rev2."""

    rev2 = False
    utf8: bool
    selected: Any

    def enable_rev2(self, caps: list[str]) -> list[bytes]:
        """``ENABLE IMAP4rev2``: the words for ``* ENABLED`` (only when newly on).  Names
        are UTF-8 from now on; an already selected mailbox stops showing \\Recent."""
        if REV2.upper() not in caps or self.rev2:  # the parser gives the words upper-cased
            return []
        self.rev2 = True
        self.utf8 = True
        if self.selected is not None:
            self.selected.rev2 = True
            self.selected.recent = set()
        return [b" " + REV2.encode()]

    def select_list_line(self, name: str) -> bytes:
        """The LIST response a rev2 SELECT/EXAMINE includes (RFC 9051 6.3.2: its
        attributes MAY be left out)."""
        return b'* LIST () "." %s\r\n' % wire.mailbox(name, True)

    def oldname_line(self, old: str, new: str) -> bytes:
        """What a rev2 RENAME adds: the new name with its OLDNAME (RFC 9051 7.3.1)."""
        return b'* LIST () "." %s ("OLDNAME" (%s))\r\n' % (wire.mailbox(new, True), wire.mailbox(old, True))
