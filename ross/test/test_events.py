"""
Tests for L{ross.engine.events}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.events import Event, EventBus, EventFilter


class EventBusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.bus = EventBus(self.clock, history=3)

    def test_publish_in_order(self) -> None:
        seen: list[Event] = []
        self.bus.subscribe(seen.append)
        self.bus.publish("container", "create", "abc", name="web")
        self.bus.publish("container", "start", "abc", name="web")
        self.assertEqual([e.action for e in seen], ["create", "start"])
        self.assertEqual(seen[0].time_ns, 1000 * 10**9)
        self.assertEqual(seen[0].attributes, {"name": "web"})

    def test_filter(self) -> None:
        """
        Types, actions and attributes must all match; id matches a prefix.
        """
        seen: list[Event] = []
        self.bus.subscribe(seen.append, EventFilter(types=frozenset({"container"}), actions=frozenset({"die"})))
        self.bus.publish("image", "die", "x")
        self.bus.publish("container", "start", "x")
        self.bus.publish("container", "die", "abcdef", exitCode="3")
        self.assertEqual([e.actor_id for e in seen], ["abcdef"])
        self.assertTrue(EventFilter(attributes={"id": "abc"}).matches(seen[0]))
        self.assertFalse(EventFilter(attributes={"exitCode": "0"}).matches(seen[0]))

    def test_since_replays_bounded_history(self) -> None:
        for i in range(5):
            self.clock.advance(1)
            self.bus.publish("container", "start", str(i))
        seen: list[Event] = []
        self.bus.subscribe(seen.append, since_ns=1003 * 10**9)
        self.assertEqual([e.actor_id for e in seen], ["2", "3", "4"])

    def test_unsubscribe_and_failing_subscriber(self) -> None:
        """
        A subscriber that raises is logged and does not stop the others.
        """
        seen: list[Event] = []

        def broken(event: Event) -> None:
            raise RuntimeError("boom")

        self.bus.subscribe(broken)
        unsubscribe = self.bus.subscribe(seen.append)
        self.bus.publish("x", "y", "z")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        unsubscribe()
        self.bus.publish("x", "y", "z")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.bus.subscriber_count, 1)
