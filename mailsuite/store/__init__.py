"""store/: the only code that knows the Maildir++ layout, file names, flags and UIDs."""
