"""Mail authentication: DKIM signing of outgoing mail; SPF, DKIM, ARC and DMARC
checks of incoming mail with one Authentication-Results header; DNS block lists;
SRS for forwarded mail; the DNS records a domain publishes.  All DNS goes through
mailsuite.dns.resolver; all CPU-heavy work (signing, verifying) runs in the worker
pool."""
