"""
Durable events (SPEC 16): numbered, journalled under --root across daemon
restarts and crashes, replayed by ``ross events --since``, and a follower
that falls behind is told so and gets every event it missed.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess, InProcessDaemon
from ross.v1 import system_pb2


class RestartReplayTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)

    def ross_ok(self, *args: str) -> str:
        result = self.daemon.ross(*args)
        if result.returncode != 0:
            raise AssertionError(f"ross {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout.decode()

    def events(self, since: str) -> list[dict[str, Any]]:
        out = self.ross_ok("events", "--since", since, "--until", "0s", "--format", "json")
        return [json.loads(line) for line in out.splitlines()]

    def scenario(self) -> None:
        """
        Blocking: events before a clean stop and before a SIGKILL are all
        replayed by the third daemon, numbered on without a hole.
        """
        self.daemon.start()
        self.ross_ok("volume", "create", "one")
        self.daemon.stop()
        self.daemon.start()
        self.ross_ok("volume", "create", "two")
        self.daemon.kill()
        self.daemon.start()
        self.ross_ok("volume", "create", "three")

        seen = self.events("1")
        seqs = [int(e["seq"]) for e in seen]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        story = [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in seen]
        self.assertEqual([s for s in story if s[0] == "volume"],
                         [("volume", "create", "one"), ("volume", "create", "two"), ("volume", "create", "three")])
        # Three starts, one clean stop (the killed daemon said nothing).
        self.assertEqual([a for t, a, _ in story if t == "daemon"], ["start", "stop", "start", "start"])

        # By sequence number: from the second volume on.
        second = next(int(e["seq"]) for e in seen if e["Actor"]["ID"] == "two")
        self.assertEqual([int(e["seq"]) for e in self.events(str(second))], list(range(second, len(seqs) + 1)))
        # By time, docker's way: the same events.
        self.assertEqual([int(e["seq"]) for e in self.events("1h")], seqs)
        # The plain lines are docker's, unchanged.
        lines = self.ross_ok("events", "--since", str(second), "--until", "0s").splitlines()
        self.assertIn("volume create two (driver=local)", lines[0])

    def test_restart_and_replay(self) -> Any:
        return deferToThread(self.scenario)


class LaggingFollowerTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()

    async def burst(self, count: int, per_turn: int) -> None:
        """
        Publish C{count} volume events, C{per_turn} per reactor turn (the
        engine's own way of publishing: from the reactor thread).
        """
        bus = self.daemon.engine.events
        for start in range(0, count, per_turn):
            for i in range(start, min(count, start + per_turn)):
                bus.publish("volume", "create", f"burst-{i}", driver="local")
            await deferLater(reactor, 0, lambda: None)

    def follow(self, call: Any, started: threading.Event, go: threading.Event, count: int) -> list[Any]:
        """
        Blocking: read nothing until C{go}, then every message up to the
        last burst event.
        """
        started.set()
        go.wait(60)
        received = []
        for message in call:
            received.append(message)
            if message.actor_id == f"burst-{count - 1}":
                call.cancel()
                break
        return received

    async def test_slow_follower_told_and_resumed_from_journal(self) -> None:
        """
        A client that stops reading while thousands of events go by gets
        a ``lagging`` marker, then every event it missed (more than the
        bus keeps in memory, so from the journal), in order, once each.
        """
        count = 6000
        # A small flow-control window that does not grow: the daemon, not
        # grpc's buffers, holds what the client has not read.
        channel = grpc.insecure_channel(f"unix:{self.daemon.socket}", options=[("grpc.http2.bdp_probe", 0)])
        self.addCleanup(channel.close)
        stub = self.daemon.clients().system.__class__(channel)
        call = stub.Events(system_pb2.EventsRequest(types=["volume"]), timeout=60)
        self.addCleanup(call.cancel)
        started, go = threading.Event(), threading.Event()
        reading = deferToThread(self.follow, call, started, go, count)
        # The stream is open once the daemon has its subscriber.
        while self.daemon.engine.events.subscriber_count == 0:
            await deferLater(reactor, 0.01, lambda: None)
        await self.burst(count, per_turn=100)
        go.set()
        received = await reading

        markers = [m for m in received if m.HasField("lagging")]
        events = [m for m in received if not m.HasField("lagging")]
        self.assertTrue(markers, "the follower was never told it lagged")
        self.assertEqual({m.lagging.reason for m in markers}, {"slow"})
        self.assertEqual([m.lagging.lost for m in markers], [0] * len(markers))
        self.assertEqual([e.actor_id for e in events], [f"burst-{i}" for i in range(count)])
        seqs = [e.seq for e in events]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + count)))
        # Each marker says where the stream goes on, and none repeats
        # another: the client is told once each time it falls behind.
        for marker in markers:
            after = received.index(marker) + 1
            self.assertEqual(received[after].seq, marker.lagging.resume_seq)
        # More was missed than memory holds: the journal had to serve it.
        self.assertGreater(self.daemon.engine.events.last_seq - markers[0].lagging.resume_seq, 2048)
