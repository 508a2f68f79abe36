# -*- test-case-name: ross.test.integration.test_interactive -*-
"""
The client side of RunInteractive, Attach and Exec: the local terminal in
raw mode (restored on every exit path), stdin forwarded as frames, window
size changes forwarded as resize frames, output written as raw bytes.

It runs on grpc.aio in one event loop: a keystroke goes from the terminal
to the wire and its echo back to the screen without a thread hand-off,
which halves the round trip of the synchronous client (two threads per
stream).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import sys
import termios
import tty
from typing import Any, Callable

import grpc

from ross.v1 import common_pb2

READ_SIZE = 65536


def window_size(fd: int) -> tuple[int, int] | None:
    """
    (rows, cols) of the terminal on C{fd}, or None when it is not one.
    """
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols = struct.unpack("HHHH", packed)[:2]
    return rows, cols


class RawTerminal:
    """
    Puts a terminal in raw mode and always puts it back: on exit, on
    exceptions, and on SIGTERM/SIGHUP.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> RawTerminal:
        self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def restore(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _on_signal(self, sig: int, frame: Any) -> None:
        self.restore()
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    def __exit__(self, *exc: Any) -> None:
        self.restore()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)


class Frames:
    """
    How one RPC spells its input frames.
    """

    def __init__(self, message: Any) -> None:
        self.message = message

    def stdin(self, data: bytes) -> Any:
        return self.message(stdin=data)

    def resize(self, rows: int, cols: int) -> Any:
        return self.message(resize=common_pb2.WindowSize(rows=rows, cols=cols))

    def close_stdin(self) -> Any:
        return self.message(close_stdin=True)


class Session:
    """
    One interactive stream. C{run()} returns the exit code to use.

    @param open_call: given a grpc.aio channel, starts the streaming call
        (C{lambda channel: Stub(channel).Exec(metadata=...)}).
    @param first: the start frame.
    @param on_started: called with the C{started} frame (e.g. to start a
        container after attaching); may block briefly.
    @param on_interrupt: called on Ctrl-C in pipe mode (the CLI forwards it
        as a signal to the container).
    """

    def __init__(
        self,
        open_channel: Callable[[], Any],
        open_call: Callable[[Any], Any],
        frames: Frames,
        first: Any,
        tty_mode: bool,
        attach_stdin: bool,
        on_started: Callable[[Any], None] | None = None,
        on_interrupt: Callable[[], None] | None = None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self.open_channel = open_channel
        self.open_call = open_call
        self.frames = frames
        self.first = first
        self.tty_mode = tty_mode
        self.attach_stdin = attach_stdin
        self.on_started = on_started or (lambda frame: None)
        self.on_interrupt = on_interrupt
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.detached = False
        self.started: Any = None
        self._outbox: asyncio.Queue[Any] | None = None
        self._call: Any = None
        self._writing: asyncio.Lock | None = None

    def run(self) -> int:
        return asyncio.run(self._run())

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                import select

                select.select([], [fd], [])
                continue
            view = view[written:]

    def _send(self, message: Any) -> None:
        assert self._outbox is not None
        self._outbox.put_nowait(message)

    def _send_size(self) -> None:
        size = window_size(self.stdout_fd) or window_size(self.stdin_fd)
        if size:
            self._send(self.frames.resize(*size))

    async def _writer(self, call: Any) -> None:
        assert self._outbox is not None and self._writing is not None
        while True:
            message = await self._outbox.get()
            async with self._writing:
                if message is None:
                    await call.done_writing()
                    return
                await call.write(message)

    async def _send_now(self, message: Any) -> None:
        """
        Write C{message} from this task when nothing waits to go before
        it, saving a keystroke the trip through the writer task; else
        queue it behind the rest.
        """
        assert self._outbox is not None and self._writing is not None
        if self._outbox.empty() and not self._writing.locked():
            async with self._writing:
                await self._call.write(message)
        else:
            self._send(message)

    async def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> bytes:
        """
        The next chunk of stdin: straight from the event loop for terminals
        and pipes, through a thread for regular files (epoll refuses them).
        """
        future: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(self.stdin_fd)
            try:
                future.set_result(os.read(self.stdin_fd, READ_SIZE))
            except BlockingIOError:
                loop.add_reader(self.stdin_fd, readable)
            except OSError:
                future.set_result(b"")

        try:
            loop.add_reader(self.stdin_fd, readable)
        except PermissionError:
            return await loop.run_in_executor(None, os.read, self.stdin_fd, READ_SIZE)
        try:
            return await future
        finally:
            loop.remove_reader(self.stdin_fd)

    async def _pump_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._outbox is not None
        while True:
            data = await self._read_stdin(loop)
            if not data:
                if not self.tty_mode:
                    self._send(self.frames.close_stdin())
                return
            await self._send_now(self.frames.stdin(data))
            # Backpressure: read no further while many frames wait.
            while self._outbox.qsize() > 32:
                await asyncio.sleep(0.001)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        terminal = None
        if self.tty_mode and self.attach_stdin and os.isatty(self.stdin_fd):
            terminal = RawTerminal(self.stdin_fd)
        channel = self.open_channel()
        call = self._call = self.open_call(channel)
        self._writing = asyncio.Lock()
        tasks: list[asyncio.Task[Any]] = []
        self._send(self.first)
        tasks.append(asyncio.create_task(self._writer(call)))
        try:
            if terminal is not None:
                terminal.__enter__()
            if self.tty_mode:
                loop.add_signal_handler(signal.SIGWINCH, self._send_size)
            elif self.on_interrupt is not None:
                loop.add_signal_handler(signal.SIGINT, self.on_interrupt)
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    return 0
                kind = frame.WhichOneof("output")
                if kind == "data":
                    fd = self.stderr_fd if frame.data.stream == common_pb2.STD_STREAM_STDERR else self.stdout_fd
                    self._write(fd, frame.data.data)
                elif kind == "started":
                    self.started = frame.started
                    self.on_started(frame.started)
                    if self.tty_mode:
                        self._send_size()
                    if self.attach_stdin:
                        tasks.append(asyncio.create_task(self._pump_stdin(loop)))
                elif kind == "exit":
                    if frame.exit.error:
                        if terminal is not None:
                            terminal.restore()
                        sys.stderr.write(f"Error: {frame.exit.error}\n")
                    # Frames come untyped (ross.v1's *_pb2_grpc has no stubs); ExitResult.status_code is an int32.
                    status_code: int = frame.exit.status_code
                    return status_code
                elif kind == "detached":
                    self.detached = True
                    return 0
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and self.detached:
                return 0
            raise
        finally:
            for task in tasks:
                task.cancel()
            if terminal is not None:
                terminal.__exit__()
            if self.tty_mode:
                loop.remove_signal_handler(signal.SIGWINCH)
            elif self.on_interrupt is not None:
                loop.remove_signal_handler(signal.SIGINT)
            call.cancel()
            await channel.close()
