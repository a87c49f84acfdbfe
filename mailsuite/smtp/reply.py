"""SMTP replies as values: a code, an enhanced status code (RFC 3463) and text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply(Exception):
    code: int
    status: str  # enhanced status code, e.g. "5.1.1"; "" for none (greeting, 354)
    text: str

    def lines(self) -> bytes:
        parts = self.text.split("\n")
        out = []
        for i, part in enumerate(parts):
            sep = " " if i == len(parts) - 1 else "-"
            status = f"{self.status} " if self.status else ""
            out.append(f"{self.code}{sep}{status}{part}\r\n")
        return "".join(out).encode("utf-8", "replace")

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500
