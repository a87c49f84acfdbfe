"""IMAP4rev1 server: protocol, session views over the store, and the pure data modules (utf7, mime, search)."""
