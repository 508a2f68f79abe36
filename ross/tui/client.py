# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The TUI's side of the wire: grpcio's synchronous API, driven by threads
that are not Textual's event loop.

The connection is the CLI's (L{ross.client.base.Cli}: the same address, TLS
and token settings, the same error lines). Server streams are read by a
L{Feed}, one thread each, handing every message to a callback (the TUI
posts it as a Textual message); bidirectional sessions are a L{Session},
one thread reading output while grpcio's request thread sends the input
queued by the UI. Both end on C{cancel()}/C{close()}: the call is
cancelled, which ends the reading thread, and the request iterator is told
to stop, which ends grpcio's request thread. Nothing is left running.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import grpc

from ross.client.base import Cli, error_of
from ross.client.frames import Frames
from ross.client.settings import Globals


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
    A bidirectional Exec or Attach stream carrying a terminal.

    @param call: starts the call given its request iterator (the stub's
        C{Exec} or C{Attach}).
    @param frames: how that RPC spells stdin and resize frames.
    @param first: the start frame.
    @param on_frame: called in the session's thread with every output frame
        (C{started}, C{data}, C{exit}, C{detached}).
    @param on_end: called once in the session's thread when the stream ended
        without C{close()}: None, or the error it failed with.
    """

    _STOP = object()

    def __init__(
        self,
        name: str,
        call: Callable[[Iterator[Any]], Any],
        frames: Frames,
        first: Any,
        on_frame: Callable[[Any], None],
        on_end: Callable[[grpc.RpcError | None], None],
    ) -> None:
        self._call_factory = call
        self.frames = frames
        self._first = first
        self._on_frame = on_frame
        self._on_end = on_end
        self._input: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call: Any = None
        self._lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"ross-tui {name}", daemon=True)

    def begin(self) -> Session:
        self.thread.start()
        return self

    def _requests(self) -> Iterator[Any]:
        """
        Run by grpcio's request thread: the start frame, then whatever the
        UI queued, until L{close}.
        """
        yield self._first
        while True:
            frame = self._input.get()
            if frame is self._STOP:
                return
            yield frame

    def _run(self) -> None:
        error: grpc.RpcError | None = None
        try:
            call = self._call_factory(self._requests())
            with self._lock:
                self._call = call
                closed = self.closed
            if closed:
                call.cancel()
                return
            for frame in call:
                self._on_frame(frame)
        except grpc.RpcError as e:
            error = e
        finally:
            # The request iterator must end too, or grpcio's request thread
            # waits on the queue forever.
            self._input.put(self._STOP)
        if not self.closed:
            self._on_end(error)

    def send(self, data: bytes) -> None:
        if data and not self.closed:
            self._input.put(self.frames.stdin(data))

    def resize(self, rows: int, cols: int) -> None:
        if not self.closed:
            self._input.put(self.frames.resize(rows, cols))

    def close(self) -> None:
        """
        Leave the session: the daemon detaches it and the process runs on.
        """
        with self._lock:
            self.closed = True
            call = self._call
        self._input.put(self._STOP)
        if call is not None:
            call.cancel()
