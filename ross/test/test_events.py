"""
Tests for L{ross.engine.events}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.events import Event, EventBus, EventFilter
from ross.engine.journal import EventJournal, encode
from ross.engine.reactors import engine_reactor


class EventBusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.bus = EventBus(engine_reactor(self.clock), history=3)

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


class SequenceTests(SynchronousTestCase):
    def test_numbered_in_order(self) -> None:
        """
        Every event gets the next sequence number, starting at 1.
        """
        bus = EventBus(engine_reactor(Clock()))
        seen: list[Event] = []
        bus.subscribe(seen.append)
        for action in ("create", "start", "die"):
            bus.publish("container", action, "abc")
        self.assertEqual([e.seq for e in seen], [1, 2, 3])
        self.assertEqual(bus.last_seq, 3)

    def test_replay_from_memory(self) -> None:
        """
        A replay that memory covers is answered at once, filtered, by
        sequence number or by time.
        """
        clock = Clock()
        bus = EventBus(engine_reactor(clock), history=10)
        for i in range(6):
            clock.advance(1)
            bus.publish("container" if i % 2 else "image", "x", str(i))
        by_seq = self.successResultOf(bus.replay(EventFilter(), since_seq=3))
        self.assertEqual([e.seq for e in by_seq.events], [3, 4, 5, 6])
        self.assertEqual(by_seq.oldest, 1)
        wanted = EventFilter(types=frozenset({"container"}))
        by_time = self.successResultOf(bus.replay(wanted, since_ns=int(3.5e9)))
        self.assertEqual([e.actor_id for e in by_time.events], ["3", "5"])

    def test_replay_beyond_memory_without_journal(self) -> None:
        """
        Without a journal, what memory lost is lost, and the replay says
        from where it has events.
        """
        bus = EventBus(engine_reactor(Clock()), history=3)
        for i in range(5):
            bus.publish("container", "x", str(i))
        replay = self.successResultOf(bus.replay(EventFilter(), since_seq=1))
        self.assertEqual([e.seq for e in replay.events], [3, 4, 5])
        self.assertEqual(replay.oldest, 3)


class JournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())

    def event(self, seq: int, action: str = "start", time_ns: int = 0) -> Event:
        return Event("container", action, "abc", {"name": "web", "é": "ü"}, time_ns or seq * 10**9, seq)

    def test_round_trip_and_reopen(self) -> None:
        """
        Events read back as written, and a journal opened again (a new
        daemon) numbers on from the last event.
        """
        journal = EventJournal(self.directory)
        journal.open()
        for seq in range(1, 6):
            journal.append(self.event(seq))
        journal.close()
        again = EventJournal(self.directory)
        again.open()
        self.assertEqual(again.last_seq, 5)
        replay = again.read(2, 0, 4)
        self.assertEqual(replay.events, [self.event(2), self.event(3), self.event(4)])
        self.assertEqual(replay.oldest, 1)
        self.assertEqual([e.seq for e in again.read(0, 4 * 10**9, 5).events], [4, 5])

    def test_half_written_line_is_cut(self) -> None:
        """
        A daemon killed in the middle of a write leaves half a line; the
        next one drops it and writes whole lines after it.
        """
        journal = EventJournal(self.directory)
        journal.open()
        journal.append(self.event(1))
        journal.close()
        (segment,) = self.directory.iterdir()
        with open(segment, "ab") as f:
            f.write(b'{"seq":2,"ti')
        again = EventJournal(self.directory)
        again.open()
        self.assertEqual(again.last_seq, 1)
        again.append(self.event(2))
        self.assertEqual([e.seq for e in again.read(0, 0, 10).events], [1, 2])

    def test_bounded(self) -> None:
        """
        Past its bound the journal drops its oldest segments, and says
        where it now starts.
        """
        one = len(encode(self.event(1)))
        journal = EventJournal(self.directory, max_bytes=one * 20, segments=4)
        journal.open()
        for seq in range(1, 101):
            journal.append(self.event(seq))
        total = sum(p.stat().st_size for p in self.directory.iterdir())
        self.assertLessEqual(total, one * 20 + journal.segment_bytes)
        replay = journal.read(1, 0, 100)
        self.assertGreater(replay.oldest, 1)
        self.assertEqual([e.seq for e in replay.events], list(range(replay.oldest, 101)))

    def test_bus_writes_journal(self) -> None:
        """
        A bus with a journal writes every event to it as it publishes.
        """
        journal = EventJournal(self.directory)
        journal.open()
        self.addCleanup(journal.close)
        bus = EventBus(engine_reactor(Clock()), history=2, journal=journal)
        for i in range(5):
            bus.publish("container", "x", str(i))
        self.assertEqual(journal.last_seq, 5)
        self.assertEqual([e.actor_id for e in journal.read(0, 0, 5).events], ["0", "1", "2", "3", "4"])
