"""Where a listener's socket comes from.

The suite builds every protocol factory the same way whatever the process model, and
asks one :class:`IListenerBinder` to serve it on an endpoint string:

- :class:`EndpointBinder` (``processes = 1``): listen on the endpoint here;
- :class:`SharingBinder` (the parent of several workers): bind the endpoint as root in
  ``privilegedStartService``, never accept on it, and keep its descriptor for the
  workers, which inherit it (the kernel hands each new connection to one of the
  processes blocked in accept; no SO_REUSEPORT, so no connection is lost when a
  worker dies: the others keep accepting from the same queue);
- :class:`AdoptingBinder` (a worker): ``reactor.adoptStreamPort`` on the inherited
  descriptor.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from twisted.application import service, strports
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from zope.interface import Interface, implementer


class IListenerBinder(Interface):
    def bind(parent: service.MultiService, desc: str, factory: Any) -> None:
        """Serve ``factory`` on the listener named by endpoint string ``desc``, as a
        child service of ``parent``."""


def _cannot_listen(e: CannotListenError) -> None:
    # twistd has already pointed stderr at its log by now, so this lands there.
    sys.stderr.write(f"mailsuite: cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}\n")
    raise SystemExit(1) from None


class _ListenerService(StreamServerEndpointService):
    """A listener that reports a port it cannot bind in one line, not a traceback."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            _cannot_listen(e)


@implementer(IListenerBinder)
class EndpointBinder:
    """One process: listen and accept here."""

    def bind(self, parent: service.MultiService, desc: str, factory: Any) -> None:
        svc = strports.service(desc, factory)
        svc.__class__ = _ListenerService
        svc.setServiceParent(parent)


@dataclass(frozen=True)
class SharedSocket:
    desc: str
    fd: int
    family: int


class _Unused(Factory):
    """The parent never accepts on a shared listener; this only satisfies listen()."""

    noisy = False


class _SharedListener(service.Service):
    def __init__(self, reactor: Any, desc: str, binder: "SharingBinder") -> None:
        self.reactor = reactor
        self.desc = desc
        self.binder = binder
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        results: list[Any] = []
        d = serverFromString(self.reactor, self.desc).listen(_Unused())
        d.addBoth(results.append)  # TCP and UNIX endpoints listen synchronously
        if not results:
            raise RuntimeError(f"{self.desc}: this endpoint cannot be shared between processes")
        if isinstance(results[0], Exception) or hasattr(results[0], "trap"):
            err = getattr(results[0], "value", results[0])
            if isinstance(err, CannotListenError):
                _cannot_listen(err)
            raise err
        self.port = results[0]
        # The workers accept; a parent reading the socket would take connections it
        # cannot serve.
        self.port.stopReading()
        self.binder.sockets.append(SharedSocket(self.desc, self.port.fileno(), self.port.socket.family))

    def startService(self) -> None:
        if self.port is None:  # started without privilegedStartService (tests)
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            self.binder.sockets = [s for s in self.binder.sockets if s.desc != self.desc]
            return port.stopListening()
        return None


@implementer(IListenerBinder)
class SharingBinder:
    """The parent of several workers: bind, do not accept, hand the sockets on."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.sockets: list[SharedSocket] = []

    def bind(self, parent: service.MultiService, desc: str, factory: Any) -> None:
        _SharedListener(self.reactor, desc, self).setServiceParent(parent)


class _AdoptedListener(service.Service):
    def __init__(self, reactor: Any, inherited: SharedSocket, factory: Any) -> None:
        self.reactor = reactor
        self.inherited = inherited
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        self.port = self.reactor.adoptStreamPort(self.inherited.fd, self.inherited.family, self.factory)
        # adoptStreamPort duplicated the descriptor; ours is no longer needed.
        os.close(self.inherited.fd)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


@implementer(IListenerBinder)
class AdoptingBinder:
    """A worker: serve on the descriptors inherited from the parent, by endpoint string."""

    def __init__(self, reactor: Any, inherited: list[SharedSocket]) -> None:
        self.reactor = reactor
        self.inherited = {s.desc: s for s in inherited}

    def bind(self, parent: service.MultiService, desc: str, factory: Any) -> None:
        s = self.inherited.get(desc)
        if s is None:
            raise RuntimeError(f"worker: the parent passed no socket for listener {desc}")
        _AdoptedListener(self.reactor, s, factory).setServiceParent(parent)


FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}
