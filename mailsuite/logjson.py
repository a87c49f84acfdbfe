"""``[log] format = "json"``: the log as one JSON object per line, for Loki, Elastic
and friends.

Each object carries what the text line shows (``time`` in the same format,
``system`` as in the brackets, ``level``, ``namespace``, the formatted ``message``)
plus the event's own fields (``ip``, ``user``, ``qid``...), so a query can use them
without parsing the message; a logged failure adds ``traceback``.  Values that are
not JSON scalars are written as their text, cut at 2000 characters.

twistd chooses where the log goes (``--logfile``, ``-n`` with stdout, ``--syslog``)
before mailsuite could choose a format, but it asks the application for an
``ILogObserver`` component first: :class:`JSONLogSetup` is the outermost service
and sets that component when twistd attaches it to the application, pointing at the
same file twistd would have used.  With ``--syslog`` the text format stays (syslog
adds its own framing).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.application import service
from twisted.logger import FileLogObserver, ILogObserver, formatEvent, formatTime
from twisted.python import logfile

MAX_VALUE = 2000
# Keys of legacy (twisted.python.log) events that are plumbing, not fields.
_LEGACY = frozenset({"message", "isError", "system", "time", "format", "why", "failure", "printed"})


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return text[:MAX_VALUE]


def event_as_json(event: dict[str, Any]) -> str:
    level = event.get("log_level")
    namespace = event.get("log_namespace", "-")
    out: dict[str, Any] = {
        "time": formatTime(event.get("log_time")),
        "level": getattr(level, "name", "info"),
        "namespace": namespace,
        "system": event.get("log_system") or f"{namespace}#{getattr(level, 'name', 'info')}",
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY or key in out:
            continue
        out[key] = _scalar(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = failure.getTraceback()
        except Exception:  # noqa: BLE001 - a broken failure must not break logging
            out["traceback"] = repr(failure)
    return json.dumps(out, ensure_ascii=False, default=str) + "\n"


def json_observer(twistd_options: Any) -> ILogObserver | None:
    """A JSON observer writing where twistd would write, or None to keep twistd's
    (``--syslog``, or no twistd options: tests building the service directly)."""
    if twistd_options is None or twistd_options.get("syslog"):
        return None
    name = twistd_options.get("logfile")
    nodaemon = twistd_options.get("nodaemon")
    if name == "-" or (nodaemon and not name):
        out: Any = sys.stdout
    else:
        out = logfile.LogFile.fromFullPath(name or "twistd.log")
    return FileLogObserver(out, event_as_json)


class JSONLogSetup(service.MultiService):
    """The outermost service: hands twistd the JSON log observer (see the module
    docstring), then behaves as a plain MultiService."""

    def __init__(self, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer

    def setServiceParent(self, parent: Any) -> Any:
        result = super().setServiceParent(parent)
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None:
            set_component(ILogObserver, self.observer)
        return result
