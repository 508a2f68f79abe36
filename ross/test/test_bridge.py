"""
Tests for L{ross.protocols.bridge}: every handler shape over a real gRPC
channel on a unix socket, cancellation both ways, backpressure, timeouts,
error mapping, concurrency and shutdown.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross import errors
from ross.address import parse_listen
from ross.protocols.bridge import Bridge
from ross.services.grpc_server import GrpcServerService
from ross.testing.daemon import Clients, short_tempdir
from ross.v1 import (
    common_pb2,
    container_pb2,
    image_pb2,
    system_pb2,
)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class FakeSystem:
    """
    Unary methods with every kind of outcome.
    """

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.threads: list[str] = []

    def Ping(self, request: Any, call: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return system_pb2.PingResponse(api_version="v1")

    def Version(self, request: Any, call: Any) -> Deferred[Any]:
        return deferLater(reactor, 0.01, lambda: system_pb2.VersionResponse(version="deferred"))

    async def Info(self, request: Any, call: Any) -> Any:
        await sleep(0.01)
        return system_pb2.InfoResponse(root="coroutine")

    def DiskUsage(self, request: Any, call: Any) -> Any:
        raise errors.NotFound("No such thing: x")

    def Prune(self, request: Any, call: Any) -> Any:
        raise ValueError("a bug")


class Never:
    """
    Methods that never answer, recording their cancellation.
    """

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    def _never(self, name: str) -> Deferred[Any]:
        return Deferred(lambda d: self.cancelled.append(name))

    def InspectContainer(self, request: Any, call: Any) -> Deferred[Any]:
        return self._never("InspectContainer")

    def GetLogs(self, request: Any, out: Any, call: Any) -> Deferred[Any]:
        out.write(container_pb2.GetLogsResponse())
        return self._never("GetLogs")

    def Exec(self, inbound: Any, out: Any, call: Any) -> Deferred[Any]:
        return self._never("Exec")


class Streams:
    """
    Server, client and bidirectional streams for ContainerService.
    """

    def __init__(self) -> None:
        self.produced = 0
        self.max_pending = 0
        self.received: list[bytes] = []
        self.max_buffered = 0
        self.cancelled: list[str] = []
        self.outbound: Any = None

    async def GetLogs(self, request: Any, out: Any, call: Any) -> None:
        """
        C{tail} messages, or endless when tail is -1, each carrying 16 KiB.
        """
        self.outbound = out
        line = b"x" * 16384
        count = request.tail
        try:
            while count < 0 or self.produced < count:
                entry = container_pb2.LogEntry(line=line + str(self.produced).encode())
                self.produced += 1
                await out.send(container_pb2.GetLogsResponse(entries=[entry]))
                self.max_pending = max(self.max_pending, out.pending())
        except CancelledError:
            self.cancelled.append("GetLogs")
            raise

    async def CopyTo(self, inbound: Any, call: Any) -> Any:
        options = await inbound.receive()
        assert options.WhichOneof("request") == "options"
        if options.options.path == "/refused":
            # Refused once the bridge waits for the client's next message.
            await sleep(0.3)
            raise errors.PermissionDenied("refused at the first message")
        while True:
            message = await inbound.receive()
            if message is None:
                break
            self.received.append(message.data)
            self.max_buffered = max(self.max_buffered, inbound.buffered)
            if options.options.path == "/slow":
                await sleep(0.02)
        return container_pb2.CopyToResponse()

    async def Exec(self, inbound: Any, out: Any, call: Any) -> None:
        """
        Echo stdin back as output data; exit 0 on close_stdin.
        """
        first = await inbound.receive()
        await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started(exec_id=first.start.container_id)))
        try:
            while True:
                message = await inbound.receive()
                if message is None:
                    # Like a real session: the end of input does not end the
                    # process; only the client leaving does.
                    await Deferred()
                if message.WhichOneof("input") == "close_stdin":
                    break
                if message.WhichOneof("input") == "stdin":
                    await out.send(container_pb2.InteractiveOutput(
                        data=container_pb2.OutputData(stream=common_pb2.STD_STREAM_STDOUT, data=message.stdin)))
        except CancelledError:
            self.cancelled.append("Exec")
            raise
        await out.send(container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(status_code=0)))

    def StopContainer(self, request: Any, call: Any) -> Any:
        raise errors.FailedPrecondition(f"Container {request.container_id} is not running")

    async def Attach(self, inbound: Any, out: Any, call: Any) -> None:
        await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started()))
        raise errors.FailedPrecondition("container is paused")


class BridgeTestCase(TestCase):
    """
    A gRPC server whose services are test doubles, served through the bridge.
    """

    timeout = 60

    def serve(self, impls: dict[str, object], **bridge_options: Any) -> Clients:
        self.base = short_tempdir()
        self.addCleanup(shutil.rmtree, self.base, True)
        listener = parse_listen(f"unix://{self.base}/api.sock")
        # twisted.internet.reactor is typed with the common interfaces only; adapting returns it unchanged.
        self.bridge = Bridge(IReactorFromThreads(reactor), **bridge_options)
        handlers = []
        for descriptor_of, impl in impls.items():
            module = {"SystemService": system_pb2, "ContainerService": container_pb2, "ImageService": image_pb2}[descriptor_of]
            handlers.append(self.bridge.service(module.DESCRIPTOR.services_by_name[descriptor_of], impl))
        self.server = GrpcServerService(reactor, self.bridge, handlers, [listener])
        self.server.startService()
        self.addCleanup(self.server.stopService)
        channel = grpc.insecure_channel(listener.grpc_address)
        self.addCleanup(channel.close)
        return Clients(channel)


class UnaryTests(BridgeTestCase):
    @inlineCallbacks
    def test_value_deferred_and_coroutine(self) -> Any:
        """
        A reactor method may return a value, a Deferred or a coroutine; it
        runs in the reactor thread.
        """
        fake = FakeSystem()
        c = self.serve({"SystemService": fake})
        ping = yield deferToThread(c.system.Ping, system_pb2.PingRequest())
        version = yield deferToThread(c.system.Version, system_pb2.VersionRequest())
        info = yield deferToThread(c.system.Info, system_pb2.InfoRequest())
        self.assertEqual((ping.api_version, version.version, info.root), ("v1", "deferred", "coroutine"))
        self.assertEqual(fake.threads, [threading.main_thread().name])

    @inlineCallbacks
    def test_domain_error_maps_to_status(self) -> Any:
        """
        Domain errors become their status code with the message intact.
        """
        c = self.serve({"SystemService": FakeSystem(), "ContainerService": Streams()})
        e = yield self.assertFailure(deferToThread(c.system.DiskUsage, system_pb2.DiskUsageRequest()), grpc.RpcError)
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.NOT_FOUND, "No such thing: x"))
        e = yield self.assertFailure(
            deferToThread(c.containers.StopContainer, container_pb2.StopContainerRequest(container_id="web")),
            grpc.RpcError)
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.FAILED_PRECONDITION, "Container web is not running"))

    @inlineCallbacks
    def test_unexpected_error_is_internal_and_logged(self) -> Any:
        """
        A bug becomes INTERNAL and its traceback is logged.
        """
        c = self.serve({"SystemService": FakeSystem()})
        e = yield self.assertFailure(deferToThread(c.system.Prune, system_pb2.SystemPruneRequest()), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.INTERNAL)
        self.assertIn("SystemService.Prune", e.details())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @inlineCallbacks
    def test_unimplemented_names_the_method(self) -> Any:
        """
        A method the object lacks answers UNIMPLEMENTED with its name, for
        every shape.
        """
        c = self.serve({"SystemService": FakeSystem(), "ImageService": object()})
        e = yield self.assertFailure(deferToThread(c.images.ListImages, image_pb2.ListImagesRequest()), grpc.RpcError)
        self.assertEqual((e.code(), e.details()),
                         (grpc.StatusCode.UNIMPLEMENTED, "ImageService.ListImages is not implemented yet"))
        e = yield self.assertFailure(
            deferToThread(lambda: list(c.images.SaveImages(image_pb2.SaveImagesRequest()))), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)

    @inlineCallbacks
    def test_timeout_frees_the_thread_and_cancels(self) -> Any:
        """
        A reactor call that never answers ends with DEADLINE_EXCEEDED after
        the bridge's timeout, and its Deferred is cancelled.
        """
        never = Never()
        c = self.serve({"ContainerService": never}, unary_timeout=0.3)
        e = yield self.assertFailure(
            deferToThread(c.containers.InspectContainer, container_pb2.InspectContainerRequest()), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        yield sleep(0.05)
        self.assertEqual(never.cancelled, ["InspectContainer"])

    @inlineCallbacks
    def test_client_deadline_cancels(self) -> Any:
        """
        A client deadline shorter than the bridge's timeout wins, and the
        reactor-side Deferred is cancelled.
        """
        never = Never()
        c = self.serve({"ContainerService": never})
        e = yield self.assertFailure(
            deferToThread(c.containers.InspectContainer, container_pb2.InspectContainerRequest(), timeout=0.3),
            grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        for _ in range(50):
            if never.cancelled:
                break
            yield sleep(0.02)
        self.assertEqual(never.cancelled, ["InspectContainer"])

    @inlineCallbacks
    def test_many_concurrent_clients(self) -> Any:
        """
        64 clients on their own channels, each making 20 calls at once, all
        answered.
        """
        fake = FakeSystem()
        c = self.serve({"SystemService": fake})
        target = c.channel

        def client(_: int) -> int:
            channel = grpc.insecure_channel(f"unix:{self.base}/api.sock")
            try:
                from ross.v1 import system_pb2_grpc

                stub = system_pb2_grpc.SystemServiceStub(channel)
                return sum(stub.Ping(system_pb2.PingRequest()).api_version == "v1" for _ in range(20))
            finally:
                channel.close()

        def run_all() -> list[int]:
            with ThreadPoolExecutor(64) as pool:
                return list(pool.map(client, range(64)))

        self.assertTrue(target)
        results = yield deferToThread(run_all)
        self.assertEqual(results, [20] * 64)
        self.assertEqual(self.bridge.open_calls, 0)


class ServerStreamTests(BridgeTestCase):
    @inlineCallbacks
    def test_messages_in_order(self) -> Any:
        """
        Every message sent arrives, in order, and the stream ends OK.
        """
        c = self.serve({"ContainerService": Streams()})
        responses = yield deferToThread(lambda: list(c.containers.GetLogs(container_pb2.GetLogsRequest(tail=200))))
        self.assertEqual([r.entries[0].line[16384:] for r in responses], [str(i).encode() for i in range(200)])

    @inlineCallbacks
    def test_slow_reader_bounded_buffer(self) -> Any:
        """
        An endless producer facing a slow reader is held back: the bridge's
        queue never exceeds its high-water mark and the producer stays within
        a constant of what the client consumed.
        """
        streams = Streams()
        c = self.serve({"ContainerService": streams})
        call = c.containers.GetLogs(container_pb2.GetLogsRequest(tail=-1))

        def read_slowly() -> list[int]:
            gaps = []
            for i, _ in enumerate(call):
                time.sleep(0.002)
                gaps.append(streams.produced - (i + 1))
                if i == 300:
                    break
            call.cancel()
            return gaps

        gaps = yield deferToThread(read_slowly)
        self.assertLessEqual(streams.max_pending, 32)
        # What grpc itself holds is bounded by HTTP/2 flow control.
        self.assertLess(max(gaps), 32 + 600)
        for _ in range(100):
            if streams.cancelled:
                break
            yield sleep(0.02)
        self.assertEqual(streams.cancelled, ["GetLogs"])

    @inlineCallbacks
    def test_client_cancel_cancels_reactor_side(self) -> Any:
        """
        A client that cancels a stream cancels the method's Deferred.
        """
        never = Never()
        c = self.serve({"ContainerService": never})
        call = c.containers.GetLogs(container_pb2.GetLogsRequest())
        first = yield deferToThread(next, call)
        self.assertIsInstance(first, container_pb2.GetLogsResponse)
        call.cancel()
        for _ in range(100):
            if never.cancelled:
                break
            yield sleep(0.02)
        self.assertEqual(never.cancelled, ["GetLogs"])
        self.assertEqual(self.bridge.open_calls, 0)

    @inlineCallbacks
    def test_stream_cap_keeps_unary_alive(self) -> Any:
        """
        Streams beyond max_streams are refused with RESOURCE_EXHAUSTED while
        unary calls still get served.
        """
        never = Never()
        c = self.serve({"ContainerService": never, "SystemService": FakeSystem()}, max_streams=2)
        calls = [c.containers.GetLogs(container_pb2.GetLogsRequest()) for _ in range(2)]
        for call in calls:
            yield deferToThread(next, call)
        e = yield self.assertFailure(
            deferToThread(lambda: list(c.containers.GetLogs(container_pb2.GetLogsRequest()))), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        ping = yield deferToThread(c.system.Ping, system_pb2.PingRequest())
        self.assertEqual(ping.api_version, "v1")
        for call in calls:
            call.cancel()

    @inlineCallbacks
    def test_shutdown_ends_streams_unavailable(self) -> Any:
        """
        Stopping the server ends open streams with UNAVAILABLE and refuses
        new calls.
        """
        never = Never()
        c = self.serve({"ContainerService": never})
        call = c.containers.GetLogs(container_pb2.GetLogsRequest())
        yield deferToThread(next, call)
        rest = deferToThread(lambda: list(call))
        yield self.server.stopService()
        e = yield self.assertFailure(rest, grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(never.cancelled, ["GetLogs"])


class ClientStreamTests(BridgeTestCase):
    @inlineCallbacks
    def test_all_messages_received(self) -> Any:
        """
        Every message the client streams reaches the reactor, in order.
        """
        streams = Streams()
        c = self.serve({"ContainerService": streams})
        chunks = [bytes([i]) * 1000 for i in range(100)]

        def requests() -> Any:
            yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(path="/"))
            for chunk in chunks:
                yield container_pb2.CopyToRequest(data=chunk)

        yield deferToThread(c.containers.CopyTo, requests())
        self.assertEqual(streams.received, chunks)

    @inlineCallbacks
    def test_fast_client_is_read_only_as_fast_as_consumed(self) -> Any:
        """
        The pump reads the client only while the engine has credit: what the
        daemon holds for a slow consumer stays within the window (the rest
        waits in HTTP/2 flow control).
        """
        streams = Streams()
        c = self.serve({"ContainerService": streams})

        def requests() -> Any:
            yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(path="/slow"))
            for i in range(60):
                yield container_pb2.CopyToRequest(data=b"%d" % i)

        yield deferToThread(c.containers.CopyTo, requests())
        self.assertEqual(len(streams.received), 60)
        self.assertGreater(streams.max_buffered, 0)
        self.assertLessEqual(streams.max_buffered, 8)


    @inlineCallbacks
    def test_early_answer_while_client_sends(self) -> Any:
        """
        A method that answers before the client has finished sending (a
        refusal after the first message) is answered at once, while the
        client still holds its stream open.
        """
        streams = Streams()
        c = self.serve({"ContainerService": streams})
        release = threading.Event()

        def requests() -> Any:
            yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(path="/refused"))
            # The client holds the stream open (bounded: released at the end).
            release.wait(30)

        started = time.monotonic()
        try:
            e = yield self.assertFailure(deferToThread(c.containers.CopyTo, requests(), timeout=20), grpc.RpcError)
        finally:
            release.set()
        self.assertEqual(e.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertLess(time.monotonic() - started, 10)


class BidiTests(BridgeTestCase):
    @inlineCallbacks
    def test_echo_then_exit_last(self) -> Any:
        """
        Input frames reach the reactor and output flows back; the exit frame
        comes last.
        """
        c = self.serve({"ContainerService": Streams()})

        def requests() -> Any:
            yield container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="abc"))
            for i in range(10):
                yield container_pb2.ExecInput(stdin=b"line %d\n" % i)
            yield container_pb2.ExecInput(close_stdin=True)

        outputs = yield deferToThread(lambda: list(c.containers.Exec(requests())))
        kinds = [o.WhichOneof("output") for o in outputs]
        self.assertEqual(kinds, ["started"] + ["data"] * 10 + ["exit"])
        self.assertEqual(b"".join(o.data.data for o in outputs[1:-1]), b"".join(b"line %d\n" % i for i in range(10)))

    @inlineCallbacks
    def test_client_disconnect_cancels(self) -> Any:
        """
        A client that goes away mid-session cancels the reactor side.
        """
        streams = Streams()
        c = self.serve({"ContainerService": streams})
        gate = threading.Event()

        def requests() -> Any:
            yield container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="abc"))
            gate.wait(10)

        call = c.containers.Exec(requests())
        first = yield deferToThread(next, call)
        self.assertEqual(first.started.exec_id, "abc")
        call.cancel()
        gate.set()
        for _ in range(100):
            if streams.cancelled:
                break
            yield sleep(0.02)
        self.assertEqual(streams.cancelled, ["Exec"])

    @inlineCallbacks
    def test_server_error_mid_stream(self) -> Any:
        """
        An error raised after some output reaches the client as its status,
        after the output sent before it.
        """
        c = self.serve({"ContainerService": Streams()})
        call = c.containers.Attach(iter([container_pb2.AttachInput(start=container_pb2.AttachStart())]))
        first = yield deferToThread(next, call)
        self.assertEqual(first.WhichOneof("output"), "started")
        e = yield self.assertFailure(deferToThread(next, call), grpc.RpcError)
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.FAILED_PRECONDITION, "container is paused"))


class Relayed:
    """
    Exec, served partly in the reactor and then handed to the gRPC loop:
    the reactor echoes the first C{int(start.container_id)} stdin frames
    ("r:"), the loop the rest ("l:") until close_stdin; C{start.user}
    "big" sends 8 MiB first, "fail" makes the loop fail.
    """

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.events: list[str] = []
        self.outcome: Deferred[Any] = Deferred()

    async def Exec(self, inbound: Any, out: Any, call: Any) -> None:
        first = await inbound.receive()
        start = first.start
        for _ in range(int(start.container_id or 0)):
            message = await inbound.receive()
            await out.send(_output(b"r:" + message.stdin))
        if start.user == "big":
            out.write(_output(b"x" * (8 << 20)))
        await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started()))

        async def run(context: Any, requests: Any) -> None:
            self.threads.append(threading.current_thread().name)
            self.events.append("run")
            try:
                while True:
                    message = await requests.receive()
                    if message is None or message.WhichOneof("input") == "close_stdin":
                        break
                    if start.user == "fail":
                        raise errors.InvalidArgument("bad frame")
                    await context.write(_output(b"l:" + message.stdin))
                await context.write(container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(status_code=3)))
            except asyncio.CancelledError:
                self.events.append("cancelled")
                raise

        def discard() -> None:
            self.threads.append(threading.current_thread().name)
            self.events.append("discarded")

        try:
            await out.hand_over(run, inbound, discard)
        except BaseException as e:
            self.outcome.callback(type(e).__name__)
            raise
        self.outcome.callback("done")


def _output(data: bytes) -> Any:
    return container_pb2.InteractiveOutput(data=container_pb2.OutputData(stream=common_pb2.STD_STREAM_STDOUT,
                                                                          data=data))


class HandOverTests(BridgeTestCase):
    """
    L{Outbound.hand_over}: the rest of a call served in the gRPC loop.
    """

    @inlineCallbacks
    def test_every_message_once_in_order(self) -> Any:
        """
        Whatever the reactor took, had buffered or had in flight when it
        handed the call over, the loop gets the rest in order, none lost or
        twice; the outbound messages queued before come first; the run is
        in the gRPC loop's thread.
        """
        impl = Relayed()
        c = self.serve({"ContainerService": impl})
        for taken in (0, 1, 5):
            def requests() -> Any:
                yield container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id=str(taken)))
                for i in range(200):
                    yield container_pb2.ExecInput(stdin=b"%d" % i)
                yield container_pb2.ExecInput(close_stdin=True)

            outputs = yield deferToThread(lambda: list(c.containers.Exec(requests(), timeout=30)))
            kinds = [o.WhichOneof("output") for o in outputs]
            self.assertEqual(kinds, ["data"] * taken + ["started"] + ["data"] * (200 - taken) + ["exit"])
            data = [o.data.data for o in outputs if o.WhichOneof("output") == "data"]
            self.assertEqual(data, [b"r:%d" % i for i in range(taken)] + [b"l:%d" % i for i in range(taken, 200)])
            self.assertEqual(outputs[-1].exit.status_code, 3)
            impl.outcome = Deferred()
        self.assertEqual(set(impl.threads), {"ross-grpc"})

    @inlineCallbacks
    def test_error_is_the_status(self) -> Any:
        impl = Relayed()
        c = self.serve({"ContainerService": impl})
        call = c.containers.Exec(iter([container_pb2.ExecInput(start=container_pb2.ExecConfig(user="fail")),
                                       container_pb2.ExecInput(stdin=b"x")]), timeout=30)
        first = yield deferToThread(next, call)
        self.assertEqual(first.WhichOneof("output"), "started")
        e = yield self.assertFailure(deferToThread(next, call), grpc.RpcError)
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.INVALID_ARGUMENT, "bad frame"))
        self.assertEqual((yield impl.outcome), "InvalidArgument")

    def held_open(self, impl: Relayed, **config: Any) -> Any:
        """
        A call to C{impl}'s Exec whose client sends its start frame, then
        nothing more (nor ends) until the test does.
        """
        c = self.serve({"ContainerService": impl})
        gate = threading.Event()
        self.addCleanup(gate.set)

        def requests() -> Any:
            yield container_pb2.ExecInput(start=container_pb2.ExecConfig(**config))
            gate.wait(10)

        return c.containers.Exec(requests(), timeout=30)

    @inlineCallbacks
    def running(self, call: Any, impl: Relayed) -> Any:
        """
        Wait for the started frame, then for the run to begin.
        """
        first = yield deferToThread(next, call)
        self.assertEqual(first.WhichOneof("output"), "started")
        yield until(lambda: impl.events)

    @inlineCallbacks
    def test_client_gone_cancels_run(self) -> Any:
        impl = Relayed()
        call = self.held_open(impl)
        yield self.running(call, impl)
        call.cancel()
        self.assertEqual((yield impl.outcome), "CancelledError")
        yield until(lambda: "cancelled" in impl.events)
        self.assertEqual(impl.events, ["run", "cancelled"])

    @inlineCallbacks
    def test_discarded_when_never_run(self) -> Any:
        """
        A client that leaves while what was queued before the hand-over
        still waits for it: the run never starts, and discard is called
        in the loop.
        """
        impl = Relayed()
        call = self.held_open(impl, user="big")
        # Not read: the 8 MiB message waits in the loop for the window.
        yield sleep(0.5)
        call.cancel()
        self.assertEqual((yield impl.outcome), "CancelledError")
        yield until(lambda: impl.events)
        self.assertEqual((impl.events, impl.threads), (["discarded"], ["ross-grpc"]))

    @inlineCallbacks
    def test_shutdown_ends_run_unavailable(self) -> Any:
        impl = Relayed()
        call = self.held_open(impl)
        yield self.running(call, impl)
        self.bridge.shutdown()
        e = yield self.assertFailure(deferToThread(next, call), grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(impl.events, ["run", "cancelled"])


@inlineCallbacks
def until(predicate: Any, seconds: float = 5.0) -> Any:
    """
    Wait, at most C{seconds}, for C{predicate()} to hold (the test's
    assertions then say whether it did).
    """
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        yield sleep(0.02)


class HelperTests(TestCase):
    def test_as_deferred_sync_exception(self) -> None:
        """
        A synchronous exception becomes a failed Deferred.
        """
        from ross.protocols.bridge import as_deferred

        def boom() -> None:
            raise errors.NotFound("x")

        self.failureResultOf(as_deferred(boom), errors.NotFound)
        self.assertEqual(self.successResultOf(as_deferred(lambda: succeed(3))), 3)

    def test_disk_full_is_resource_exhausted(self) -> None:
        """
        A full disk, the kernel's or SQLite's word for it, is a limit hit
        (RESOURCE_EXHAUSTED), not a bug; other OS and SQLite errors are.
        """
        import errno
        import sqlite3

        from twisted.python.failure import Failure

        from ross.protocols.bridge import status_of

        connection = sqlite3.connect(":memory:")
        self.addCleanup(connection.close)
        try:
            connection.execute("select * from nowhere")
        except sqlite3.OperationalError as e:
            other_sqlite = e
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = sqlite3.SQLITE_FULL
        for error, code in ((OSError(errno.ENOSPC, "No space left on device"), grpc.StatusCode.RESOURCE_EXHAUSTED),
                            (OSError(errno.EDQUOT, "Disk quota exceeded"), grpc.StatusCode.RESOURCE_EXHAUSTED),
                            (full, grpc.StatusCode.RESOURCE_EXHAUSTED),
                            (OSError(errno.EIO, "I/O error"), grpc.StatusCode.INTERNAL),
                            (other_sqlite, grpc.StatusCode.INTERNAL)):
            self.assertEqual(errors.disk_full(error), code == grpc.StatusCode.RESOURCE_EXHAUSTED, error)
            status = status_of(Failure(error), "ImageService.LoadImages")
            self.assertEqual(status.code, code)
        self.flushLoggedErrors(OSError, sqlite3.OperationalError)
