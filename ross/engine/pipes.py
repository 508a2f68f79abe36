# -*- test-case-name: ross.test.test_image_units -*-
"""
Byte streams between the reactor and a worker thread, bounded both ways.

L{Inflow}: the reactor feeds chunks (an archive arriving over gRPC) and a
thread reads them as a file (C{tarfile} in stream mode). L{Outflow}: a
thread writes chunks (an archive being produced) and the reactor takes
them. Each side waits when the buffer is full or empty, so neither a fast
client nor a slow one makes the daemon hold a whole archive in memory.

L{Guard}: a client that goes away cancels the operation feeding on its
stream; the operation notes it and stops at its next checkpoint, never in
the middle of a step whose thread is still writing.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
from collections import deque
from typing import Any, Callable, Coroutine, TypeVar

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

_T = TypeVar("_T")


class PipeClosed(Exception):
    """The other end of a pipe went away."""


def in_pool(reactor: IReactorThreads, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
    """
    Run C{fn} in the reactor's thread pool (disk work that does not wait
    on a stream); the result arrives in the reactor.
    """
    return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)


def in_thread(reactor: IReactorFromThreads, fn: Callable[..., _T], *args: object,
              name: str = "ross-images") -> Deferred[_T]:
    """
    Run C{fn} in a thread of its own (for work that waits on a stream and
    must not hold a pool thread); the result arrives in the reactor.
    """
    d: Deferred[_T] = Deferred()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException:
            f = Failure()
            reactor.callFromThread(d.errback, f)
        else:
            reactor.callFromThread(d.callback, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return d


class Inflow:
    """
    Reactor writes (L{feed}), or another thread does (L{put}); a thread
    reads (file-like C{read}).
    """

    def __init__(self, reactor: IReactorFromThreads, limit: int = 8) -> None:
        self._reactor = reactor
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._current = memoryview(b"")
        self._eof = False
        self._error: BaseException | None = None
        self._reader_done = False
        self._waiter: Deferred[bool] | None = None
        self.received = 0

    # -- reactor side

    def feed(self, data: bytes) -> Deferred[bool]:
        """
        Hand C{data} to the reader. Fires True when more may be fed, False
        once the reader has stopped (it finished or failed): stop feeding.
        """
        with self._cond:
            if self._reader_done:
                return succeed(False)
            self._chunks.append(data)
            self.received += len(data)
            self._cond.notify()
            if len(self._chunks) < self._limit:
                return succeed(True)
            waiter: Deferred[bool] = Deferred()
            self._waiter = waiter
            return waiter

    def put(self, data: bytes) -> bool:
        """
        From a thread: hand C{data} to the reader, waiting while C{limit}
        chunks wait. False once the reader has stopped: stop writing.
        """
        with self._cond:
            while len(self._chunks) >= self._limit and not self._reader_done:
                self._cond.wait()
            if self._reader_done:
                return False
            self._chunks.append(data)
            self.received += len(data)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """The writer is done: the reader sees end of file."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self, reason: BaseException | None = None) -> None:
        """The writer is gone: the reader's next read fails."""
        with self._cond:
            self._error = reason or PipeClosed("the sender went away")
            self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            waiter, self._waiter = self._waiter, None
            more = not self._reader_done
        if waiter is not None:
            waiter.callback(more)

    # -- thread side

    def reader_done(self) -> None:
        """
        The reader will read no more: what waits is dropped, a writer
        stops, a read still waiting sees end of file.
        """
        with self._cond:
            self._reader_done = True
            self._chunks.clear()
            self._cond.notify_all()
            waiting = self._waiter is not None
        if waiting:
            self._reactor.callFromThread(self._wake)

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._current:
                with self._cond:
                    while not self._chunks and not self._eof and self._error is None and not self._reader_done:
                        self._cond.wait()
                    if self._error is not None:
                        raise self._error
                    if not self._chunks:
                        break
                    self._current = memoryview(self._chunks.popleft())
                    self._cond.notify_all()
                    wake = self._waiter is not None and len(self._chunks) <= self._limit // 2
                if wake:
                    self._reactor.callFromThread(self._wake)
            take = len(self._current) if n < 0 else min(n - len(out), len(self._current))
            out += self._current[:take]
            self._current = self._current[take:]
        return bytes(out)


