# -*- test-case-name: ross.test.integration.test_interactive -*-
"""
An attached session on the gRPC path, served in the gRPC loop.

A gRPC client (remote over TCP and TLS, or one that asked for no direct
channel) gets its session's bytes through the daemon. The reactor sets the
session up; then the daemon takes a channel to the session in its shim,
the same channel a local client is handed (L{ross.client.direct}), and
the call's rest runs here (L{ross.protocols.bridge.Outbound.hand_over}):
input frames become the shim's STDIN, RESIZE and CLOSE_STDIN frames, its
output the call's data frames; the last frame (exit, or detached) goes
back to the reactor, which sends it when it may (``run --rm``: once the
container is removed). A keystroke's echo crosses no thread but grpc's,
where through the reactor it woke two more.

Detach keys, piped input's end, a second C{start} and the end of output
without an exit behave as on the reactor's path
(L{ross.services.containers.ContainerAPI._session}).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc

from ross.engine.containers.config import validate_window
from ross.errors import FailedPrecondition, InvalidArgument
from ross.protocols import shimwire
from ross.protocols.attach import DetachScanner
from ross.protocols.bridge import LoopInbox
from ross.protocols.sessionframes import output_of
from ross.v1 import common_pb2, container_pb2

#: The most output one data frame carries (the reactor's path merges up
#: to the same).
MAX_FRAME = 1 << 20
#: What one read of the channel takes.
READ_SIZE = 256 * 1024


class SessionRelay:
    """
    One session's relay: C{channel} a direct channel to it, C{scanner} the
    detach keys, C{tty} and C{stdin} as the session was started. Called
    as C{run} of L{ross.protocols.bridge.Outbound.hand_over}.
    """

    def __init__(self, channel: socket.socket, scanner: DetachScanner, tty: bool, stdin: bool) -> None:
        self._channel = channel
        self._scanner = scanner
        self._tty = tty
        self._stdin = stdin

    def discard(self) -> None:
        """
        The call ended before the relay ran: close the channel (the
        session runs on, as when a client leaves).
        """
        self._channel.close()

    async def __call__(self, context: grpc.aio.ServicerContext[Any, Any], requests: LoopInbox) -> Any:
        """
        Relay until the session ends or the client detaches; the call's
        last frame (C{exit}, or C{detached}), for the reactor to send.
        """
        reader, writer = await asyncio.open_unix_connection(sock=self._channel, limit=READ_SIZE)
        output = asyncio.ensure_future(self._output(reader, context))
        feed = asyncio.ensure_future(self._input(requests, writer))
        try:
            done, _ = await asyncio.wait([output, feed], return_when=asyncio.FIRST_COMPLETED)
            # Bad input (a second start) ends the call with its error.
            if feed in done and feed.result():
                # The detach keys: the session runs on without us.
                output.cancel()
                return container_pb2.InteractiveOutput(detached=True)
            return await output
        finally:
            for task in (output, feed):
                if not task.done():
                    task.cancel()
            writer.close()

    async def _input(self, requests: LoopInbox, writer: asyncio.StreamWriter) -> bool:
        """
        Pass the client's frames on; True when it typed the detach keys,
        False at the end of its input. A channel the shim closed (the
        session ended) waits for the output's end, which says how.
        """
        try:
            return await self._pass_input(requests, writer)
        except ConnectionError:
            await asyncio.Future()
            raise AssertionError("not reached")

    async def _pass_input(self, requests: LoopInbox, writer: asyncio.StreamWriter) -> bool:
        scanner = self._scanner
        while True:
            message = await requests.receive()
            if message is None:
                if self._stdin and not self._tty:
                    writer.write(shimwire.frame(shimwire.CLOSE_STDIN, b""))
                    await writer.drain()
                return False
            kind = message.WhichOneof("input")
            if kind == "stdin" and self._stdin:
                data, hit = scanner.feed(message.stdin)
                if data:
                    writer.write(shimwire.frame(shimwire.STDIN, data))
                    await writer.drain()
                if hit:
                    return True
            elif kind == "resize":
                rows, cols = message.resize.rows, message.resize.cols
                if rows or cols:
                    validate_window(rows, cols)
                # Resizing a session without a terminal means nothing
                # (docker ignores it too).
                if self._tty and rows:
                    writer.write(shimwire.resize(rows, cols))
                    # (A client that only resizes is held back too.)
                    await writer.drain()
            elif kind == "start":
                raise InvalidArgument("a second 'start' frame in one stream")
            elif kind == "close_stdin" and self._stdin:
                held = scanner.flush()
                if held:
                    writer.write(shimwire.frame(shimwire.STDIN, held))
                writer.write(shimwire.frame(shimwire.CLOSE_STDIN, b""))
                await writer.drain()

    @staticmethod
    async def _output(reader: asyncio.StreamReader, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """
        The session's output to the client, a data frame per read of each
        stream, until its exit: that frame is returned, not sent.
        """
        decoder = shimwire.FrameDecoder()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise FailedPrecondition("the container's session ended unexpectedly")
            try:
                frames = decoder.feed(data)
            except shimwire.FrameError as e:
                raise FailedPrecondition(f"the container's session sent a bad frame: {e}") from None
            pending = bytearray()
            pending_kind = 0
            for kind, payload in frames:
                if kind in (shimwire.STDOUT, shimwire.STDERR):
                    if pending and (kind != pending_kind or len(pending) >= MAX_FRAME):
                        await context.write(_data(pending_kind, bytes(pending)))
                        pending.clear()
                    pending_kind = kind
                    pending += payload
                    continue
                frame = output_of(kind, payload)
                if frame is None:
                    continue
                if pending:
                    await context.write(_data(pending_kind, bytes(pending)))
                    pending.clear()
                return frame
            if pending:
                await context.write(_data(pending_kind, bytes(pending)))


def _data(kind: int, data: bytes) -> Any:
    stream = common_pb2.STD_STREAM_STDOUT if kind == shimwire.STDOUT else common_pb2.STD_STREAM_STDERR
    return container_pb2.InteractiveOutput(data=container_pb2.OutputData(stream=stream, data=data))
