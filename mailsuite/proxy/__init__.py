"""Proxy mode ([proxy]): IMAP, POP3 and submission listeners that log the user in and
hand the session to the user's backend node, named by the directory."""
