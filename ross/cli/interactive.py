# -*- test-case-name: ross.test.integration.test_interactive -*-
"""
The client side of RunInteractive, Attach and Exec: the local terminal in
raw mode (restored on every exit path), stdin forwarded as frames, window
size changes forwarded as resize frames, output written as raw bytes.

It runs on grpcio's synchronous API with one thread per direction, each
doing its own I/O: a keystroke goes from the terminal to the wire, and its
echo from the wire to the screen, without a hand-off to another thread or
an event loop (grpc.aio's loop adds ~0.15 ms to every echo here: see
bench/interactive_floor.py).

A TTY session on the stream outlives the daemon (SPEC 3): when its
stream breaks (the daemon went away) or ends without an exit frame, the
terminal stays raw and the session re-attaches with Attach, given the
count of output bytes it holds (C{since}), so the daemon sends only what
it has not shown; it retries for L{Session.REATTACH_TIMEOUT} seconds.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
import tty
from typing import Any, Callable, Generator, Iterator

from ross.client.base import grpc
from ross.client.direct import redeem
from ross.client.frames import Frames, SentInput
from ross.protocols import shimwire
from ross.protocols.attach import DetachScanner
from ross.protocols.sessionframes import exit_result
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


#: The signals a session in pipe mode sends on to its container, as
#: docker's --sig-proxy does: all that can be caught but SIGCHLD, SIGPIPE
#: and SIGURG.
FORWARDED = sorted(set(signal.valid_signals()) - {
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGURG})


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


class Session:
    """
    One interactive stream. C{run()} returns the exit code to use.

    Two threads carry it, one per direction, with no hand-off between
    them and the wire: grpcio's request thread runs L{_requests}, which
    reads the local stdin itself and sends each chunk as it comes; the
    calling (main) thread reads output frames and writes them out. The
    request thread waits on stdin and on a pipe the main thread (and the
    SIGWINCH handler) write to: C{started}, C{winch}, C{quit}.

    @param call: starts the streaming call given its request iterator
        (e.g. the stub's C{Exec}; the CLI's channel adds the token).
    @param first: the start frame.
    @param on_started: called with the C{started} frame (e.g. to start a
        container after attaching); may block briefly.
    @param on_signal: called with each signal of L{FORWARDED} the client
        gets in pipe mode (the CLI sends it on to the container: docker's
        --sig-proxy).
    @param reattach: for a TTY session, what re-attaches it once its stream
        is lost: given the C{started} frame, the bytes of output held and
        the window size, the Attach stream's function (as C{call}), its
        L{Frames} and its start frame.
    """

    _STARTED, _WINCH, _QUIT = b"s", b"w", b"q"
    #: How long a session tries to re-attach before it gives up.
    REATTACH_TIMEOUT = 60.0

    def __init__(
        self,
        call: Callable[[Iterator[Any]], Any],
        frames: Frames,
        first: Any,
        tty_mode: bool,
        attach_stdin: bool,
        on_started: Callable[[Any], None] | None = None,
        on_signal: Callable[[int], None] | None = None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        detach_keys: bytes = b"",
        reattach: Callable[[Any, int, tuple[int, int] | None], tuple[Callable[[Iterator[Any]], Any], Frames, Any]]
        | None = None,
    ) -> None:
        self.call = call
        self.frames = frames
        self.first = first
        self.tty_mode = tty_mode
        self.attach_stdin = attach_stdin
        self.on_started = on_started or (lambda frame: None)
        self.on_signal = on_signal
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        #: Scanned here on a direct channel (the daemon does on the stream).
        self.detach_keys = detach_keys
        self.detached = False
        self.started: Any = None
        self.reattach = reattach if tty_mode else None
        #: How often the session was attached again.
        self.reattached = 0
        #: The output held: the stream's start (in the session's output
        #: bytes) and the data bytes received on it.
        self._base = self._received = 0
        #: A started frame came since the stream was last lost.
        self._attached = False
        #: The input sent (named in the start frames of a TTY session that
        #: re-attaches), and what the stream attached next sends first.
        self._sent = SentInput()
        self._unsent = b""
        if self.reattach is not None:
            self._sent.name(first)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def _wake(self, event: bytes) -> None:
        try:
            os.write(self._wake_w, event)
        except BlockingIOError:
            pass  # the request thread has plenty to wake up for already
        except BrokenPipeError:
            pass  # it has ended

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [])
                continue
            view = view[written:]

    def _size_frame(self) -> Any:
        size = window_size(self.stdout_fd) or window_size(self.stdin_fd)
        return self.frames.resize(*size) if size else None

    def _requests(self, first: Any, wake: int, call: list[Any]) -> Generator[Any, None, None]:
        """
        The input frames, run by grpcio's request thread: grpcio sends each
        before it asks for the next, so a slow daemon stops the reading of
        stdin. C{wake}: this stream's end of the wake-up pipe (a stream
        attached again has a pipe of its own, so what wakes one stream's
        thread never ends another's). C{call}: holds the stream's call once
        it is made.
        """
        try:
            yield from self._input(first, wake, call)
        finally:
            os.close(wake)

    def _input(self, first: Any, wake: int, call: list[Any]) -> Iterator[Any]:
        yield first
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        started = reading = False
        while True:
            for fd, _ in poller.poll():
                if fd == wake:
                    events = os.read(wake, 4096)
                    if self._QUIT in events:
                        return
                    if self._STARTED in events and not started:
                        started = True
                        if self.attach_stdin:
                            poller.register(self.stdin_fd, select.POLLIN)
                            reading = True
                        if self._unsent:
                            data, self._unsent = self._unsent, b""
                            yield self.frames.stdin(data)
                    if self.tty_mode and started and (self._STARTED in events or self._WINCH in events):
                        resize = self._size_frame()
                        if resize is not None:
                            yield resize
                elif reading:
                    try:
                        data = os.read(self.stdin_fd, READ_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        # Should it go nowhere (the stream lost), the stream
                        # attached next sends it again.
                        if self.reattach is not None:
                            self._sent.record(data)
                        yield self.frames.stdin(data)
                        if call and not call[0].is_active():
                            return
                        continue
                    poller.unregister(self.stdin_fd)
                    reading = False
                    if not self.tty_mode:
                        yield self.frames.close_stdin()

    def run(self) -> int:
        terminal = None
        if self.tty_mode and self.attach_stdin and os.isatty(self.stdin_fd):
            terminal = RawTerminal(self.stdin_fd)
        old_handlers: dict[int, Any] = {}
        made: list[Any] = []
        call: Any = self.call(self._requests(self.first, self._wake_r, made))
        made.append(call)
        try:
            if terminal is not None:
                terminal.__enter__()
            if self.tty_mode:
                old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: self._wake(self._WINCH))
            elif self.on_signal is not None:
                on_signal = self.on_signal
                for forwarded in FORWARDED:
                    old_handlers[forwarded] = signal.signal(forwarded, lambda number, _: on_signal(number))
            deadline = delay = 0.0
            while True:
                try:
                    if call is None:
                        call = self._attach_again()
                    code = self._pump(call, terminal, old_handlers)
                    if code is not None:
                        return code
                    why = "the stream ended before the session did"
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.CANCELLED and self.detached:
                        return 0
                    # (A daemon killed or stopping, on the unix socket or
                    # over TCP, and no daemon yet: all UNAVAILABLE.)
                    if self.reattach is None or self.started is None or e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    why = f"{e.code().name}: {e.details()}"
                if self.reattach is None or self.started is None:
                    return 0
                # Stop reading stdin for the lost stream at once: what is
                # typed from now on waits in the terminal for the next.
                self._wake(self._QUIT)
                now = time.monotonic()
                if self._attached:
                    # Attached (again) since the last loss: a fresh wait.
                    deadline, delay = now + self.REATTACH_TIMEOUT, 0.05
                    self._attached = False
                if now >= deadline:
                    if terminal is not None:
                        terminal.restore()
                    sys.stderr.write(f"Error: the session was lost ({why}) and could not be attached again "
                                     f"within {self.REATTACH_TIMEOUT:.0f} seconds\n")
                    return 1
                if call is not None:
                    call.cancel()
                    call = None
                time.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 2, 1.0)
        finally:
            if call is not None:
                call.cancel()
            self._wake(self._QUIT)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if terminal is not None:
                terminal.__exit__()

    def _attach_again(self) -> Any:
        """
        A new Attach stream to the session, from the first byte of output
        not yet shown. What is typed until it is attached stays in the
        terminal's input queue (nothing reads stdin meanwhile) and goes out
        then, after what the session never took in of the input sent on the
        lost stream (L{SentInput}).
        """
        assert self.reattach is not None
        self._wake(self._QUIT)
        # (The old stream's thread closes its end as it stops; SIGWINCH's
        # handler may write at any moment, so it never sees a closed fd.)
        old = self._wake_w
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.close(old)
        since = self._base + self._received
        size = window_size(self.stdout_fd) or window_size(self.stdin_fd)
        call, self.frames, first = self.reattach(self.started, since, size)
        self._sent.name(first)
        self._base, self._received = since, 0
        made: list[Any] = []
        requests = self._requests(first, self._wake_r, made)
        try:
            made.append(call(requests))
            return made[0]
        except BaseException:
            import inspect

            if inspect.getgeneratorstate(requests) == inspect.GEN_CREATED:
                # Refused before its thread began (the daemon still away).
                requests.close()
                os.close(self._wake_r)
            raise

    def _pump(self, call: Any, terminal: RawTerminal | None, old_handlers: dict[int, Any]) -> int | None:
        """
        Carry one stream: the exit code once it came, None when the stream
        ended without one.
        """
        for frame in call:
            kind = frame.WhichOneof("output")
            if kind == "data":
                fd = self.stderr_fd if frame.data.stream == common_pb2.STD_STREAM_STDERR else self.stdout_fd
                self._received += len(frame.data.data)
                self._write(fd, frame.data.data)
            elif kind == "started":
                self._base = frame.started.output_offset
                self._attached = True
                if self.started is not None:
                    # Attached again: the session began long ago. What it
                    # never took in of the input goes first.
                    self.reattached += 1
                    self._unsent = self._sent.unsent(frame.started)
                    self._wake(self._STARTED)
                    continue
                self.started = frame.started
                if frame.started.direct_ticket:
                    # The session's bytes leave this stream: the
                    # request thread stops before stdin is read here.
                    self._wake(self._QUIT)
                    channel = redeem(frame.started.direct_socket, frame.started.direct_ticket)
                    call.cancel()
                    self.on_started(frame.started)
                    direct = DirectSession(channel, self, old_handlers)
                    code = direct.run()
                    self.detached = direct.detached
                    return code
                self.on_started(frame.started)
                self._wake(self._STARTED)
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
        return None


class DirectSession:
    """
    A session on its direct channel: the client and the container's shim
    with nothing between (SPEC 3). One thread, one poll loop: stdin to
    STDIN frames (detach keys scanned here), SIGWINCH to RESIZE frames,
    output frames to stdout and stderr, until the shim's exit event. The
    channel is written without blocking, and stdin is not read while
    what was sent waits unsent past L{HIGH_WATER}, so a process that does
    not read its input never stops its output from reaching the screen.
    """

    HIGH_WATER = 1024 * 1024

    def __init__(self, channel: socket.socket, session: Session, handlers: dict[int, Any]) -> None:
        self.channel = channel
        self.session = session
        self.detached = False
        self._out = bytearray()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._handlers = handlers

    def _winch(self, *_: Any) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass

    def _resize(self) -> None:
        s = self.session
        size = window_size(s.stdout_fd) or window_size(s.stdin_fd)
        if size:
            self._out += shimwire.resize(*size)

    def run(self) -> int:
        s = self.session
        if s.tty_mode:
            previous = signal.signal(signal.SIGWINCH, self._winch)
            self._handlers.setdefault(signal.SIGWINCH, previous)
            self._resize()
        try:
            return self._loop()
        finally:
            self.channel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _loop(self) -> int:
        s = self.session
        scanner = DetachScanner(s.detach_keys if s.tty_mode else b"")
        decoder = shimwire.FrameDecoder()
        channel = self.channel.fileno()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        reading = s.attach_stdin
        stdin_polled = False
        while True:
            # (Registering again changes the events polled for.)
            poller.register(channel, select.POLLIN | (select.POLLOUT if self._out else 0))
            wanted = reading and len(self._out) < self.HIGH_WATER
            if wanted != stdin_polled:
                if wanted:
                    poller.register(s.stdin_fd, select.POLLIN)
                else:
                    poller.unregister(s.stdin_fd)
                stdin_polled = wanted
            for fd, event in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    self._resize()
                elif fd == channel:
                    if event & select.POLLOUT:
                        self._flush()
                    if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        code = self._read(decoder)
                        if code is not None:
                            return code
                elif fd == s.stdin_fd:
                    try:
                        data = os.read(s.stdin_fd, READ_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        data, hit = scanner.feed(data)
                        if data:
                            self._out += shimwire.frame(shimwire.STDIN, data)
                        if hit:
                            self._flush()
                            self.detached = True
                            return 0
                    else:
                        reading = False
                        if not s.tty_mode:
                            held = scanner.flush()
                            if held:
                                self._out += shimwire.frame(shimwire.STDIN, held)
                            self._out += shimwire.frame(shimwire.CLOSE_STDIN, b"")
            if self._out:
                self._flush()

    def _flush(self) -> None:
        try:
            sent = self.channel.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            # The shim is gone: its end comes as the channel's EOF.
            self._out.clear()
            return
        del self._out[:sent]

    def _read(self, decoder: shimwire.FrameDecoder) -> int | None:
        """
        Output to the screen; the exit code once the exit event came.
        """
        s = self.session
        try:
            data = self.channel.recv(4 * READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            sys.stderr.write("Error: the session's channel closed before its exit status came\n")
            return 1
        for kind, payload in decoder.feed(data):
            if kind == shimwire.STDOUT:
                s._write(s.stdout_fd, payload)
            elif kind == shimwire.STDERR:
                s._write(s.stderr_fd, payload)
            elif kind == shimwire.MESSAGE:
                result = exit_result(shimwire.decode_message(payload))
                if result is not None:
                    if result.error:
                        sys.stderr.write(f"Error: {result.error}\n")
                    status_code: int = result.status_code
                    return status_code
        return None
