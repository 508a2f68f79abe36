# -*- test-case-name: ross.test.test_firstuse -*-
"""
Listeners whose server is made when the first client comes.

The Docker API and the CRI are served by default, and most daemons never
get a client on them. Their sockets listen from the start (an address in
use still stops the daemon at once), but the code that serves them, with
twisted.web, is imported and built at the first connection or call: an
idle daemon does not keep their 6 MiB. The first client waits for that
once, some 30 ms.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import grpc
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory
from zope.interface import implementer


@implementer(IProtocolNegotiationFactory)
class FirstUseFactory(Factory):
    """
    Hands every connection to the factory C{make} returns, made (and
    started) for the first one. Behind TLS, it says which protocols the
    made factory speaks (ALPN, as twisted.web's site does): without them,
    Twisted's TLS answers a client that offers ALPN with an internal error.

    @param what: what the listener serves, for the log.
    @ivar made: that factory, None until the first connection.
    """

    noisy = False

    def __init__(self, make: Callable[[], Any], what: str) -> None:
        self._make = make
        self._what = what
        self.made: Any = None

    def logPrefix(self) -> str:
        return self._what

    def _factory(self) -> Any:
        if self.made is None:
            self.made = self._make()
            if self.numPorts:
                self.made.doStart()
        return self.made

    def buildProtocol(self, addr: IAddress | None) -> Any:
        return self._factory().buildProtocol(addr)

    def acceptableProtocols(self) -> list[bytes]:
        negotiates = IProtocolNegotiationFactory(self._factory(), None)
        return list(negotiates.acceptableProtocols()) if negotiates is not None else []

    def startFactory(self) -> None:
        # A listener started again after a stop.
        if self.made is not None:
            self.made.doStart()

    def stopFactory(self) -> None:
        if self.made is not None:
            self.made.doStop()


class FirstCallHandler(grpc.GenericRpcHandler):
    """
    A gRPC server's handlers, made by C{make} for the first call.

    grpc's asyncio server asks its handlers for a method on its event
    loop: the first call holds that loop while C{make} runs.
    """

    def __init__(self, make: Callable[[], Sequence[grpc.GenericRpcHandler]]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.made: Sequence[grpc.GenericRpcHandler] | None = None

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        made = self.made
        if made is None:
            # Only the first calls take the lock; later ones read what it set.
            with self._lock:
                if self.made is None:
                    self.made = list(self._make())
                made = self.made
        for handler in made:
            found = handler.service(handler_call_details)
            if found is not None:
                return found
        return None
