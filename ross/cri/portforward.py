# -*- test-case-name: ross.test.integration.test_cri_streaming -*-
"""
PortForward on a SPDY session, Kubernetes' portforward protocol v1: for
each connection it forwards, the client opens an error stream and a data
stream, both with the ``port`` and ``requestID`` headers. Once both are
there, the daemon connects to 127.0.0.1:PORT (then [::1]) inside the
pod's network namespace and splices the data stream to it, half-closes
passed on; a failure is written on the error stream. The error stream
is finished when the forwarded connection is over.

The connection is made by a short-lived thread of its own that joins the
pod's network namespace (setns applies to that thread alone, and the
thread ends with it); the socket it made is handed to the reactor. The
namespace is found through the pod's PID 1, held by a pidfd from the
moment its PID is read, so a PID reused meanwhile is never joined.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ross.cri.meta import SANDBOX, meta_of
from ross.cri.streaming import StreamTarget
from ross.engine.engine import Engine
from ross.engine.runtime import linux
from ross.errors import FailedPrecondition, NotFound, ResourceExhausted, RossError
from ross.protocols.spdy import PROTOCOL_ERROR, SpdySession, SpdyStream

#: Seconds the client has to open a request's second stream.
PAIR_TIMEOUT = 30.0
#: Seconds to connect inside the pod.
CONNECT_TIMEOUT = 10.0
#: Threads connecting inside pods at once, daemon-wide.
MAX_CONNECTING = 16
_connecting = threading.BoundedSemaphore(MAX_CONNECTING)


def _connect(pod: tuple[int, int] | None, port: int) -> socket.socket:
    """
    A TCP connection to the loopback's C{port} in the network namespace of
    C{pod} (its PID 1 as (PID, pidfd); None: the daemon's own). Runs in a
    thread that ends after it.
    """
    if pod is not None:
        pid, pidfd = pod
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The pidfd was taken when the PID was looked up: if that
            # process is gone now, the PID may name another one.
            if select.select([pidfd], [], [], 0)[0]:
                raise ProcessLookupError("the pod's process is gone")
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
    errors = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((host, port))
        except OSError as e:
            sock.close()
            errors.append(f"{host}: {e.strerror or e}")
            continue
        sock.setblocking(False)
        return sock
    raise ConnectionRefusedError("; ".join(errors))


def connect_in_netns(reactor: Any, pod: tuple[int, int] | None, port: int) -> Deferred[socket.socket]:
    """
    L{_connect} in a thread of its own (it changes namespaces: never a
    pooled thread), at most L{MAX_CONNECTING} at once. The pidfd of C{pod}
    is closed once done.
    """
    if not _connecting.acquire(blocking=False):
        if pod is not None:
            os.close(pod[1])
        raise ResourceExhausted("too many port-forward connections being made: try again")
    d: Deferred[socket.socket] = Deferred()

    def work() -> None:
        try:
            sock = _connect(pod, port)
        except BaseException as e:
            failure = Failure(e)
            reactor.callFromThread(d.errback, failure)
        else:
            reactor.callFromThread(d.callback, sock)
        finally:
            if pod is not None:
                os.close(pod[1])
            _connecting.release()

    threading.Thread(target=work, name=f"ross-portforward-{port}", daemon=True).start()
    return d


def pod_process(engine: Engine, sandbox_id: str) -> tuple[int, int] | None:
    """
    The PID 1 of a running sandbox, holder of its network namespace, as
    (PID, pidfd): the caller closes the pidfd. None for a hostNetwork pod
    (the host's namespace).
    """
    record = engine.containers.records.get(sandbox_id)
    meta = meta_of(record) if record is not None else None
    if record is None or meta is None or meta.kind != SANDBOX:
        raise NotFound(f"pod sandbox {sandbox_id[:64]!r} not found")
    if not record.state.running:
        raise FailedPrecondition(f"pod sandbox {sandbox_id} is not running")
    if meta.host_network:
        return None
    pid = engine.containers.running_shim(sandbox_id).pid
    try:
        return pid, os.pidfd_open(pid)
    except OSError:
        raise FailedPrecondition(f"pod sandbox {sandbox_id} is not running (its process is gone)")


@implementer(IPushProducer)
class _InputBlock:
    """
    Registered on the pod's connection: while it cannot take more, the
    session stops reading the client.
    """

    def __init__(self, session: SpdySession) -> None:
        self._session = session

    def pauseProducing(self) -> None:
        self._session.block_input(self)

    def resumeProducing(self) -> None:
        self._session.unblock_input(self)

    def stopProducing(self) -> None:
        self._session.unblock_input(self)


@implementer(IHalfCloseableProtocol)
class _Forward(protocol.Protocol):
    """
    One forwarded connection: the pod's side of the splice.
    """

    transport: Any = None

    def __init__(self, session: SpdySession, data: SpdyStream, error: SpdyStream, live: set[_Forward]) -> None:
        self._session = session
        self._live = live
        live.add(self)
        self._data = data
        self._error = error
        self._block = _InputBlock(session)
        self._client_done = False
        self._pod_done = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self._block, True)
        self._session.add_producer(self.transport)
        self._data.listen(self.transport.write, self._client_ended, self._client_reset)

    def dataReceived(self, data: bytes) -> None:
        self._data.write(data)

    def readConnectionLost(self) -> None:
        self._pod_done = True
        self._data.finish()
        if self._client_done:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def _client_ended(self) -> None:
        self._client_done = True
        if self._pod_done:
            self.transport.loseConnection()
        else:
            self.transport.loseWriteConnection()

    def _client_reset(self) -> None:
        self._client_done = True
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._live.discard(self)
        self._session.remove_producer(self.transport)
        self._session.unblock_input(self._block)
        self._data.finish()
        self._error.finish()


class PortForward:
    """
    The forwarded connections of one SPDY session, to one pod.
    """

    _log = Logger()

    def __init__(self, reactor: Any, engine: Engine, target: StreamTarget, session: SpdySession) -> None:
        self._reactor = reactor
        self._engine = engine
        self._sandbox_id = target.container_id
        self._session = session
        #: Requests whose second stream has not come yet: ID -> (streams by type, timer).
        self._pairs: dict[str, tuple[dict[str, SpdyStream], Any]] = {}
        self._forwards: set[_Forward] = set()
        session.when_lost(self._lost)

    def stream_opened(self, stream: SpdyStream) -> None:
        kind = stream.header("streamtype")
        request_id = stream.header("requestid")
        if kind not in ("error", "data") or not request_id or len(request_id) > 32:
            stream.cancel(PROTOCOL_ERROR)
            return
        if request_id not in self._pairs:
            timer = self._reactor.callLater(PAIR_TIMEOUT, self._unpaired, request_id)
            self._pairs[request_id] = ({}, timer)
        streams, timer = self._pairs[request_id]
        if kind in streams:
            stream.cancel(PROTOCOL_ERROR)
            return
        streams[kind] = stream
        if len(streams) == 2:
            del self._pairs[request_id]
            timer.cancel()
            self._start(streams["data"], streams["error"])

    def _unpaired(self, request_id: str) -> None:
        streams, _ = self._pairs.pop(request_id, ({}, None))
        for stream in streams.values():
            stream.cancel()

    def _start(self, data: SpdyStream, error: SpdyStream) -> None:
        port_text = data.header("port")
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError(port_text)
        except ValueError:
            self._fail(data, error, f"invalid port {port_text[:16]!r}")
            return
        try:
            connecting = connect_in_netns(self._reactor, pod_process(self._engine, self._sandbox_id), port)
        except RossError as e:
            self._fail(data, error, f"error forwarding port {port} to pod {self._sandbox_id}: {e}")
            return

        def connected(sock: socket.socket) -> None:
            try:
                if self._session.closed or data.reset:
                    error.finish()
                    return
                forward = _Forward(self._session, data, error, self._forwards)
                self._reactor.adoptStreamConnection(sock.fileno(), sock.family, _Adopt(forward))
            finally:
                sock.close()

        def failed(failure: Failure) -> None:
            reason = failure.value
            text = getattr(reason, "strerror", None) or str(reason)
            self._fail(data, error, f"error forwarding port {port} to pod {self._sandbox_id}: "
                                    f"failed to connect to localhost:{port} inside the pod: {text}")

        connecting.addCallbacks(connected, failed)

    def _fail(self, data: SpdyStream, error: SpdyStream, message: str) -> None:
        self._log.info("{message}", message=message)
        error.write(message.encode())
        error.finish()
        data.finish()

    def _lost(self) -> None:
        for streams, timer in self._pairs.values():
            if timer.active():
                timer.cancel()
        self._pairs.clear()
        for forward in list(self._forwards):
            if forward.transport is not None:
                forward.transport.abortConnection()


class _Adopt(protocol.Factory):
    """
    Hands an adopted connection its protocol, made beforehand.
    """

    noisy = False

    def __init__(self, forward: _Forward) -> None:
        self._forward = forward

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self._forward
