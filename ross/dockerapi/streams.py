# -*- test-case-name: ross.test.integration.test_dockerapi_attach -*-
"""
docker's streamed responses: flow control on a long response (logs,
export, archives), the multiplexed stream's 8-byte frames, and the
hijacked connection of attach and exec.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ross.dockerapi.router import API_VERSION, Call, version_text
from ross.protocols.hijack import HijackChannel

#: docker's stream numbers in the multiplexed stream's frame headers.
STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


def frame(stream: str, data: bytes) -> bytes:
    """
    One frame of docker's multiplexed stream: the stream (1 byte), three
    zero bytes, the length (4 bytes, big-endian), the data.
    """
    return bytes((STREAMS.get(stream, 1), 0, 0, 0)) + len(data).to_bytes(4, "big") + data


def stream_type(call: Call, tty: bool) -> str:
    """
    The content type of an attach, exec or logs stream: raw for a
    terminal, else multiplexed (announced as such from API 1.42).
    """
    return RAW_STREAM if tty or not call.at_least(1, 42) else MULTIPLEXED_STREAM


@implementer(IPushProducer)
class Flow:
    """
    Flow control of a streamed response: L{ready} waits while the client
    is slower than what is written to it. Registered as the response's
    producer; unregister with L{close} before the response ends.
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self._paused = False
        self._waiting: list[Deferred[None]] = []
        call.request.registerProducer(self, True)

    def ready(self) -> Deferred[None]:
        if not self._paused:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda waiter: self._forget(waiter))
        self._waiting.append(d)
        return d

    def _forget(self, waiter: Deferred[None]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopProducing(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(CancelledError("the client went away"))

    def close(self) -> None:
        request = self._call.request
        if request.producer is self:
            request.unregisterProducer()


async def send_flow(call: Call, flow: Any, content_type: str) -> None:
    """
    Stream an engine L{ross.engine.pipes.Outflow} (a tar being written) as
    the body, as fast as the client reads it.
    """
    call.start(content_type)
    control = Flow(call)
    try:
        while True:
            chunk = await flow.get()
            if chunk is None:
                return
            call.write(chunk)
            await control.ready()
    except Exception:
        # Its end would read as a whole, shorter tar.
        call.cut()
        raise
    finally:
        control.close()
        flow.cancel()


class Hijack:
    """
    The connection of an attach or exec request, taken over: C{101
    UPGRADED} when the client asked to upgrade (as docker's clients do),
    then raw bytes both ways. What the client sends goes to the
    C{on_input} given to L{listen}, its half-close to C{on_end}; its
    disconnection cancels the handler, as any request's does.
    """

    def __init__(self, call: Call, content_type: str) -> None:
        request = call.request
        channel = request.channel
        if not isinstance(channel, HijackChannel):
            raise TypeError("only the Docker API's channel can be hijacked")
        upgrade = "upgrade" in call.header("Connection").lower() or bool(call.header("Upgrade"))
        head = ("HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade
                else "HTTP/1.1 200 OK\r\n")
        head += f"Content-Type: {content_type}\r\nApi-Version: {version_text(API_VERSION)}\r\n\r\n"
        self._request = request
        # What follows is not HTTP: the request writes raw bytes, and the
        # connection ends with it.
        request.startedWriting = 1
        request.chunked = 0
        channel.persistent = False
        call.hijacked = True
        self._input: list[bytes] = []
        self._ended = False
        self._on_input: Callable[[bytes], None] | None = None
        self._on_end: Callable[[], None] | None = None
        channel.write(head.encode())
        channel.hijack(self)

    # What the channel delivers.

    def dataReceived(self, data: bytes) -> None:
        if self._on_input is not None:
            self._on_input(data)
        else:
            self._input.append(data)

    def readConnectionLost(self) -> None:
        self._ended = True
        if self._on_end is not None:
            self._on_end()

    def connectionLost(self, reason: Failure) -> None:
        pass

    # What the handler uses.

    def listen(self, on_input: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        """
        Deliver the client's input (what came already first) and its end.
        """
        self._on_input, self._on_end = on_input, on_end
        pending, self._input = b"".join(self._input), []
        if pending:
            on_input(pending)
        if self._ended:
            on_end()

    def write(self, data: bytes) -> None:
        request = self._request
        if data and not request.finished and not request._disconnected:
            request.write(data)

    def register(self, producer: Any) -> None:
        """
        Pause C{producer} while the client reads slower than it writes.
        """
        self._request.registerProducer(producer, True)

    def unregister(self) -> None:
        if self._request.producer is not None:
            self._request.unregisterProducer()
