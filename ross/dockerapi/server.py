# -*- test-case-name: ross.test.integration.test_dockerapi -*-
"""
The Docker API's listeners: a twisted.web site on unix sockets and TCP
(TLS, mutual TLS), whose connections can be hijacked (docker's attach and
exec: after C{101 UPGRADED} the connection is a raw byte stream both ways,
and a client's half-close is the end of its input).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ross.address import Listener
from ross.engine.fsutil import prepare_socket_path
from ross.protocols.firstuse import FirstUseFactory

if TYPE_CHECKING:
    from ross.protocols.hijack import HijackSite


class TLSMaterial(Protocol):
    """
    A server certificate and key, and with C{ca} the CA client
    certificates must chain to (the daemon's --tls-* files).
    """

    @property
    def cert(self) -> bytes: ...

    @property
    def key(self) -> bytes: ...

    @property
    def ca(self) -> bytes | None: ...


def tls_options(tls: TLSMaterial) -> Any:
    """
    Twisted's TLS options for C{tls}: with a CA, clients must present a
    certificate it signed (mutual TLS), as on the gRPC listener.
    """
    from twisted.internet import ssl

    certificate = ssl.PrivateCertificate.loadPEM(tls.cert + b"\n" + tls.key)
    if tls.ca is None:
        return certificate.options()
    return certificate.options(ssl.Certificate.loadPEM(tls.ca))


class DockerAPIService(Service):
    """
    Serves the Docker API on every listener while running: the site
    C{make_site} returns, made for the first client (L{FirstUseFactory}).
    """

    _log = Logger()

    def __init__(self, reactor: Any, make_site: Callable[[], HijackSite], listeners: Sequence[Listener],
                 tls: TLSMaterial | None = None) -> None:
        self._reactor = reactor
        self.site = FirstUseFactory(make_site, "Docker API")
        self.listeners = list(listeners)
        self._tls = tls
        self._ports: dict[str, IListeningPort] = {}

    def startService(self) -> None:
        for listener in self.listeners:
            try:
                self._ports[str(listener)] = self._listen(listener)
            except Exception as e:
                for port in self._ports.values():
                    port.stopListening()
                self._ports.clear()
                raise SystemExit(f"ross: cannot serve the Docker API on {listener}: {e}")
            self._log.info("Docker API listening on {address}", address=self.address_of(listener))
        super().startService()

    def _listen(self, listener: Listener) -> IListeningPort:
        if listener.scheme == "unix":
            prepare_socket_path(listener.path)
            port: IListeningPort = self._reactor.listenUNIX(listener.path, self.site, mode=0o660)
            os.chmod(listener.path, 0o660)
            return port
        if self._tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            tls = TLSMemoryBIOFactory(tls_options(self._tls), False, self.site)
            return self._reactor.listenTCP(listener.port, tls, interface=listener.host)  # type: ignore[no-any-return]
        return self._reactor.listenTCP(listener.port, self.site, interface=listener.host)  # type: ignore[no-any-return]

    def address_of(self, listener: Listener) -> str:
        """
        The address clients use, with the real port for tcp port 0.
        """
        port = self._ports.get(str(listener))
        if listener.scheme == "tcp" and port is not None:
            return str(listener._replace(port=port.getHost().port))  # type: ignore[attr-defined]
        return str(listener)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        ports, self._ports = list(self._ports.values()), {}
        stopped = [maybeDeferred(port.stopListening) for port in ports]
        # Streams (logs -f, events, attach) would hold their connections
        # open for as long as their clients like.
        if self.site.made is not None:
            self.site.made.abort_connections()
        if not stopped:
            return succeed(None)
        return gatherResults(stopped).addCallback(lambda _: self._log.info("Docker API stopped"))
