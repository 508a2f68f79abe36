# -*- test-case-name: ross.test.test_image_units -*-
"""
Pure pieces of the image store: --change instructions, manifest and config
parsing, chain IDs, docker->OCI manifest conversion, and the bounded pipes
between the reactor and worker threads, and the guard that lets a
cancelled operation finish its step before undoing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ross.engine.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    chain_ids,
    parse_config,
    parse_manifest,
    platform_matches,
    to_oci_manifest,
)
from ross.engine.images.changes import apply_changes, parse_changes
from ross.engine.pipes import Guard, Inflow, Outflow, PipeClosed
from ross.engine.records import Platform
from ross.errors import InvalidArgument

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


class ChangeTests(SynchronousTestCase):
    def test_apply(self) -> None:
        """
        Each instruction import takes changes the config as a Dockerfile would.
        """
        config = apply_changes({}, parse_changes([
            "CMD echo hi", 'ENTRYPOINT ["/bin/sh", "-c"]', "ENV A=1 B=two", "ENV C three words",
            "EXPOSE 80 53/udp", "LABEL a=b", "USER app", "VOLUME /data", "WORKDIR /w", "STOPSIGNAL SIGTERM",
            "ENV A=override",
        ]))
        self.assertEqual(config, {
            "Cmd": ["/bin/sh", "-c", "echo hi"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Env": ["B=two", "C=three words", "A=override"],
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "Labels": {"a": "b"},
            "User": "app",
            "Volumes": {"/data": {}},
            "WorkingDir": "/w",
            "StopSignal": "SIGTERM",
        })

    def test_refused(self) -> None:
        """
        Instructions import does not take, and instructions without
        arguments, are InvalidArgument with docker's words.
        """
        e = self.assertRaises(InvalidArgument, parse_changes, ["FROM scratch"])
        self.assertEqual(str(e), "FROM is not a valid change command")
        self.assertRaises(InvalidArgument, parse_changes, ["CMD"])
        self.assertRaises(InvalidArgument, apply_changes, {}, parse_changes(["VOLUME [not json"]))
        self.assertRaises(InvalidArgument, apply_changes, {}, parse_changes(['ENV A="unclosed']))
        self.assertRaises(InvalidArgument, apply_changes, {}, parse_changes(["LABEL 'x=y"]))


class ManifestTests(SynchronousTestCase):
    def manifest(self, **changes: object) -> bytes:
        doc = {
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": D1, "size": 10},
            "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": D2, "size": 20}],
        }
        doc.update(changes)
        return json.dumps(doc).encode()

    def test_parse(self) -> None:
        parsed = parse_manifest(self.manifest(), DOCKER_MANIFEST)
        self.assertEqual((parsed.config.digest, [l.digest for l in parsed.layers]), (D1, [D2]))

    def test_refused(self) -> None:
        """
        Wrong schema versions, unknown layer media types, malformed
        descriptors and media type disagreements are InvalidArgument.
        """
        cases = [
            self.manifest(schemaVersion=1),
            self.manifest(layers=[{"mediaType": "application/x-foo", "digest": D2, "size": 1}]),
            self.manifest(layers=[{"mediaType": DOCKER_LAYER, "digest": "sha256:abc", "size": 1}]),
            self.manifest(layers=[{"mediaType": DOCKER_LAYER, "digest": D2}]),
            self.manifest(mediaType=OCI_MANIFEST),
            b"not json",
            b"[]",
        ]
        for data in cases:
            self.assertRaises(InvalidArgument, parse_manifest, data, DOCKER_MANIFEST)

    def test_to_oci(self) -> None:
        """
        A docker manifest converts to OCI media types over the same blobs.
        """
        oci = json.loads(to_oci_manifest(self.manifest()))
        self.assertEqual((oci["mediaType"], oci["config"]["mediaType"], oci["layers"][0]["mediaType"]),
                         (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP))
        self.assertEqual((oci["config"]["digest"], oci["layers"][0]["digest"]), (D1, D2))
        parse_manifest(to_oci_manifest(self.manifest()), OCI_MANIFEST)

    def test_chain_ids(self) -> None:
        """
        ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256 of the parent's
        chain ID, a space and the layer's diff ID.
        """
        second = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
        self.assertEqual(chain_ids([D1, D2]), [D1, second])
        self.assertEqual(chain_ids([]), [])

    def test_config(self) -> None:
        config = parse_config(json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
            "config": {"Env": ["A=1"], "Cmd": ["sh"], "Entrypoint": None, "ExposedPorts": {"80/tcp": {}},
                       "Labels": {"k": "v"}, "StopSignal": "SIGINT", "WorkingDir": "/w", "User": "u"},
            "rootfs": {"type": "layers", "diff_ids": [D1]},
            "history": [{"created_by": "x", "empty_layer": True}, {"created_by": "y"}],
        }).encode())
        c = config.config
        self.assertEqual((c.env, c.cmd, c.entrypoint, c.exposed_ports, dict(c.labels), c.stop_signal,
                          c.working_dir, c.user),
                         (("A=1",), ("sh",), None, ("80/tcp",), {"k": "v"}, "SIGINT", "/w", "u"))
        self.assertEqual([h.empty_layer for h in config.history], [True, False])
        self.assertRaises(InvalidArgument, parse_config, b'{"rootfs": {"type": "other"}}')

    def test_platform(self) -> None:
        want = Platform("linux", "arm64", "v8")
        self.assertTrue(platform_matches(want, Platform("linux", "arm64", "")))
        self.assertFalse(platform_matches(want, Platform("linux", "amd64", "")))
        self.assertFalse(platform_matches(want, None))


class PipeTests(TestCase):
    async def test_inflow_backpressure(self) -> None:
        """
        The feeder waits while the reader is behind; the reader sees every
        byte in order, then end of file.
        """
        inflow = Inflow(IReactorFromThreads(reactor), limit=2)
        received: list[bytes] = []
        gate = threading.Event()

        def read() -> None:
            gate.wait(10)
            while True:
                data = inflow.read(3)
                if not data:
                    return
                received.append(data)

        done = deferToThread(read)
        self.assertTrue(await inflow.feed(b"ab"))
        waiting = inflow.feed(b"cd")
        self.assertFalse(waiting.called)
        gate.set()
        self.assertTrue(await waiting)
        self.assertTrue(await inflow.feed(b"efg"))
        inflow.close()
        await done
        self.assertEqual(b"".join(received), b"abcdefg")

    async def test_inflow_abort(self) -> None:
        inflow = Inflow(IReactorFromThreads(reactor))
        d = deferToThread(inflow.read, 10)
        inflow.abort(PipeClosed("gone"))
        with self.assertRaises(PipeClosed):
            await d

    async def test_inflow_reader_done(self) -> None:
        """
        Once the reader stopped, feeding reports it (False) instead of
        buffering.
        """
        inflow = Inflow(IReactorFromThreads(reactor))
        inflow.reader_done()
        self.assertFalse(await inflow.feed(b"x"))

    async def test_inflow_from_a_thread(self) -> None:
        """
        A thread writing (L{Inflow.put}) waits while C{limit} chunks wait
        for the reader; the reader gets every byte in order, then end of
        file. Once the reader is done, a waiting writer is told to stop
        and a waiting reader sees end of file.
        """
        inflow = Inflow(IReactorFromThreads(reactor), limit=2)
        put: list[bool] = []

        def write() -> None:
            for chunk in (b"ab", b"cd", b"ef", b"g"):
                put.append(inflow.put(chunk))

        writer = deferToThread(write)
        deadline = time.monotonic() + 10
        while len(put) < 2 and time.monotonic() < deadline:
            await deferLater(reactor, 0.01)
        await deferLater(reactor, 0.05)
        self.assertEqual(put, [True, True])
        self.assertEqual(await deferToThread(inflow.read, 3), b"abc")
        await writer
        inflow.close()
        self.assertEqual(await deferToThread(inflow.read, -1), b"defg")
        self.assertEqual(put, [True] * 4)

        stopped = Inflow(IReactorFromThreads(reactor), limit=1)
        self.assertTrue(stopped.put(b"x"))
        blocked = deferToThread(stopped.put, b"y")
        reading = Inflow(IReactorFromThreads(reactor))
        waiting = deferToThread(reading.read, 10)
        await deferLater(reactor, 0.05)
        self.assertFalse(blocked.called or waiting.called)
        stopped.reader_done()
        reading.reader_done()
        self.assertFalse(await blocked)
        self.assertEqual(await waiting, b"")

    async def test_outflow(self) -> None:
        """
        Chunks a thread puts arrive in order, then None; a cancelled
        outflow makes the writer's next put fail.
        """
        out = Outflow(IReactorFromThreads(reactor), limit=1)

        def write() -> None:
            for chunk in (b"1", b"2", b"3"):
                out.put(chunk)
            out.finish()

        writer = deferToThread(write)
        got = []
        while True:
            chunk = await out.get()
            if chunk is None:
                break
            got.append(chunk)
        await writer
        self.assertEqual(got, [b"1", b"2", b"3"])
        cancelled = Outflow(IReactorFromThreads(reactor), limit=1)
        cancelled.cancel()
        with self.assertRaises(PipeClosed):
            await deferToThread(cancelled.put, b"x")


class GuardTests(SynchronousTestCase):
    """
    L{Guard}: a cancelled operation runs on to its next checkpoint and its
    Deferred fires only once it has finished (undone its work).
    """

    def test_cancel_waits_for_the_operation(self) -> None:
        """
        Cancelling does not abandon the step in progress: the Deferred fires
        with CancelledError after the step ended and the operation's undo
        ran; on_cancel is called once, however often it is cancelled.
        """
        stopped: list[str] = []
        guard = Guard(lambda: stopped.append("stop"))
        step: Deferred[str] = Deferred()
        log: list[str] = []

        async def operation() -> str:
            try:
                log.append(await step)
                guard.check()
                log.append("recorded")
                return "done"
            except CancelledError:
                log.append("undone")
                raise

        d = guard.run(operation())
        d.cancel()
        d.cancel()
        self.assertNoResult(d)
        self.assertEqual(stopped, ["stop"])
        step.callback("wrote")
        self.failureResultOf(d, CancelledError)
        self.assertEqual(log, ["wrote", "undone"])

    def test_outcome(self) -> None:
        """
        Without cancellation the operation's result or failure passes
        through; cancelling after its last checkpoint keeps its result.
        """
        async def ok() -> int:
            return 7

        async def bad() -> int:
            raise InvalidArgument("no")

        self.assertEqual(self.successResultOf(Guard().run(ok())), 7)
        self.failureResultOf(Guard().run(bad()), InvalidArgument)
        step: Deferred[int] = Deferred()
        guard = Guard()

        async def late() -> int:
            guard.check()
            return await step

        d = guard.run(late())
        d.cancel()
        step.callback(3)
        self.assertEqual(self.successResultOf(d), 3)
        self.assertTrue(guard.cancelled)
