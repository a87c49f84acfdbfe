"""The admin pages at ``/admin/``: accounts, aliases, the queue, DNS records and a
dashboard, for the accounts listed in ``[http] admins``.

Server-rendered with twisted.web.template (no JavaScript at all), over TLS only.
Login goes through the shared cred portal and auth throttle (``proto=http`` in the
fail2ban line); the session cookie is ``__Host-`` prefixed, Secure, HttpOnly and
SameSite=Strict; every form carries a CSRF token checked on POST.  Modules:
:mod:`.sessions` (session store), :mod:`.data` (blocking edits of the users and
aliases files, run in the worker pool), :mod:`.layout` (page frame and CSS),
:mod:`.pages` (the resource and its pages).
"""

from zope.interface import Interface


class IAdmin(Interface):
    """What the admin login asks the realm for: the directory Account."""
