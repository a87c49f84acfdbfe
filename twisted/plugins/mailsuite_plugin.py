"""twistd plugin stub: `twistd mailsuite --config PATH`. All wiring lives in mailsuite.service."""

from twisted.application.service import ServiceMaker

mailsuite = ServiceMaker(
    "mailsuite",
    "mailsuite.service",
    "SMTP, submission, relay queue, Maildir, IMAP4 and POP3 in one service",
    "mailsuite",
)
