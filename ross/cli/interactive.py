# -*- test-case-name: ross.test.integration.test_interactive -*-
"""
The client side of RunInteractive, Attach and Exec: the local terminal in
raw mode (restored on every exit path), stdin forwarded as frames, window
size changes forwarded as resize frames, output written as raw bytes.
"""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import struct
import sys
import termios
import threading
import tty
from typing import Any, Callable, Iterator

import grpc

from ross.v1 import common_pb2


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

    @param rpc: the stub method (RunInteractive, Attach or Exec).
    @param first: the start frame.
    @param on_started: called with the C{started} frame (e.g. to start a
        container after attaching, or print an ID).
    @param on_interrupt: called on Ctrl-C in pipe mode (the CLI forwards it
        as a signal to the container).
    """

    def __init__(
        self,
        rpc: Callable[..., Any],
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
        self.rpc = rpc
        self.frames = frames
        self.first = first
        self.tty_mode = tty_mode
        self.attach_stdin = attach_stdin
        self.on_started = on_started or (lambda frame: None)
        self.on_interrupt = on_interrupt
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.detached = False
        self.started: Any = None

    def _request_iterator(self) -> Iterator[Any]:
        yield self.first
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _pump_stdin(self) -> None:
        while True:
            try:
                data = os.read(self.stdin_fd, 65536)
            except OSError:
                data = b""
            if not data:
                if not self.tty_mode:
                    self._requests.put(self.frames.close_stdin())
                return
            self._requests.put(self.frames.stdin(data))

    def _send_size(self, *args: Any) -> None:
        size = window_size(self.stdout_fd) or window_size(self.stdin_fd)
        if size:
            self._requests.put(self.frames.resize(*size))

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def run(self) -> int:
        terminal = None
        if self.tty_mode and self.attach_stdin and os.isatty(self.stdin_fd):
            terminal = RawTerminal(self.stdin_fd)
        old_winch = None
        old_int = None
        call = self.rpc(self._request_iterator())
        try:
            if terminal is not None:
                terminal.__enter__()
            if self.tty_mode:
                old_winch = signal.signal(signal.SIGWINCH, self._send_size)
            elif self.on_interrupt is not None:
                old_int = signal.signal(signal.SIGINT, lambda s, f: self.on_interrupt())  # type: ignore[misc]
            for frame in call:
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
                        threading.Thread(target=self._pump_stdin, daemon=True, name="stdin").start()
                elif kind == "exit":
                    if frame.exit.error:
                        if terminal is not None:
                            terminal.restore()
                        sys.stderr.write(f"Error: {frame.exit.error}\n")
                    return frame.exit.status_code
                elif kind == "detached":
                    self.detached = True
                    return 0
            return 0
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and self.detached:
                return 0
            raise
        finally:
            self._requests.put(None)
            if terminal is not None:
                terminal.__exit__()
            if old_winch is not None:
                signal.signal(signal.SIGWINCH, old_winch)
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            call.cancel()
