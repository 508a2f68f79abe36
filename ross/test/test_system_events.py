"""
Tests for the events stream's messages in L{ross.services.system}.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.events import Event
from ross.services.system import SystemAPI, event_to_proto
from ross.v1 import system_pb2


def event(seq: int) -> Event:
    return Event(type="container", action="start", actor_id="c" * 64, attributes={"name": "web"},
                 time_ns=1_000_000_000 * seq, seq=seq)


class EventMessageTests(SynchronousTestCase):
    def setUp(self) -> None:
        engine: Any = None
        self.api = SystemAPI(engine)

    def test_serialized_once(self) -> None:
        """
        Every follower sends the same bytes for an event: those of its
        message, made once.
        """
        first = self.api._event_message(event(7))
        self.assertIs(self.api._event_message(event(7)), first)
        self.assertEqual(system_pb2.Event.FromString(first), event_to_proto(event(7)))

    def test_bounded(self) -> None:
        """
        Only the most recent events are kept; an older one is made again,
        the same.
        """
        old = self.api._event_message(event(1))
        for seq in range(2, SystemAPI.RECENT_EVENTS + 2):
            self.api._event_message(event(seq))
        self.assertEqual(len(self.api._recent), SystemAPI.RECENT_EVENTS)
        again = self.api._event_message(event(1))
        self.assertIsNot(again, old)
        self.assertEqual(again, old)
