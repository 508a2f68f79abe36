# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The TUI's side of the wire: grpcio's synchronous API, driven by threads
that are not Textual's event loop.

The connection is the CLI's (L{ross.client.base.Cli}: the same address, TLS
and token settings, the same error lines). Server streams are read by a
L{Feed}, one thread each, handing every message to a callback (the TUI
posts it as a Textual message); bidirectional sessions are a L{Session},
one thread reading output while grpcio's request thread sends the input
queued by the UI, or one thread carrying a direct channel both ways. Both
end on C{cancel()}/C{close()}: the call is cancelled, which ends the
reading thread, the request iterator is told to stop, which ends grpcio's
request thread, and a direct channel's thread is woken to close it.
Nothing is left running.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

import grpc

from ross.client.base import Cli, error_of
from ross.client.direct import DirectError, redeem
from ross.client.frames import Frames, SentInput
from ross.client.settings import Globals
from ross.protocols import shimwire
from ross.protocols.attach import DetachScanner
from ross.protocols.sessionframes import output_of
from ross.v1 import common_pb2, container_pb2


def connect(g: Globals) -> Cli:
    """
    The CLI's connection object for the daemon C{g} names; the TUI uses its
    stubs (C{cli.stub("ContainerService")}) from worker threads only.
    """
    return Cli(g, "ross-tui")


def error_text(cli: Cli, e: grpc.RpcError) -> str:
    """
    The daemon's message for a failed call, as the CLI would print it
    (without its ``Error:`` prefix).
    """
    return error_of(cli, e).message


