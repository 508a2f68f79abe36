# -*- test-case-name: ross.test.test_bridge -*-
"""
The bridge between grpcio's thread pool and the Twisted reactor.

grpcio calls handlers in its own threads; the engine lives in the reactor
thread and answers with Deferreds or coroutines. L{Bridge.service} turns an
object of reactor-side methods into a grpc generic handler for one service
of the API, choosing the handler shape from the service descriptor:

    - unary:          C{method(request, call)} -> response
    - server stream:  C{method(request, out, call)} -> None when done
    - client stream:  C{method(inbound, call)} -> response
    - bidirectional:  C{method(inbound, out, call)} -> None when done

Each may return a value, a Deferred or a coroutine. C{out} is an
L{Outbound}: C{await out.send(msg)} waits while the client is slow (the
buffer between the reactor and the gRPC thread stays bounded), or register a
push producer. C{inbound} is an L{Inbound}: C{await inbound.receive()} gives
the next request or C{None} at the end; the client is read only as fast as
the engine receives.

A client that cancels or disconnects cancels the method's Deferred in the
reactor. Errors become status codes in L{status_of}, nowhere else. A method
the object lacks answers UNIMPLEMENTED with its name.
"""

from __future__ import annotations

import errno
import concurrent.futures
import inspect
import threading
from collections import deque
from queue import SimpleQueue
from typing import Any, Callable, Iterable, Iterator

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
    A final gRPC status, handed from the reactor to a gRPC thread.
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

    def __init__(self, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.peer = context.peer()
        self.metadata = dict(context.invocation_metadata() or ())


class _Abort:
    __slots__ = ("status",)

    def __init__(self, status: Status) -> None:
        self.status = status


_END = object()


class Outbound:
    """
    The reactor's end of a response stream: messages go into a queue that a
    gRPC thread drains into the connection.

    The queue is bounded: L{send} returns a Deferred that waits while more
    than C{high_water} messages are queued, a registered streaming producer
    is paused at C{high_water} and resumed at C{low_water}, and L{write}
    (for sources that cannot wait, like pull progress) ends the stream with
    RESOURCE_EXHAUSTED once C{hard_limit} messages are waiting.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        high_water: int = 32,
        low_water: int = 8,
        # Far above what a progress report queues between two reads.
        hard_limit: int = 4096,
    ) -> None:
        self._reactor = reactor
        self._queue: SimpleQueue[Any] = SimpleQueue()
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
        Messages queued and not yet taken by the gRPC thread.
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

    def abort(self, status: Status) -> None:
        """
        End the stream with C{status}, dropping nothing already queued.
        """
        if not self.closed:
            self._close(_Abort(status))

    def _close(self, item: object) -> None:
        self.closed = True
        self._queue.put(item)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.errback(CancelledError("stream closed"))

    def _enqueue(self, message: Any) -> None:
        self._put += 1
        self._queue.put(message)

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

    # -- gRPC thread side

    def terminate_from_thread(self, status: Status) -> None:
        """
        End the stream from any thread (shutdown, client gone): wakes the
        gRPC thread at once.
        """
        self._queue.put(_Abort(status))

    def messages(self, context: grpc.ServicerContext) -> Iterator[Any]:
        """
        The response iterator grpc drains, in a gRPC thread.
        """
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Abort):
                context.abort(item.status.code, item.status.message)
                return
            self._taken += 1
            if (self._waiter is not None or self._paused) and self.pending() <= self._low:
                self._reactor.callFromThread(self._drained)
            yield item


class Inbound:
    """
    The reactor's end of a request stream. A pump thread reads the client
    only while the engine has credit left, so a fast client cannot make the
    daemon buffer without bound.
    """

    def __init__(self, reactor: IReactorFromThreads, window: int = 8) -> None:
        self._reactor = reactor
        self._window = window
        self._credit = threading.Semaphore(window)
        self._buffer: deque[Any] = deque()
        self._waiter: Deferred[Any] | None = None
        self._ended = False
        self._error: Failure | None = None
        self._stopped = False

    # -- reactor side

    def receive(self) -> Deferred[Any]:
        """
        The next request message, or C{None} when the client has finished
        sending. Fails with CancelledError when the call is gone.
        """
        if self._waiter is not None:
            return fail(RuntimeError("receive() called again before the previous result"))
        if self._buffer:
            self._credit.release()
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

    def _deliver(self, message: Any) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._credit.release()
            waiter.callback(message)
        else:
            self._buffer.append(message)

    def _end(self, error: Failure | None) -> None:
        self._ended = True
        self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if error is not None:
                waiter.errback(error)
            else:
                waiter.callback(None)

    # -- thread side

    def release_all(self) -> None:
        """
        Unblock the pump for good (the call is over); any thread.
        """
        self._stopped = True
        for _ in range(self._window + 1):
            self._credit.release()

    @property
    def buffered(self) -> int:
        """
        Messages read from the client that the engine has not received yet.
        """
        return len(self._buffer)

    def pump(self, requests: Iterable[Any], context: grpc.ServicerContext, done: threading.Event) -> None:
        """
        Read C{requests} (blocking, in a gRPC-side thread) into the reactor.
        The end of a cancelled call's requests is a cancellation, not EOF.
        """
        iterator = iter(requests)
        try:
            while not done.is_set():
                self._credit.acquire()
                if done.is_set() or self._stopped:
                    break
                try:
                    message = next(iterator)
                except StopIteration:
                    if not context.is_active():
                        raise grpc.RpcError()
                    break
                self._reactor.callFromThread(self._deliver, message)
        except grpc.RpcError:
            self._reactor.callFromThread(self._end, Failure(CancelledError("client went away")))
            return
        except Exception:
            self._reactor.callFromThread(self._end, Failure())
            return
        self._reactor.callFromThread(self._end, None)


class _Call:
    """
    One RPC in flight, shared by the gRPC thread that serves it and the
    reactor.
    """

    def __init__(self, bridge: Bridge, method: str, context: grpc.ServicerContext) -> None:
        self.bridge = bridge
        self.method = method
        self.context = context
        self.info = CallInfo(method, context)
        self.deferred: Deferred[Any] | None = None
        self.outbound: Outbound | None = None
        self.inbound: Inbound | None = None
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.done = threading.Event()
        self.terminal: Status | None = None

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        """
        In the reactor: run the method and route its outcome.
        """
        if self.done.is_set():
            return
        self.bridge._calls.add(self)
        d = as_deferred(fn, *args)
        self.deferred = d
        d.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, value: Any) -> None:
        self._stop_reading()
        if self.outbound is not None:
            self.outbound.finish()
        if not self.result.done():
            self.result.set_result(value)

    def _failed(self, failure: Failure) -> None:
        if self.terminal is not None and failure.check(CancelledError):
            status = self.terminal
        else:
            status = status_of(failure, self.method)
        self._stop_reading()
        if self.outbound is not None:
            self.outbound.abort(status)
        if not self.result.done():
            self.result.set_result(status)

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
        if not self.result.done():
            self.result.set_result(self.terminal)

    def finished_from_thread(self) -> None:
        """
        grpc says the RPC is over (any thread): release whoever waits.
        """
        if self.done.is_set():
            return
        self.done.set()
        gone = Status(grpc.StatusCode.CANCELLED, "client went away")
        if self.outbound is not None:
            self.outbound.terminate_from_thread(gone)
        if self.inbound is not None:
            self.inbound.release_all()
        self.bridge._reactor.callFromThread(self._finished, gone)

    def _finished(self, gone: Status) -> None:
        self.bridge._calls.discard(self)
        self.terminate(gone)


class Bridge:
    """
    Adapts reactor-side service objects to grpcio handlers.

    @param unary_timeout: longest a unary call may pin a gRPC thread.
    @param max_streams: streaming calls allowed at once; keep it below the
        server's thread count so unary calls always find a thread.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        unary_timeout: float = 300.0,
        max_streams: int = 96,
    ) -> None:
        self._reactor = reactor
        self.unary_timeout = unary_timeout
        self.max_streams = max_streams
        self._calls: set[_Call] = set()
        self._streams = 0
        self._streams_lock = threading.Lock()
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
        encode = response_class.SerializeToString
        cs, ss = method.client_streaming, method.server_streaming
        if not cs and not ss:
            return grpc.unary_unary_rpc_method_handler(self._unary(name, fn), decode, encode)
        if not cs and ss:
            return grpc.unary_stream_rpc_method_handler(self._server_stream(name, fn), decode, encode)
        if cs and not ss:
            return grpc.stream_unary_rpc_method_handler(self._client_stream(name, fn), decode, encode)
        return grpc.stream_stream_rpc_method_handler(self._bidi(name, fn), decode, encode)

    # -- the four shapes (all run in gRPC threads)

    def _begin(self, name: str, context: grpc.ServicerContext, streaming: bool) -> _Call:
        if self._closing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Ross daemon is shutting down")
        if streaming:
            with self._streams_lock:
                if self._streams >= self.max_streams:
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many open streams ({self.max_streams}); try again later",
                    )
                self._streams += 1
        call = _Call(self, name, context)
        # add_callback refuses once the RPC is over; then run it ourselves.
        if streaming and not context.add_callback(self._stream_ended):
            self._stream_ended()
        if not context.add_callback(call.finished_from_thread):
            call.finished_from_thread()
        return call

    def _stream_ended(self) -> None:
        with self._streams_lock:
            self._streams -= 1

    def _wait(self, call: _Call, timeout: float | None) -> Any:
        try:
            return call.result.result(timeout)
        except concurrent.futures.TimeoutError:
            status = Status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{call.method} did not finish within {timeout:.0f}s",
            )
            self._reactor.callFromThread(call.terminate, status)
            return status

    def _respond(self, call: _Call, outcome: Any) -> Any:
        if isinstance(outcome, Status):
            call.context.abort(outcome.code, outcome.message)
        return outcome

    def _unary(self, name: str, fn: Callable[..., Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._begin(name, context, streaming=False)
            self._reactor.callFromThread(call.start, fn, request, call.info)
            remaining = context.time_remaining()
            timeout = self.unary_timeout if remaining is None else min(self.unary_timeout, remaining)
            return self._respond(call, self._wait(call, timeout))

        return handle

    def _server_stream(self, name: str, fn: Callable[..., Any]) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._begin(name, context, streaming=True)
            call.outbound = Outbound(self._reactor)
            self._reactor.callFromThread(call.start, fn, request, call.outbound, call.info)
            return call.outbound.messages(context)

        return handle

    def _client_stream(self, name: str, fn: Callable[..., Any]) -> Callable[[Iterable[Any], grpc.ServicerContext], Any]:
        def handle(requests: Iterable[Any], context: grpc.ServicerContext) -> Any:
            call = self._begin(name, context, streaming=True)
            call.inbound = Inbound(self._reactor)
            self._reactor.callFromThread(call.start, fn, call.inbound, call.info)
            call.inbound.pump(requests, context, call.done)
            return self._respond(call, self._wait(call, None))

        return handle

    def _bidi(self, name: str, fn: Callable[..., Any]) -> Callable[[Iterable[Any], grpc.ServicerContext], Iterator[Any]]:
        def handle(requests: Iterable[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._begin(name, context, streaming=True)
            call.inbound = Inbound(self._reactor)
            call.outbound = Outbound(self._reactor)
            pump = threading.Thread(
                target=call.inbound.pump,
                args=(requests, context, call.done),
                name=f"ross-pump-{name}",
                daemon=True,
            )
            self._reactor.callFromThread(call.start, fn, call.inbound, call.outbound, call.info)
            pump.start()
            return call.outbound.messages(context)

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


def _unimplemented(name: str) -> Callable[..., Any]:
    def method(*args: Any) -> None:
        raise errors.Unimplemented(f"{name} is not implemented yet")

    return method
