"""The web service: one twisted.web Site in the mailsuite process.

It serves mail client autoconfiguration (Thunderbird, Outlook, Apple), the MTA-STS
policy of every local domain, Prometheus metrics and the admin pages, on the
``[http]`` listeners (plain and TLS, TLS with the same reloadable certificates as the
mail services).  :mod:`mailsuite.web.service` wires it; each page lives in the module
named for it.
"""
