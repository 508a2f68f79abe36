# -*- test-case-name: ross.test.test_shimwire -*-
"""
The daemon's end of the shim control protocol (framing in
L{ross.protocols.shimwire}; the shim's end is L{ross.engine.runtime.shim}):
requests answered by Deferreds, events and attached output handed to
callbacks.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ross import errors
from ross.protocols import shimwire


class ContainerStartError(errors.FailedPrecondition):
    """
    The container's (or an exec session's) process could not be started.
    C{exit_code} is docker's status for it: 125 (the runtime failed), 126
    (the command cannot be invoked) or 127 (not found).
    """

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = exit_code


class ShimGone(errors.Unavailable):
    """
    The connection to a shim closed before it answered.
    """


_KINDS: dict[str, type[errors.RossError]] = {
    "precondition": errors.FailedPrecondition,
    "not_found": errors.NotFound,
    "invalid": errors.InvalidArgument,
    "exists": errors.AlreadyExists,
}


def error_of(answer: dict[str, Any]) -> errors.RossError:
    """
    The domain error of a failed answer.
    """
    message = str(answer.get("error") or "the shim refused the request")
    kind = answer.get("kind")
    if kind == "start":
        return ContainerStartError(int(answer.get("code") or 125), message)
    return _KINDS.get(str(kind), errors.RossError)(message)


class ShimProtocol(Protocol):
    """
    One connection to a shim. L{request} sends a request and gives a
    Deferred of its answer (a dict; failures become domain errors, and
    L{ShimGone} when the connection closes first). C{on_event(message)} gets
    events, C{on_output(stream, data)} the output of an attached session
    ("stdout" or "stderr"), C{on_lost(reason)} the end of the connection.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._decoder = shimwire.FrameDecoder()
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._next_id = 0
        self.connected_deferred: Deferred[ShimProtocol] = Deferred()
        self.on_event: Callable[[dict[str, Any]], None] = lambda message: None
        self.on_output: Callable[[str, bytes], None] = lambda stream, data: None
        self.on_lost: Callable[[Failure], None] = lambda reason: None
        self.lost = False

    def connectionMade(self) -> None:
        d, self.connected_deferred = self.connected_deferred, Deferred()
        d.callback(self)

    def request(self, op: str, **fields: Any) -> Deferred[dict[str, Any]]:
        if self.lost or self.transport is None:
            return fail(ShimGone("the connection to the shim is closed"))
        self._next_id += 1
        fields["op"] = op
        fields["id"] = self._next_id
        d: Deferred[dict[str, Any]] = Deferred()
        self._pending[self._next_id] = d
        self.transport.write(shimwire.message(fields))
        return d

    def send_stdin(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            for i in range(0, len(data), 1 << 20):
                self.transport.write(shimwire.frame(shimwire.STDIN, data[i:i + (1 << 20)]))

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except shimwire.FrameError as e:
            self._bad_frame(e)
            return
        for kind, payload in frames:
            if kind == shimwire.MESSAGE:
                try:
                    message = shimwire.decode_message(payload)
                except shimwire.FrameError as e:
                    self._bad_frame(e)
                    return
                if "event" in message:
                    self.on_event(message)
                    continue
                d = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
                if d is None:
                    continue
                if message.get("ok"):
                    d.callback(message)
                else:
                    d.errback(error_of(message))
            elif kind == shimwire.STDOUT:
                self.on_output("stdout", payload)
            elif kind == shimwire.STDERR:
                self.on_output("stderr", payload)

    def _bad_frame(self, error: shimwire.FrameError) -> None:
        self._log.error("bad frame from a shim: {error}", error=str(error))
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ShimGone("the shim closed the connection"))
        self.on_lost(reason)


class ShimFactory(ServerFactory):
    protocol = ShimProtocol

    def __init__(self) -> None:
        self.built: list[ShimProtocol] = []

    def buildProtocol(self, addr: object) -> ShimProtocol:
        proto = ShimProtocol()
        proto.factory = self
        self.built.append(proto)
        return proto


@implementer(IPushProducer)
class TransportProducer:
    """
    Pausing an attachment pauses reading its connection, so the shim stops
    reading the container's output for it (backpressure, nothing dropped).
    """

    def __init__(self, protocol: ShimProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
