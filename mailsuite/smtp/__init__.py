"""smtp/: the SMTP server protocol, its delivery policy, and the outbound client."""
