"""DNS for the whole suite: one resolver object (``resolver.Resolver``) built from
``[dns]`` and injected into everything that looks names up (relay MX routing, SPF,
DKIM, DMARC, DNSBL, DANE, ``mailsuite dns-check``)."""
