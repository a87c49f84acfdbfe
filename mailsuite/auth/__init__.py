"""auth/: the one cred portal every protocol logs in through."""
