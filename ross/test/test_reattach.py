"""
L{ross.cli.interactive.Session} attaching a TTY session again when its
stream is lost (the daemon restarting), against scripted streams: it asks
for exactly the output it has not shown, retries while the daemon is
away, gives up after its bound, and retries nothing else.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from typing import Any, Iterator

import grpc
from twisted.trial.unittest import SynchronousTestCase

from ross.cli.interactive import Session
from ross.client.frames import Frames
from ross.client.h2grpc import rpc_error
from ross.v1 import container_pb2


def started(offset: int = 0) -> Any:
    return container_pb2.InteractiveOutput(started=container_pb2.Started(
        container_id="c1", exec_id="e1", output_offset=offset))


def data(payload: bytes) -> Any:
    return container_pb2.InteractiveOutput(data=container_pb2.OutputData(data=payload))


def exit(code: int) -> Any:
    return container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(status_code=code))


class Stream:
    """
    A call that gives C{frames}, then fails with C{error} (or ends well).
    """

    def __init__(self, frames: list[Any], error: Exception | None = None) -> None:
        self._frames = iter(frames)
        self._error = error

    def __call__(self, requests: Iterator[Any]) -> Stream:
        return self

    def __iter__(self) -> Iterator[Any]:
        yield from self._frames
        if self._error is not None:
            raise self._error

    def cancel(self) -> bool:
        return True

    def is_active(self) -> bool:
        return False


def gone() -> Exception:
    return rpc_error("UNAVAILABLE", "Socket closed")


class ReattachTests(SynchronousTestCase):
    def session(self, first: Stream, *again: Stream | Exception, tty: bool = True) -> tuple[Session, list[int]]:
        """
        A TTY session on C{first}; re-attaching gives the streams of
        C{again} in turn (or raises their errors, as a refused connection
        does). The C{since} of each re-attach is recorded.
        """
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        for fd in (stdin_r, stdin_w, out_r, out_w):
            self.addCleanup(os.close, fd)
        self.out = out_r
        os.set_blocking(out_r, False)
        asked: list[int] = []
        streams = list(again)

        def reattach(frame: Any, since: int, size: Any) -> Any:
            self.assertEqual((frame.container_id, frame.exec_id), ("c1", "e1"))
            asked.append(since)
            stream = streams.pop(0) if streams else gone()
            if isinstance(stream, Exception):
                def refused(requests: Any) -> Any:
                    raise stream
                return refused, Frames(container_pb2.AttachInput), None
            return stream, Frames(container_pb2.AttachInput), None

        session = Session(first, Frames(container_pb2.ExecInput), container_pb2.ExecInput(), tty_mode=tty,
                          attach_stdin=True, stdin_fd=stdin_r, stdout_fd=out_w, stderr_fd=out_w,
                          reattach=reattach)
        return session, asked

    def shown(self) -> bytes:
        try:
            return os.read(self.out, 65536)
        except BlockingIOError:
            return b""

    def test_only_what_was_not_shown(self) -> None:
        """
        Each re-attach asks from the stream's start (its C{output_offset})
        plus the bytes received on it; the exit code of the last stream is
        the session's, and every byte is shown once.
        """
        session, asked = self.session(
            Stream([started(), data(b"abc"), data(b"de")], gone()),
            gone(),
            # Its scrollback lost bytes 5 to 8: it starts at 8.
            Stream([started(8), data(b"xy")], gone()),
            Stream([started(10), data(b"z"), exit(7)]),
        )
        self.assertEqual(session.run(), 7)
        self.assertEqual(asked, [5, 5, 10])
        self.assertEqual(self.shown(), b"abcdexyz")
        self.assertEqual(session.reattached, 2)

    def test_stream_ends_without_exit(self) -> None:
        """
        A stream that ends well but without an exit frame is attached
        again too.
        """
        session, asked = self.session(Stream([started(), data(b"ab")]), Stream([started(2), exit(3)]))
        self.assertEqual(session.run(), 3)
        self.assertEqual(asked, [2])

    def test_gives_up(self) -> None:
        """
        With the daemon away past the bound, the session ends with 1 and
        says why.
        """
        session, asked = self.session(Stream([started(), data(b"ab")], gone()))
        session.REATTACH_TIMEOUT = 0.5
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        began = time.monotonic()
        self.assertEqual(session.run(), 1)
        self.assertLess(time.monotonic() - began, 5)
        self.assertGreater(len(asked), 2)
        self.assertEqual(set(asked), {2})
        self.assertIn("could not be attached again", err.getvalue())
        self.assertIn("UNAVAILABLE", err.getvalue())

    def test_other_errors_end_it(self) -> None:
        """
        Only UNAVAILABLE (the daemon gone) is retried: the daemon's answers
        end the session as before.
        """
        session, asked = self.session(Stream([started()], rpc_error("NOT_FOUND", "No such container: c1")))
        e = self.assertRaises(grpc.RpcError, session.run)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(asked, [])

    def test_not_before_started(self) -> None:
        """
        A stream lost before its session began has nothing to attach to.
        """
        session, asked = self.session(Stream([], gone()))
        self.assertRaises(grpc.RpcError, session.run)
        self.assertEqual(asked, [])

    def test_pipe_mode_is_not_reattached(self) -> None:
        """
        Without a TTY there is no scrollback to resume from.
        """
        session, asked = self.session(Stream([started(), data(b"ab")], gone()), tty=False)
        self.assertRaises(grpc.RpcError, session.run)
        self.assertEqual(asked, [])


class TakingStream(Stream):
    """
    A call that takes its requests on a thread of its own, as grpcio's
    does, and gives its frames; after C{started} it waits until
    C{wait_for} bytes of input came.
    """

    def __init__(self, frames: list[Any], error: Exception | None = None, wait_for: int = 0) -> None:
        super().__init__(frames, error)
        self.first: Any = None
        self.typed = bytearray()
        self._wait_for = wait_for
        self._got = threading.Condition()

    def __call__(self, requests: Iterator[Any]) -> Stream:
        def take() -> None:
            for request in requests:
                if self.first is None:
                    self.first = request
                elif request.WhichOneof("input") == "stdin":
                    with self._got:
                        self.typed += request.stdin
                        self._got.notify_all()

        threading.Thread(target=take, daemon=True).start()
        return self

    def __iter__(self) -> Iterator[Any]:
        for frame in self._frames:
            yield frame
            if frame.WhichOneof("output") == "started":
                with self._got:
                    if not self._got.wait_for(lambda: len(self.typed) >= self._wait_for, timeout=10):
                        raise AssertionError(f"input never came: {bytes(self.typed)!r}")
        if self._error is not None:
            raise self._error


class LostInputTests(SynchronousTestCase):
    def test_sent_again(self) -> None:
        """
        Input a lost stream took and the session never took in (the
        daemon died with it) goes first on the stream attached next, once:
        the start frames name the input, and the new stream's C{started}
        says how much of it the session has.
        """
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        for fd in (stdin_r, stdin_w, out_r, out_w):
            self.addCleanup(os.close, fd)
        lost = TakingStream([started()], gone(), wait_for=3)
        taken = container_pb2.Started(container_id="c1", exec_id="e1", input_offset=1)
        again = TakingStream([container_pb2.InteractiveOutput(started=taken), exit(4)], wait_for=2)

        def reattach(frame: Any, since: int, size: Any) -> Any:
            return again, Frames(container_pb2.AttachInput), container_pb2.AttachInput(
                start=container_pb2.AttachStart(container_id="c1", exec_id="e1"))

        first = container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="c1", tty=True))
        session = Session(lost, Frames(container_pb2.ExecInput), first, tty_mode=True, attach_stdin=True,
                          stdin_fd=stdin_r, stdout_fd=out_w, stderr_fd=out_w, reattach=reattach)
        os.write(stdin_w, b"abc")
        self.assertEqual(session.run(), 4)
        self.assertEqual(bytes(lost.typed), b"abc")
        self.assertEqual(bytes(again.typed), b"bc")
        self.assertEqual(len(lost.first.start.input_id), 16)
        self.assertEqual(again.first.start.input_id, lost.first.start.input_id)

    def test_kept_bounded(self) -> None:
        """
        What is kept for sending again is bounded; a daemon that does not
        count input gets nothing again.
        """
        from ross.client.frames import SentInput

        sent = SentInput()
        for _ in range(40):
            sent.record(b"x" * 65536 + b"y")
        self.assertLessEqual(len(sent._tail), 2 * SentInput.KEPT)
        everything = sent.unsent(container_pb2.Started(input_offset=0))
        self.assertEqual(len(everything), SentInput.KEPT)
        self.assertEqual(sent.unsent(container_pb2.Started(input_offset=sent.sent - 1)), b"y")
        self.assertEqual(sent.unsent(container_pb2.Started(input_offset=sent.sent)), b"")
        self.assertEqual(sent.unsent(container_pb2.Started()), b"")


class ChannelTests(SynchronousTestCase):
    def test_reconnection_backoff_capped(self) -> None:
        """
        The CLI's grpcio channel tries a vanished daemon again every second
        at most: grpcio's own back-off grows to two minutes, past the
        minute a session waits to attach again.
        """
        from ross.client.base import _channel_parts
        from ross.client.settings import Globals

        g = Globals()
        g.host = "tcp://127.0.0.1:2376"
        options = dict(_channel_parts(g)[2])
        self.assertLessEqual(options["grpc.max_reconnect_backoff_ms"], 1000)
