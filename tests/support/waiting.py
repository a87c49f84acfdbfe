"""Poll until a condition holds: the one way tests wait for a server to catch up."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from tests.support.server import Server


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
             server: "Server | None" = None, interval: float = 0.05) -> Any:
    """The first true value of ``cond()`` within ``timeout`` seconds.

    On timeout it raises AssertionError naming ``what`` (with the tail of the server's
    log when one is given), so ``wait_for(...)`` alone is a check.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    extra = f"\n--- server log ---\n{server.log()[-6000:]}" if server is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