class Feed:
    """
    One server stream read in its own thread.

    @param start: opens the call (e.g. C{lambda: stub.GetLogs(request)}); it
        runs in the feed's thread, so it may make unary calls first.
    @param on_message: called in the feed's thread with every message.
    @param on_end: called once in the feed's thread when the stream ends on
        its own: with None when it finished, with the error when it failed.
        Not called after L{cancel}.
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], Iterator[Any]],
        on_message: Callable[[Any], None],
        on_end: Callable[[grpc.RpcError | None], None] = lambda error: None,
    ) -> None:
        self._start = start
        self._on_message = on_message
        self._on_end = on_end
        self._lock = threading.Lock()
        self._call: Any = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name=f"ross-tui {name}", daemon=True)

    def begin(self) -> Feed:
        self.thread.start()
        return self

    def _run(self) -> None:
        error: grpc.RpcError | None = None
        try:
            call = self._start()
            with self._lock:
                self._call = call
                cancelled = self.cancelled
            if cancelled:
                call.cancel()  # type: ignore[attr-defined]
                return
            for message in call:
                if self.cancelled:
                    return
                self._on_message(message)
        except grpc.RpcError as e:
            if self.cancelled:
                return
            error = e
        except ValueError:
            # A callback's own call on a channel closed under it: the
            # app is being taken down (it cancels its feeds first).
            if self.cancelled:
                return
            raise
        if not self.cancelled:
            self._on_end(error)

    def cancel(self) -> None:
        """
        End the stream: its thread leaves without calling C{on_end}.
        """
        with self._lock:
            self.cancelled = True
            call = self._call
        if call is not None:
            call.cancel()


class Session:
    """
    A bidirectional Exec or Attach stream carrying a terminal, or, when its
    start frame asked for one and the daemon handed it over, the session's
    direct channel (SPEC 3).

    On the stream, one thread reads output while grpcio's request thread
    sends what the UI queued. On a direct channel the call is cancelled as
    soon as the channel is in hand and the session's own thread carries
    both directions in one poll loop: the UI queues input and wakes it
    through a pipe, and it writes the channel without blocking (what the
    shim does not take yet waits in a buffer), so the UI thread never waits
    on the channel. The shim's frames reach C{on_frame} as the stream's
    would (L{ross.protocols.sessionframes.output_of}); detach keys, which the daemon
    scans on the stream, are scanned here.

    @param call: starts the call given its request iterator (the stub's
        C{Exec} or C{Attach}).
    @param frames: how that RPC spells stdin and resize frames.
    @param first: the start frame; its C{direct} says whether to ask for a
        direct channel.
    @param on_frame: called in the session's thread with every output frame
        (C{started}, C{data}, C{exit}, C{detached}).
    @param on_end: called once in the session's thread when the session
        ended without C{close()}: None, or the error it failed with (a
        C{grpc.RpcError}, or a L{DirectError} when the channel was refused
        or broke).
    @param detach_keys: the detach sequence scanned on a direct channel
        (the daemon scans its default on the stream); b"" for none.
    @param reattach: for a TTY session, how it attaches again when its
        stream is lost (the daemon restarted: SPEC 3), given its last
        C{started} frame and the bytes of output it holds: (the call, its
        frames, its start frame). The session tries for
        L{REATTACH_TIMEOUT} seconds, output is never shown twice, and what
        the UI queues meanwhile goes out on the next stream.
    """

    _STOP = object()
    #: Bytes read from a direct channel at once.
    READ_SIZE = 256 * 1024
    #: Seconds a lost stream is tried again for.
    REATTACH_TIMEOUT = 60.0

    def __init__(
        self,
        name: str,
        call: Callable[[Iterator[Any]], Any],
        frames: Frames,
        first: Any,
        on_frame: Callable[[Any], None],
        on_end: Callable[[Exception | None], None],
        detach_keys: bytes = b"",
        reattach: Callable[[Any, int], tuple[Callable[[Iterator[Any]], Any], Frames, Any]] | None = None,
    ) -> None:
        self._call_factory = call
        self.frames = frames
        self._first = first
        self._reattach = reattach
        #: The last started frame, and the output held: C{_base} bytes
        #: before the current stream began, C{_received} on it.
        self._started: Any = None
        self._base = self._received = 0
        #: An exit or detached frame came: the session is over.
        self._finished = False
        self._closing = threading.Event()
        #: Times the session attached again.
        self.reattached = 0
        self._on_frame = on_frame
        self._on_end = on_end
        self._detach_keys = detach_keys
        self._asks_direct = bool(first.start.direct)
        #: The input sent, named in the start frames when the session
        #: re-attaches (its stream lost, what never arrived goes again).
        self._sent = SentInput()
        if reattach is not None:
            self._sent.name(first)
        #: What the UI queued: ("stdin", bytes), ("resize", (rows, cols)),
        #: or L{_STOP}; and ("again", bytes), input sent again.
        self._input = _Inbox()
        #: The number of the session's current gRPC stream.
        self._stream_number = 0
        #: Set once the started frame told which path the session takes
        #: (or the call ended): until then the request iterator holds the
        #: queued input back, so none of it goes to a stream that is about
        #: to hand the session over.
        self._settled = threading.Event()
        self._call: Any = None
        self._channel: socket.socket | None = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.closed = False
        #: Whether the session went over a direct channel.
        self.direct = False
        self.thread = threading.Thread(target=self._run, name=f"ross-tui {name}", daemon=True)

    def begin(self) -> Session:
        self.thread.start()
        return self

    def _requests(self, first: Any, frames: Frames, number: int) -> Iterator[Any]:
        """
        Run by grpcio's request thread: the start frame, then, once the
        stream's C{started} came, whatever the UI queued, until L{close},
        the stream's end (what is queued then is the next stream's) or the
        hand-over to a direct channel.
        """
        yield first
        if first is self._first and self._asks_direct:
            self._settled.wait()
            if self.direct:
                return
        while True:
            item = self._input.take(number)
            if item is None or item is self._STOP:
                return
            kind, value = item
            if kind == "resize":
                yield frames.resize(*value)
                continue
            if kind == "stdin" and self._reattach is not None:
                self._sent.record(value)
            yield frames.stdin(value)

    def _run(self) -> None:
        error: Exception | None = None
        try:
            error = self._stream()
            if self._channel is not None and not self.closed:
                error = self._carry(self._channel)
        finally:
            if self._channel is not None:
                self._channel.close()
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1
        if not self.closed:
            self._on_end(error)

    def _stream(self) -> Exception | None:
        """
        The session on gRPC streams: the first, and for a TTY session whose
        stream was lost (UNAVAILABLE, or an end without an exit frame)
        the next ones, attached again from the output it holds; or up to
        the direct channel's hand-over (then in C{self._channel}).
        """
        factory, frames, first = self._call_factory, self.frames, self._first
        deadline, delay = 0.0, 0.05
        while True:
            held = self._started
            error = self._one_stream(factory, frames, first)
            lost = error is None or (isinstance(error, grpc.RpcError)
                                     and error.code() == grpc.StatusCode.UNAVAILABLE)
            if (not lost or self._reattach is None or self._started is None or self.direct or self.closed
                    or self._finished):
                return error
            now = time.monotonic()
            if self._started is not held or not deadline:
                # Attached (again) since the last loss: a fresh wait.
                deadline, delay = now + self.REATTACH_TIMEOUT, 0.05
            if now >= deadline:
                why = "the stream ended" if error is None else str(getattr(error, "code", lambda: "")())
                return DirectError(f"the session was lost ({why}) and could not be attached again within "
                                   f"{self.REATTACH_TIMEOUT:.0f} seconds")
            if self._closing.wait(min(delay, deadline - now)):
                return None
            delay = min(delay * 2, 1.0)
            since = self._base + self._received
            factory, frames, first = self._reattach(self._started, since)
            self._sent.name(first)
            self._base, self._received = since, 0
            self.reattached += 1

    def _one_stream(self, factory: Callable[[Iterator[Any]], Any], frames: Frames, first: Any) -> Exception | None:
        """
        One gRPC call of the session: None when it ended (with the
        session, or without an exit frame), or the error it failed with.
        """
        self._stream_number += 1
        number = self._stream_number
        try:
            call = factory(self._requests(first, frames, number))
            with self._lock:
                self._call = call
                closed = self.closed
            if closed:
                call.cancel()
                return None
            for frame in call:
                kind = frame.WhichOneof("output")
                if kind == "started":
                    self.direct = bool(frame.started.direct_ticket)
                    self._settled.set()
                    if self.direct:
                        self._channel = redeem(frame.started.direct_socket, frame.started.direct_ticket)
                        call.cancel()
                        self._on_frame(frame)
                        return None
                    if self._started is not None:
                        # Attached again: what the session never took in of
                        # the input sent goes before anything queued since.
                        unsent = self._sent.unsent(frame.started)
                        if unsent:
                            self._input.put_front(("again", unsent))
                    self._started = frame.started
                    self._base, self._received = frame.started.output_offset, 0
                    self._input.live(number)
                elif kind == "data":
                    self._received += len(frame.data.data)
                elif kind in ("exit", "detached"):
                    self._finished = True
                self._on_frame(frame)
            return None
        except (grpc.RpcError, DirectError) as e:
            return e
        finally:
            # The request iterator must end too, or grpcio's request thread
            # waits forever (on a direct channel it has ended already); what
            # is queued from now on is the next stream's.
            self._settled.set()
            self._input.end(number)

    def _carry(self, channel: socket.socket) -> Exception | None:
        """
        The session on its direct channel, until the exit event, the detach
        keys, L{close}, or the channel's end (an error: the exit status
        never came).
        """
        scanner = DetachScanner(self._detach_keys)
        decoder = shimwire.FrameDecoder()
        out = bytearray()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            # (Registering again changes the events polled for.)
            poller.register(channel, select.POLLIN | (select.POLLOUT if out else 0))
            readable = False
            for fd, event in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                elif event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    readable = True
            while True:
                try:
                    item = self._input.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    return None
                kind, value = item
                if kind == "resize":
                    out += shimwire.resize(*value)
                    continue
                data, hit = scanner.feed(value)
                if data:
                    out += shimwire.frame(shimwire.STDIN, data)
                if hit:
                    _send(channel, out)
                    self._on_frame(container_pb2.InteractiveOutput(detached=True))
                    return None
            if out:
                _send(channel, out)
            if not readable:
                continue
            try:
                data = channel.recv(self.READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return DirectError("the session's channel closed before its exit status came")
            try:
                frames = decoder.feed(data)
            except shimwire.FrameError as e:
                return DirectError(f"the session's channel sent garbage: {e}")
            for kind, payload in frames:
                output = output_of(kind, payload)
                if output is None:
                    continue
                if self.closed:
                    return None
                self._on_frame(output)
                if output.WhichOneof("output") == "exit":
                    return None

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"w")
            except BlockingIOError:
                pass  # the session's thread has plenty to wake up for already

    def send(self, data: bytes) -> None:
        if data and not self.closed:
            self._input.put(("stdin", data))
            self._wake()

    def resize(self, rows: int, cols: int) -> None:
        if not self.closed:
            self._input.put(("resize", (rows, cols)))
            self._wake()

    def close(self) -> None:
        """
        Leave the session: the daemon (or, on a direct channel, the shim)
        detaches it and the process runs on.
        """
        with self._lock:
            self.closed = True
            call = self._call
            self._input.put(self._STOP)
        self._closing.set()
        self._wake()
        if call is not None:
            call.cancel()


def _send(channel: socket.socket, out: bytearray) -> None:
    """
    As much of C{out} as C{channel} takes now; the rest stays in C{out}.
    """
    try:
        sent = channel.send(out)
    except BlockingIOError:
        return
    except OSError:
        # The shim is gone: its end comes as the channel's EOF.
        out.clear()
        return
    del out[:sent]


def attach_again(cli: Cli, stdin: bool, size: Callable[[], tuple[int, int]]) -> Callable[..., Any]:
    """
    How a pane's TTY session attaches again once its stream was lost (the
    daemon restarted: a L{Session}'s C{reattach}): an Attach to the
    session its C{started} frame named, from the output it holds, at the
    pane's current C{size()}.
    """
    def again(started: Any, since: int) -> tuple[Any, Frames, Any]:
        rows, cols = size()
        start = container_pb2.AttachStart(container_id=started.container_id, exec_id=started.exec_id,
                                          attach_stdin=stdin, since=since,
                                          window=common_pb2.WindowSize(rows=rows, cols=cols))
        return cli.stub("ContainerService").Attach, Frames(container_pb2.AttachInput), \
            container_pb2.AttachInput(start=start)

    return again


class _Inbox:
    """
    What the UI queued for a session, for one gRPC stream at a time: a
    stream's request iterator takes items only once its stream is live
    (its C{started} came) and stops taking when it ended, so a stream that
    fails to attach, or a lost stream's thread, never swallows what the
    next stream is to send. A direct channel takes items with
    L{get_nowait}.
    """

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._live = 0
        self._ended_through = 0

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def put_front(self, item: Any) -> None:
        with self._cond:
            self._items.appendleft(item)
            self._cond.notify_all()

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._items:
                raise queue.Empty
            return self._items.popleft()

    def live(self, stream: int) -> None:
        with self._cond:
            self._live = stream
            self._cond.notify_all()

    def end(self, stream: int) -> None:
        with self._cond:
            self._ended_through = max(self._ended_through, stream)
            self._cond.notify_all()

    def take(self, stream: int) -> Any:
        """
        The next item for C{stream}, waiting until it is live; None once
        it ended.
        """
        with self._cond:
            while True:
                if stream <= self._ended_through:
                    return None
                if self._live == stream and self._items:
                    return self._items.popleft()
                self._cond.wait()
