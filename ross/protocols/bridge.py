# -*- test-case-name: ross.test.test_bridge -*-
"""
The bridge between grpcio's server and the Twisted reactor.

grpcio serves the API with its asyncio server (C{grpc.aio}) on an event loop
of its own, in one thread beside the reactor's (L{ross.services.grpc_server});
the engine lives in the reactor thread and answers with Deferreds or
coroutines. Each call crosses between the two threads twice, whatever the
load: no thread per call, so a thousand calls in flight are a thousand small
objects, not a thousand threads taking turns at the GIL.

L{Bridge.service} turns an object of reactor-side methods into a grpc
generic handler for one service of the API, choosing the handler shape from
the service descriptor:

    - unary:          C{method(request, call)} -> response
    - server stream:  C{method(request, out, call)} -> None when done
    - client stream:  C{method(inbound, call)} -> response
    - bidirectional:  C{method(inbound, out, call)} -> None when done

Each may return a value, a Deferred or a coroutine; a message may be
given already serialized (bytes), as a listing kept serialized is. C{out}
is an L{Outbound}: C{await out.send(msg)} waits while the client is slow (the
buffer between the reactor and the gRPC loop stays bounded), or register a
push producer. C{inbound} is an L{Inbound}: C{await inbound.receive()} gives
the next request or C{None} at the end; the client is read only as fast as
the engine receives.

A bidirectional method may hand the rest of its call to the gRPC loop
(L{Outbound.hand_over}): an attached session's bytes then cross no thread
but grpc's own (the reactor set the session up, and hears how it ended).

A client that cancels or disconnects cancels the method's Deferred in the
reactor. Errors become status codes in L{status_of}, nowhere else. A method
the object lacks answers UNIMPLEMENTED with its name.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
from collections import deque
from typing import Any, AsyncIterable, Awaitable, Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross import errors
from ross.errors import disk_full

_log = Logger()

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
    (CancelledError, grpc.StatusCode.CANCELLED),
]


class Status:
    """
    A final gRPC status, handed from the reactor to the gRPC loop.
    """

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {self.message!r})"


def status_of(failure: Failure, method: str) -> Status:
    """
    The one place where an error becomes a status code. Anything that is not
    a domain error is a bug: INTERNAL, logged with its traceback.
    """
    for kind, code in _CODES:
        if failure.check(kind):
            message = str(failure.value) if kind is not CancelledError else "cancelled"
            return Status(code, message)
    if failure.value is not None and disk_full(failure.value):
        # Out of disk is a limit hit, not a bug (the seed's table).
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: no space left on the daemon's disk")
    if isinstance(failure.value, OSError) and failure.value.errno in (errno.EMFILE, errno.ENFILE):
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: the daemon has too many open files")
    _log.failure("unexpected error in {method}", failure, method=method)
    return Status(grpc.StatusCode.INTERNAL, f"internal error in {method}: {failure.getErrorMessage()}")


def as_deferred(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    Call C{fn} and give its result as a Deferred, whether it returned a
    value, a Deferred or a coroutine, or raised.
    """
    try:
        result = fn(*args)
    except BaseException:
        return fail()
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return succeed(result)


class CallInfo:
    """
    What a reactor-side method may know about its call.
    """

    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.peer = context.peer()
        self.metadata = dict(context.invocation_metadata() or ())


class _Abort:
    __slots__ = ("status",)

    def __init__(self, status: Status) -> None:
        self.status = status


_END = object()
#: In a L{LoopInbox}: what the reactor forwarded is all there, the pump's
#: own deliveries follow.
_FENCE = object()


class _Ended:
    """
    In a L{LoopInbox}: the client's requests ended (C{error}: how, when it
    went away).
    """

    __slots__ = ("error",)

    def __init__(self, error: Failure | None) -> None:
        self.error = error


