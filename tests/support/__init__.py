"""Shared helpers for the tests, one copy each.

- ``server``: the real mailsuite (``twistd -n mailsuite``) on free loopback ports.
- ``smtp``, ``imap``, ``pop3``: raw line clients and client shortcuts per protocol.
- ``sockets``: the line client under the raw protocol clients; TCP-like chunking.
- ``web``: one HTTP(S) request to the web listeners, with any Host header.
- ``tls``: client TLS contexts, throw-away CAs and chains, ``openssl s_client``.
- ``dovecot``: Dovecot's imap binary as the reference, and its answers for a corpus.
- ``waiting``: poll until a condition holds; ``reactor``: how long the reactor was held.
- ``programs``: the peer programs (swaks, fetchmail, ...): skip where one is missing,
  fail under ``CI=true``.
- ``fakes``: test doubles for the seams (a cred portal).
- ``relay``: relay peers (smtp-sink, a scripted SMTP peer, a DNS server process).
- ``dns_server``: the twisted.names DNS server that ``relay`` starts.
- ``slapd``: a real OpenLDAP server.
- ``store``: a second store on the same Maildirs, resolving Deferreds, and direct
  Maildir delivery for store unit tests.
"""
