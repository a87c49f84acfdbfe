"""pop3/: the POP3 server (RFC 1939, CAPA/RESP-CODES RFC 2449, STLS RFC 2595, AUTH
PLAIN RFC 5034) over INBOX of the Maildir store."""