class LoopInbox:
    """
    The rest of a call's requests, read in the gRPC loop after
    L{Outbound.hand_over}: first what had gone to the reactor (forwarded in
    order, up to a fence), then what the loop reads from then on. Each
    message taken gives the client's stream its credit back.
    """

    def __init__(self, inbound: Inbound) -> None:
        self._inbound = inbound
        # Made in the reactor, used in the loop only (asyncio.Queue binds
        # its loop at first use).
        self._forwarded: asyncio.Queue[Any] = asyncio.Queue()
        self._direct: asyncio.Queue[Any] = asyncio.Queue()
        self._fenced = False
        self._ended: _Ended | None = None

    async def receive(self) -> Any:
        """
        The next request, or None once the client has finished sending;
        the pump's error (a CancelledError when the client went away).
        """
        while self._ended is None:
            if self._fenced:
                item = await self._direct.get()
            else:
                item = await self._forwarded.get()
                if item is _FENCE:
                    self._fenced = True
                    continue
            if isinstance(item, _Ended):
                self._ended = item
                break
            self._inbound._credit.release()
            return item
        if self._ended.error is not None:
            self._ended.error.raiseException()
        return None

    # -- reactor side

    def forward(self, item: Any) -> None:
        try:
            self._inbound._loop.call_soon_threadsafe(self._forwarded.put_nowait, item)
        except RuntimeError:
            pass

    # -- gRPC loop side

    def switch(self) -> None:
        """
        From now on the pump hands requests here; the reactor forwards a
        fence after whatever the pump gave it before.
        """
        self._inbound._sink = self
        self._inbound._reactor.callFromThread(self.forward, _FENCE)

    def take(self, item: Any) -> None:
        self._direct.put_nowait(item)


