"""ManageSieve (RFC 5804): clients list, upload, check and activate Sieve scripts."""