class PipeSource:
    """
    A thread reads (file-like C{read}) from the read end of a pipe the
    daemon made, whose write end went to a client (a direct channel): the
    bytes never cross the reactor. L{abort} (from any thread) makes a read
    waiting for a client that neither writes nor closes its end give up
    within L{POLL} seconds. Owns C{fd}: L{close} it after the reader.
    """

    #: Seconds a read waits before it looks at whether it was aborted.
    POLL = 0.1

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._error: BaseException | None = None
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        #: Bytes read so far.
        self.received = 0

    def abort(self, reason: BaseException | None = None) -> None:
        self._error = reason or PipeClosed("the pipe was given up")

    def read(self, n: int = -1) -> bytes:
        """C{n} bytes (all with -1), fewer only at the end of the stream."""
        out = bytearray()
        while n < 0 or len(out) < n:
            if self._error is not None:
                raise self._error
            if not self._poll.poll(self.POLL * 1000):
                continue
            data = os.read(self._fd, _PIPE_READ if n < 0 else min(n - len(out), _PIPE_READ))
            if not data:
                break
            out += data
        self.received += len(out)
        return bytes(out)

    def close(self) -> None:
        os.close(self._fd)


_PIPE_READ = 1 << 20
_F_SETPIPE_SZ = 1031


def grow_pipe(fd: int, size: int = _PIPE_READ) -> None:
    """Make the pipe of C{fd} hold C{size} bytes, when the user's limit allows."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        # A smaller pipe only costs speed.
        pass


class Guard:
    """
    Cancellation of a multi-step operation, acted on at its checkpoints.

    Cancelling a Deferred that awaits a thread abandons the thread, not its
    work: what it writes afterwards (an ingest, a blob, a record) is then
    left behind. Under a guard, cancelling the operation's Deferred only
    notes the cancellation (and calls C{on_cancel}, e.g. to make a thread
    blocked on a client's stream give up); the operation runs on to its
    next L{check}, which raises CancelledError so its undo runs after the
    last write, and the Deferred fires once it is done.
    """

    def __init__(self, on_cancel: Callable[[], None] | None = None) -> None:
        self._on_cancel = on_cancel
        self.cancelled = False

    def check(self) -> None:
        """A checkpoint: CancelledError once the operation was cancelled."""
        if self.cancelled:
            raise CancelledError("the operation was cancelled")

    def _cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._on_cancel is not None:
                self._on_cancel()

    def run(self, operation: Coroutine[Any, Any, _T]) -> Deferred[_T]:
        """
        Start C{operation} (a coroutine that calls L{check}); fires with
        its outcome, however often it is cancelled meanwhile.
        """
        inner = Deferred.fromCoroutine(operation)
        outcome: list[_T | Failure] = []
        waiters: list[Deferred[None]] = []

        def ended(result: _T | Failure) -> None:
            # The outcome is handed over below (no unhandled-error report).
            outcome.append(result)
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(None)

        inner.addBoth(ended)

        async def wait() -> _T:
            while not outcome:
                waiter: Deferred[None] = Deferred()
                waiters.append(waiter)
                try:
                    await waiter
                except CancelledError:
                    self._cancel()
            result = outcome[0]
            if isinstance(result, Failure):
                result.raiseException()
            return result

        return Deferred.fromCoroutine(wait())


_END = object()


class Outflow:
    """
    A thread writes chunks, the reactor takes them with L{get}.
    """

    def __init__(self, reactor: IReactorFromThreads, limit: int = 8) -> None:
        self._reactor = reactor
        self._limit = limit
        self._cond = threading.Condition()
        self._items: deque[Any] = deque()
        self._cancelled = False
        self._getter: Deferred[bytes | None] | None = None

    # -- thread side

    def put(self, data: bytes) -> None:
        """Blocks while the buffer is full; PipeClosed once the reader left."""
        with self._cond:
            while len(self._items) >= self._limit and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise PipeClosed("the receiver went away")
            self._items.append(data)
        self._reactor.callFromThread(self._deliver)

    def finish(self) -> None:
        with self._cond:
            self._items.append(_END)
        self._reactor.callFromThread(self._deliver)

    def fail(self, failure: Failure) -> None:
        with self._cond:
            self._items.append(failure)
        self._reactor.callFromThread(self._deliver)

    # -- reactor side

    def get(self) -> Deferred[bytes | None]:
        """The next chunk, or None at the end; fails if the writer failed."""
        if self._getter is not None:
            raise RuntimeError("get() called again before the previous result")
        d: Deferred[bytes | None] = Deferred(lambda _: self.cancel())
        self._getter = d
        self._deliver()
        return d

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()
        getter, self._getter = self._getter, None
        if getter is not None and not getter.called:
            getter.errback(CancelledError("save cancelled"))

    def _deliver(self) -> None:
        if self._getter is None:
            return
        with self._cond:
            if not self._items:
                return
            item = self._items.popleft()
            self._cond.notify_all()
        getter, self._getter = self._getter, None
        if item is _END:
            getter.callback(None)
        elif isinstance(item, Failure):
            getter.errback(item)
        else:
            getter.callback(item)