class _HandOver:
    """
    In an outbound queue: the rest of the call runs in the gRPC loop as
    C{run(context, requests)}, the reactor's end of the stream after it.
    """

    __slots__ = ("run", "requests", "done", "discard", "task", "cancelled")

    def __init__(self, run: Callable[..., Awaitable[Any]], requests: LoopInbox, done: Deferred[Any],
                 discard: Callable[[], None] | None) -> None:
        self.run = run
        self.requests = requests
        self.done = done
        self.discard = discard
        self.task: asyncio.Future[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        # In the loop: stop the run, or see that it never starts.
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()
        elif self.discard is not None:
            discard, self.discard = self.discard, None
            discard()


class Outbound:
    """
    The reactor's end of a response stream: messages go into a queue that
    the gRPC loop drains into the connection.

    The queue is bounded: L{send} returns a Deferred that waits while more
    than C{high_water} messages are queued, a registered streaming producer
    is paused at C{high_water} and resumed at C{low_water}, and L{write}
    (for sources that cannot wait, like pull progress) ends the stream with
    RESOURCE_EXHAUSTED once C{hard_limit} messages are waiting.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        loop: asyncio.AbstractEventLoop,
        high_water: int = 32,
        low_water: int = 8,
        # Far above what a progress report queues between two reads.
        hard_limit: int = 4096,
    ) -> None:
        self._reactor = reactor
        self._loop = loop
        self._queue: deque[Any] = deque()
        # Set in the loop when the queue may have something; one wake-up
        # is scheduled at a time, however many messages the reactor queues.
        self._ready = asyncio.Event()
        self._wake_scheduled = False
        self._high = high_water
        self._low = low_water
        self._hard = hard_limit
        # Each counter is written by one thread only, so their difference is
        # a safe (if momentarily stale) queue length under the GIL.
        self._put = 0
        self._taken = 0
        self._waiter: Deferred[None] | None = None
        self._producer: IPushProducer | None = None
        self._paused = False
        self.closed = False

    # -- reactor side

    def pending(self) -> int:
        """
        Messages queued and not yet taken by the gRPC loop.
        """
        return self._put - self._taken

    def send(self, message: Any) -> Deferred[None]:
        """
        Queue C{message}; the result fires when the queue has room again.
        """
        if self.closed:
            return fail(CancelledError("stream closed"))
        self._enqueue(message)
        if self.pending() < self._high:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._forget_waiter(d))
        self._waiter = waiter
        return waiter

    def write(self, message: Any) -> None:
        """
        Queue C{message} without waiting; a client that falls C{hard_limit}
        messages behind gets RESOURCE_EXHAUSTED.
        """
        if self.closed:
            return
        if self.pending() >= self._hard:
            self.abort(
                Status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client is more than {self._hard} messages behind; stream ended",
                )
            )
            return
        self._enqueue(message)
        if self._producer is not None and not self._paused and self.pending() >= self._high:
            self._paused = True
            self._producer.pauseProducing()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def finish(self) -> None:
        """
        End the stream with OK once the queued messages are sent.
        """
        if not self.closed:
            self._close(_END)

    def hand_over(self, run: Callable[..., Awaitable[Any]], inbound: Inbound,
                  discard: Callable[[], None] | None = None) -> Deferred[Any]:
        """
        Serve the rest of the call in the gRPC loop, once what is queued
        has been written: C{await run(context, requests)}, C{requests} a
        L{LoopInbox} of what the client sends from here on (C{inbound}'s).
        The result fires with what C{run} returns, or fails with its error;
        cancelling it (the call ended here) cancels C{run}, or calls
        C{discard()} in the loop instead if C{run} never started. The
        method then returns (or raises) as it would have after serving the
        call itself. When the stream is closed already, fails at once,
        having called C{discard()} here.
        """
        if self.closed:
            if discard is not None:
                discard()
            return fail(CancelledError("stream closed"))
        requests = inbound.divert()
        loop = self._loop

        def cancel(d: Deferred[Any]) -> None:
            try:
                loop.call_soon_threadsafe(handover.cancel)
            except RuntimeError:
                pass

        handover = _HandOver(run, requests, Deferred(cancel), discard)
        self._put_item(handover)
        return handover.done

    def abort(self, status: Status) -> None:
        """
        End the stream with C{status}, dropping nothing already queued.
        """
        if not self.closed:
            self._close(_Abort(status))

    def _close(self, item: object) -> None:
        self.closed = True
        self._put_item(item)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.errback(CancelledError("stream closed"))

    def _enqueue(self, message: Any) -> None:
        self._put += 1
        self._put_item(message)

    def _put_item(self, item: object) -> None:
        # Any thread. The item is queued before the flag is read, so a
        # wake-up already scheduled (flag set) will see it.
        self._queue.append(item)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                # The loop is closed: the process is going away.
                pass

    def _forget_waiter(self, d: Deferred[None]) -> None:
        if self._waiter is d:
            self._waiter = None

    def _drained(self) -> None:
        if self.pending() > self._low:
            return
        if self._paused and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    # -- gRPC loop side

    def _wake(self) -> None:
        self._wake_scheduled = False
        self._ready.set()

    async def drain(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """
        Write the queued messages to the client as it takes them, until the
        stream ends; in the gRPC loop.
        """
        queue = self._queue
        while True:
            while queue:
                item = queue.popleft()
                if item is _END:
                    return
                if isinstance(item, _Abort):
                    await context.abort(item.status.code, item.status.message)
                if isinstance(item, _HandOver):
                    await self._handed_over(item, context)
                    continue
                self._taken += 1
                if (self._waiter is not None or self._paused) and self.pending() <= self._low:
                    self._reactor.callFromThread(self._drained)
                await context.write(item)
            self._ready.clear()
            if not queue:
                await self._ready.wait()

    async def _handed_over(self, handover: _HandOver, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """
        Run a handed-over call's rest, and tell the reactor how it went;
        the reactor's end of the stream follows in the queue.
        """
        handover.requests.switch()
        outcome: Any = None
        handover.discard = None
        if handover.cancelled:
            outcome = Failure(CancelledError("call ended"))
        else:
            handover.task = asyncio.ensure_future(handover.run(context, handover.requests))
            try:
                outcome = await handover.task
            except asyncio.CancelledError:
                if not handover.cancelled:
                    # The handler itself is cancelled (client gone): let
                    # the reactor hear it as any other call's end.
                    self._reactor.callFromThread(_fire, handover.done, Failure(CancelledError("client went away")))
                    raise
                outcome = Failure(CancelledError("call ended"))
            except BaseException:
                outcome = Failure()
        self._reactor.callFromThread(_fire, handover.done, outcome)


def _fire(d: Deferred[Any], outcome: Any) -> None:
    if d.called:
        return
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


class Inbound:
    """
    The reactor's end of a request stream. The gRPC loop reads the client
    only while the engine has credit left, so a fast client cannot make the
    daemon buffer without bound.
    """

    def __init__(self, reactor: IReactorFromThreads, loop: asyncio.AbstractEventLoop, window: int = 8) -> None:
        self._reactor = reactor
        self._loop = loop
        self._window = window
        # Used in the loop only; the reactor gives credit back through it.
        self._credit = asyncio.Semaphore(window)
        self._buffer: deque[Any] = deque()
        self._waiter: Deferred[Any] | None = None
        self._ended = False
        self._error: Failure | None = None
        self._stopped = False
        # Set in the reactor by divert: where requests go from then on.
        self._diverted: LoopInbox | None = None
        # Set in the loop by LoopInbox.switch: the pump's requests go there.
        self._sink: LoopInbox | None = None

    # -- reactor side

    def receive(self) -> Deferred[Any]:
        """
        The next request message, or C{None} when the client has finished
        sending. Fails with CancelledError when the call is gone.
        """
        if self._waiter is not None:
            return fail(RuntimeError("receive() called again before the previous result"))
        if self._buffer:
            self._give_credit()
            return succeed(self._buffer.popleft())
        if self._error is not None:
            return fail(self._error)
        if self._ended:
            return succeed(None)
        waiter: Deferred[Any] = Deferred(lambda d: self._forget_waiter(d))
        self._waiter = waiter
        return waiter

    def _forget_waiter(self, d: Deferred[Any]) -> None:
        if self._waiter is d:
            self._waiter = None

    def divert(self) -> LoopInbox:
        """
        Send what the client sends from here on to a L{LoopInbox} (for
        L{Outbound.hand_over}), what is buffered first.
        """
        if self._waiter is not None or self._diverted is not None:
            raise RuntimeError("divert() while a receive() waits, or twice")
        inbox = self._diverted = LoopInbox(self)
        while self._buffer:
            inbox.forward(self._buffer.popleft())
        if self._ended:
            inbox.forward(_Ended(self._error))
        return inbox

    def _give_credit(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._credit.release)
        except RuntimeError:
            pass

    def _deliver(self, message: Any) -> None:
        if self._diverted is not None:
            self._diverted.forward(message)
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._give_credit()
            waiter.callback(message)
        else:
            self._buffer.append(message)

    def _end(self, error: Failure | None) -> None:
        if self._diverted is not None:
            self._diverted.forward(_Ended(error))
            return
        self._ended = True
        self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if error is not None:
                waiter.errback(error)
            else:
                waiter.callback(None)

    @property
    def buffered(self) -> int:
        """
        Messages read from the client that the engine has not received yet.
        """
        return len(self._buffer)

    # -- either side

    def release_all(self) -> None:
        """
        Stop reading the client for good (the call is over); any thread.
        """
        self._stopped = True
        try:
            self._loop.call_soon_threadsafe(self._unblock)
        except RuntimeError:
            pass

    # -- gRPC loop side

    def _unblock(self) -> None:
        for _ in range(self._window + 1):
            self._credit.release()

    async def pump(self, requests: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """
        Read C{requests} into the reactor, one message per credit, in the
        gRPC loop. The end of a cancelled call's requests is a
        cancellation, not EOF.
        """
        iterator = requests.__aiter__()
        try:
            while not self._stopped:
                await self._credit.acquire()
                if self._stopped:
                    break
                try:
                    message = await iterator.__anext__()
                except StopAsyncIteration:
                    if context.cancelled():
                        raise asyncio.CancelledError()
                    break
                self._pass(message)
        except (asyncio.CancelledError, grpc.RpcError):
            self._pass_end(Failure(CancelledError("client went away")))
            raise
        except Exception:
            self._pass_end(Failure())
            return
        self._pass_end(None)

    def _pass(self, message: Any) -> None:
        sink = self._sink
        if sink is not None:
            sink.take(message)
        else:
            self._reactor.callFromThread(self._deliver, message)

    def _pass_end(self, error: Failure | None) -> None:
        sink = self._sink
        if sink is not None:
            sink.take(_Ended(error))
        else:
            self._reactor.callFromThread(self._end, error)


class _Call:
    """
    One RPC in flight, shared by the gRPC loop that serves it and the
    reactor.
    """

    def __init__(self, bridge: Bridge, method: str, context: grpc.aio.ServicerContext[Any, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.bridge = bridge
        self.method = method
        self.context = context
        self.loop = loop
        self.info = CallInfo(method, context)
        self.deferred: Deferred[Any] | None = None
        self.outbound: Outbound | None = None
        self.inbound: Inbound | None = None
        # Awaited in the loop; set from the reactor, once (settled).
        self.result: asyncio.Future[Any] = loop.create_future()
        self.settled = False
        self.terminal: Status | None = None

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        """
        In the reactor: run the method and route its outcome.
        """
        if self.settled:
            return
        self.bridge._calls.add(self)
        d = as_deferred(fn, *args)
        self.deferred = d
        d.addCallbacks(self._succeeded, self._failed)

    def _settle(self, outcome: Any) -> None:
        if self.settled:
            return
        self.settled = True
        self.bridge._calls.discard(self)
        try:
            self.loop.call_soon_threadsafe(_set_result, self.result, outcome)
        except RuntimeError:
            pass

    def _succeeded(self, value: Any) -> None:
        self._stop_reading()
        if self.outbound is not None:
            self.outbound.finish()
        self._settle(value)

    def _failed(self, failure: Failure) -> None:
        if self.terminal is not None and failure.check(CancelledError):
            status = self.terminal
        else:
            status = status_of(failure, self.method)
        self._stop_reading()
        if self.outbound is not None:
            self.outbound.abort(status)
        self._settle(status)

    def _stop_reading(self) -> None:
        # The method answered while the client may still be sending (an
        # import refused after its first MiB): stop reading it, so the
        # answer goes out now.
        if self.inbound is not None:
            self.inbound.release_all()

    def terminate(self, status: Status) -> None:
        """
        In the reactor: end the call now with C{status} (client gone,
        timeout, daemon stopping).
        """
        if self.terminal is None:
            self.terminal = status
        if self.deferred is not None and not self.deferred.called:
            self.deferred.cancel()
        if self.outbound is not None:
            self.outbound.abort(self.terminal)
        self._settle(self.terminal)

    def ended_here(self) -> None:
        """
        In the loop: the RPC is over. A call the reactor has not answered
        yet (the client went away, or its deadline passed) is cancelled
        there.
        """
        if self.inbound is not None:
            self.inbound.release_all()
        if not self.settled:
            self.bridge._reactor.callFromThread(self.terminate, Status(grpc.StatusCode.CANCELLED, "client went away"))


def _set_result(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


class Bridge:
    """
    Adapts reactor-side service objects to grpcio's asyncio handlers.

    @param unary_timeout: longest a unary call may take.
    @param max_streams: streaming calls allowed at once.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        unary_timeout: float = 300.0,
        max_streams: int = 512,
    ) -> None:
        self._reactor = reactor
        self.unary_timeout = unary_timeout
        self.max_streams = max_streams
        self._calls: set[_Call] = set()
        # Counted in the gRPC loop only.
        self._streams = 0
        self._closing = False

    # -- building handlers

    def service(self, descriptor: ServiceDescriptor, impl: object) -> grpc.GenericRpcHandler:
        """
        A generic handler serving every method of C{descriptor} with the
        same-named method of C{impl}, or UNIMPLEMENTED.
        """
        handlers = {m.name: self._handler(descriptor, m, impl) for m in descriptor.methods}
        return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)

    def _handler(
        self, service: ServiceDescriptor, method: MethodDescriptor, impl: object
    ) -> grpc.RpcMethodHandler[Any, Any]:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        name = f"{service.name}.{method.name}"
        fn = getattr(impl, method.name, None)
        if fn is None:
            fn = _unimplemented(name)
        decode = request_class.FromString
        encode = _encoder(response_class)
        cs, ss = method.client_streaming, method.server_streaming
        if not cs and not ss:
            return grpc.unary_unary_rpc_method_handler(self._unary(name, fn), decode, encode)
        if not cs and ss:
            return grpc.unary_stream_rpc_method_handler(self._server_stream(name, fn), decode, encode)
        if cs and not ss:
            return grpc.stream_unary_rpc_method_handler(self._client_stream(name, fn), decode, encode)
        return grpc.stream_stream_rpc_method_handler(self._bidi(name, fn), decode, encode)

    # -- the four shapes (all run in the gRPC loop)

    async def _begin(self, name: str, context: grpc.aio.ServicerContext[Any, Any], streaming: bool) -> _Call:
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "Ross daemon is shutting down")
        if streaming:
            if self._streams >= self.max_streams:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many open streams ({self.max_streams}); try again later",
                )
            self._streams += 1
        return _Call(self, name, context, asyncio.get_running_loop())

    async def _served(self, call: _Call, streaming: bool, serve: Awaitable[Any]) -> Any:
        """
        Serve C{call} with C{serve}; whatever way the RPC ends, the reactor
        side hears of it.
        """
        try:
            return await serve
        finally:
            if streaming:
                self._streams -= 1
            call.ended_here()

    async def _answer(self, call: _Call, timeout: float | None) -> Any:
        try:
            outcome = await asyncio.wait_for(asyncio.shield(call.result), timeout)
        except asyncio.TimeoutError:
            outcome = Status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{call.method} did not finish within {timeout:.0f}s",
            )
            self._reactor.callFromThread(call.terminate, outcome)
        if isinstance(outcome, Status):
            await call.context.abort(outcome.code, outcome.message)
        return outcome

    def _unary(self, name: str, fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = await self._begin(name, context, streaming=False)
            self._reactor.callFromThread(call.start, fn, request, call.info)
            remaining = context.time_remaining()
            timeout = self.unary_timeout if remaining is None else min(self.unary_timeout, remaining)
            return await self._served(call, False, self._answer(call, timeout))

        return handle

    def _server_stream(self, name: str, fn: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            call = await self._begin(name, context, streaming=True)
            call.outbound = Outbound(self._reactor, call.loop)
            self._reactor.callFromThread(call.start, fn, request, call.outbound, call.info)
            await self._served(call, True, call.outbound.drain(context))

        return handle

    def _client_stream(self, name: str, fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def handle(requests: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = await self._begin(name, context, streaming=True)
            inbound = call.inbound = Inbound(self._reactor, call.loop)
            self._reactor.callFromThread(call.start, fn, inbound, call.info)

            async def serve() -> Any:
                # An answer that comes while the client still sends (an
                # import refused after its first MiB) goes out at once.
                pump = asyncio.ensure_future(inbound.pump(requests, context))
                try:
                    await asyncio.wait([pump, call.result], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not pump.done():
                        pump.cancel()
                return await self._answer(call, None)

            return await self._served(call, True, serve())

        return handle

    def _bidi(self, name: str, fn: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        async def handle(requests: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
            call = await self._begin(name, context, streaming=True)
            inbound = call.inbound = Inbound(self._reactor, call.loop)
            outbound = call.outbound = Outbound(self._reactor, call.loop)
            self._reactor.callFromThread(call.start, fn, inbound, outbound, call.info)

            async def serve() -> None:
                pump = asyncio.ensure_future(inbound.pump(requests, context))
                try:
                    await outbound.drain(context)
                finally:
                    if not pump.done():
                        pump.cancel()

            await self._served(call, True, serve())

        return handle

    # -- shutdown

    def shutdown(self) -> None:
        """
        In the reactor: refuse new calls and end every open one with
        UNAVAILABLE.
        """
        self._closing = True
        status = Status(grpc.StatusCode.UNAVAILABLE, "Ross daemon is shutting down")
        for call in list(self._calls):
            call.terminate(status)

    @property
    def open_calls(self) -> int:
        return len(self._calls)


def _encoder(response_class: Any) -> Callable[[Any], bytes]:
    """
    The serializer of a method's answers: a message is serialized, and an
    answer the method serialized itself (bytes) goes as it is.
    """
    serialize = response_class.SerializeToString

    def encode(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return encode


def _unimplemented(name: str) -> Callable[..., Any]:
    def method(*args: Any) -> None:
        raise errors.Unimplemented(f"{name} is not implemented yet")

    return method
