# -*- test-case-name: ross.test.test_events -*-
"""
The engine's event bus: every state change is published here once, and the
Events stream, the TUI and waiters subscribe.

Each event gets the next sequence number; with a journal
(L{ross.engine.journal.EventJournal}) the numbering goes on across daemon
restarts and L{EventBus.replay} reaches back past the bus's memory.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ross.engine.reactors import IEngineReactor

if TYPE_CHECKING:
    from ross.engine.journal import EventJournal, Replay


@attrs.frozen
class Event:
    """
    One thing that happened.

    @ivar time_ns: wall-clock time in nanoseconds since the epoch.
    @ivar seq: its place in the daemon's history: 1, 2, 3... (across
        restarts when the bus has a journal), never reused.
    """

    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_ns: int
    seq: int = 0


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
    events for subscribers that ask for the recent past (C{since}), and
    every event in C{journal} when there is one.

    @param clock: the clock of event times; with a journal, the reactor
        whose thread pool reads it.
    @param common_attributes: attributes every event of a type carries
        besides its own, by type, from its actor's ID (the engine gives
        container events the container's labels, as dockerd's).
    """

    _log = Logger()

    def __init__(self, clock: IEngineReactor, history: int = 2048, journal: EventJournal | None = None,
                 common_attributes: Mapping[str, Callable[[str], Mapping[str, str]]] | None = None) -> None:
        self._clock = clock
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[tuple[EventFilter, Subscriber]] = []
        self._journal = journal
        self.last_seq = 0
        self._common_attributes = dict(common_attributes or {})

    def open(self) -> Deferred[None]:
        """
        Open the journal (in a thread: it reads the last segment), so that
        numbering goes on from the last daemon's.
        """
        journal = self._journal
        if journal is None:
            return succeed(None)

        def opened(_: object) -> None:
            self.last_seq = max(self.last_seq, journal.last_seq)

        d: Deferred[None] = deferToThreadPool(self._clock, self._clock.getThreadPool(), journal.open)
        return d.addCallback(opened)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

    def publish(self, type: str, action: str, actor_id: str, **attributes: str) -> Event:
        self.last_seq += 1
        common = self._common_attributes.get(type)
        if common is not None:
            attributes = {**common(actor_id), **attributes}
        event = Event(
            type=type,
            action=action,
            actor_id=actor_id,
            attributes={k: str(v) for k, v in attributes.items()},
            time_ns=int(self._clock.seconds() * 1e9),
            seq=self.last_seq,
        )
        self._history.append(event)
        if self._journal is not None:
            self._journal.append(event)
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

    def replay(self, wanted: EventFilter, since_seq: int = 0, since_ns: int = 0) -> Deferred[Replay]:
        """
        The matching events published so far with C{seq >= since_seq} and
        C{time_ns >= since_ns}, oldest first: from memory when it reaches
        back far enough, else from the journal (read in a thread). Events
        published after this call are not in it.
        """
        from ross.engine.journal import Replay

        upto = self.last_seq
        memory = list(self._history)
        oldest = memory[0].seq if memory else upto + 1
        # Memory has all that is asked when it holds the first event
        # asked for (or, by time, an older one): event times only grow.
        covered = since_seq >= oldest if since_seq else bool(memory) and memory[0].time_ns < since_ns
        if covered or self._journal is None or upto == 0:
            events = [e for e in memory if e.seq >= since_seq and e.time_ns >= since_ns and wanted.matches(e)]
            return succeed(Replay(events, oldest))
        journal = self._journal

        def read() -> Replay:
            found = journal.read(since_seq, since_ns, upto)
            return Replay([e for e in found.events if wanted.matches(e)], found.oldest)

        d: Deferred[Replay] = deferToThreadPool(self._clock, self._clock.getThreadPool(), read)
        return d

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


#: Events waiting for a slow client before it is told it lags and is
#: served from the journal instead (well below the stream's hard limit).
LAG_LIMIT = 1024


class Follower:
    """
    One follower of the events (an API's events stream): the replay asked
    for, then live events; one that falls L{LAG_LIMIT} events behind is
    unsubscribed, told (C{lagging(resume_seq, lost, reason)}) and served
    from the journal until it has caught up. Every C{send} is waited for,
    so while the client is slow the memory held for it stays bounded.
    """

    def __init__(self, bus: EventBus, reactor: IReactorTime, wanted: EventFilter,
                 send: Callable[[Event], Deferred[None]], lagging: Callable[[int, int, str], Deferred[None]],
                 until: int | None) -> None:
        self._bus = bus
        self._reactor = reactor
        self._wanted = wanted
        self._deliver = send
        self._lagging = lagging
        self._until = until
        self._queue: deque[Event] = deque()
        self._lagged = False
        self._ended = False
        self._wake: Deferred[None] | None = None

    def _arrived(self, event: Event) -> None:
        if self._lagged:
            return
        self._queue.append(event)
        if len(self._queue) > LAG_LIMIT:
            # The journal has them all: drop them here and fetch them again.
            self._lagged = True
            self._queue.clear()
        self._wakeup()

    def _wakeup(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.callback(None)

    def _end(self) -> None:
        self._ended = True
        self._wakeup()

    async def _send(self, event: Event) -> bool:
        """
        Send C{event}; False once past C{until} (the stream is over).
        """
        if self._until is not None and event.time_ns > self._until:
            return False
        await self._deliver(event)
        return True

    async def run(self, since_seq: int, since_ns: int) -> None:
        timer = None
        if self._until is not None:
            timer = self._reactor.callLater(max(0.0, self._until / 1e9 - self._reactor.seconds()), self._end)
        replay, reason = bool(since_seq or since_ns), "truncated"
        # The sequence number the client has everything before, and the
        # one the last marker told it (a client still behind when its
        # replay starts is not told twice).
        resume = since_seq
        told = -1
        try:
            while True:
                unsubscribe = self._bus.subscribe(self._arrived, self._wanted)
                try:
                    if replay:
                        found = await self._bus.replay(self._wanted, resume, since_ns)
                        lost = found.oldest - resume if resume and found.oldest > resume else 0
                        if lost or (reason == "slow" and resume != told):
                            told = max(resume, found.oldest)
                            await self._lagging(told, lost, reason)
                        for event in found.events:
                            if self._lagged:
                                break
                            if not await self._send(event):
                                return
                            resume = event.seq + 1
                    while not self._lagged:
                        if self._queue:
                            event = self._queue.popleft()
                            if not await self._send(event):
                                return
                            resume = event.seq + 1
                        elif self._ended:
                            return
                        else:
                            self._wake = Deferred()
                            await self._wake
                finally:
                    unsubscribe()
                # Behind: start again from the first event not sent.
                resume = max(resume, 1)
                self._lagged = False
                self._queue.clear()
                replay, reason = True, "slow"
        finally:
            if timer is not None and timer.active():
                timer.cancel()
