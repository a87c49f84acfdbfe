"""IMAP4rev1 server: protocol, session views over the store, and the pure data modules (mime, search); modified UTF-7 is mailsuite.mutf7."""
