"""Several processes over one store: the parent binds the listeners and runs the relay
queue; worker processes adopt the listening sockets and serve SMTP, submission, IMAP
and POP3 (``[server] processes``)."""
