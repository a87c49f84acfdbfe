"""mailsuite: a Twisted mail server suite for small offices."""

__version__ = "0.1.0"
