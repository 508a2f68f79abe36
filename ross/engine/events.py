# -*- test-case-name: ross.test.test_events -*-
"""
The engine's event bus: every state change is published here once, and the
Events stream, the TUI and waiters subscribe.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Mapping

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


@attrs.frozen
class Event:
    """
    One thing that happened.

    @ivar time_ns: wall-clock time in nanoseconds since the epoch.
    """

    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_ns: int


@attrs.frozen
class EventFilter:
    """
    Which events a subscriber wants: every non-empty field must match.
    """

    types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    attributes: Mapping[str, str] = attrs.field(factory=dict)

    def matches(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        # "health_status" matches "health_status: healthy", as in docker.
        if self.actions and event.action not in self.actions and event.action.split(":", 1)[0] not in self.actions:
            return False
        for key, value in self.attributes.items():
            if key in ("id", "container") and event.actor_id.startswith(value):
                continue
            if key == "container" and event.attributes.get("name") == value:
                continue
            if event.attributes.get(key) != value:
                return False
        return True


Subscriber = Callable[[Event], None]


class EventBus:
    """
    Publishes events to subscribers in order, keeping the last C{history}
    events for subscribers that ask for the recent past (C{since}).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, history: int = 2048) -> None:
        self._clock = clock
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[tuple[EventFilter, Subscriber]] = []

    def publish(self, type: str, action: str, actor_id: str, **attributes: str) -> Event:
        event = Event(
            type=type,
            action=action,
            actor_id=actor_id,
            attributes={k: str(v) for k, v in attributes.items()},
            time_ns=int(self._clock.seconds() * 1e9),
        )
        self._history.append(event)
        for wanted, subscriber in list(self._subscribers):
            if wanted.matches(event):
                try:
                    subscriber(event)
                except Exception:
                    self._log.failure("event subscriber failed on {type} {action}", type=type, action=action)
        return event

    def subscribe(
        self,
        subscriber: Subscriber,
        wanted: EventFilter = EventFilter(),
        since_ns: int | None = None,
    ) -> Callable[[], None]:
        """
        Call C{subscriber} with every matching event from now on, after the
        buffered ones at or after C{since_ns}. Returns the unsubscribe call.
        """
        if since_ns is not None:
            for event in self.history(wanted, since_ns):
                subscriber(event)
        entry = (wanted, subscriber)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def history(self, wanted: EventFilter, since_ns: int) -> Iterable[Event]:
        return [e for e in self._history if e.time_ns >= since_ns and wanted.matches(e)]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
