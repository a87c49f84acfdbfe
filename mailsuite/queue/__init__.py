"""queue/: incoming message files, routing to the store or the spool, and the relay queue."""
