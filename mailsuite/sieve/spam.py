"""spamtest (RFC 5235) from what our own server wrote into the message.

We run no content scanner, so the score comes from the Authentication-Results field
our MX adds (RFC 8601), and only from one carrying our own authserv-id: a field with
another id came with the message and proves nothing.  The scale (RFC 5235 3.1:
0 = not tested, 1 = surely not spam ... 10 = surely spam):

- no Authentication-Results of ours: 0 (not tested);
- dmarc=fail: 10; spf=fail (or softfail) with no dkim=pass: 7;
- anything else we checked: 1.

With ``:percent`` (spamtestplus) the same verdict is 0..100, and "not tested" is
also 0 (RFC 5235 3.2 leaves "not tested" out of the percent scale).
"""

from __future__ import annotations

import re

from mailsuite.sieve.message import Message

_RESULT = re.compile(r"\b(spf|dkim|dmarc|arc)\s*=\s*([a-z]+)", re.IGNORECASE)


def spam_score(msg: Message, authserv_id: str, percent: bool = False) -> str:
    results: dict[str, set[str]] = {}
    tested = False
    for value in msg.values("authentication-results"):
        ident = value.split(";", 1)[0].strip().split()[0].lower() if value.strip() else ""
        if not authserv_id or ident != authserv_id.lower():
            continue
        tested = True
        for method, result in _RESULT.findall(value):
            results.setdefault(method.lower(), set()).add(result.lower())
    if not tested:
        return "0"
    if "fail" in results.get("dmarc", set()):
        score = 10
    elif results.get("spf", set()) & {"fail", "softfail"} and "pass" not in results.get("dkim", set()):
        score = 7
    else:
        score = 1
    if percent:
        return str((score - 1) * 100 // 9)
    return str(score)
