"""queue/: the relay queue: the spool on disk, routing, the scheduler (retries, DSNs)
and the SMTP relay client side of sending."""
