# -*- test-case-name: ross.test.test_events -*-
"""
The event journal: every event the daemon publishes, on disk under
C{--root/events}, so that a restarted daemon goes on numbering where the
last one stopped and ``ross events --since`` can replay what a client
missed.

The journal is a directory of segments, JSON lines each, named after the
sequence number of their first event. An event is appended with one
C{write(2)} on an C{O_APPEND} descriptor as it is published, in the
reactor thread, as Twisted's own log files are: the page cache keeps it
through a SIGKILL of the daemon, and nothing is queued in memory to lose.
Its size is bounded: past C{segment_bytes} the next event starts a new
segment, and the oldest segments go once the whole is over C{max_bytes}.
Reading (L{EventJournal.read}) blocks: do it in a thread.

A crash can leave half a line at the end; opening the journal cuts it off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import attrs
from twisted.logger import Logger

from ross.engine.events import Event
from ross.engine.fsutil import private_dir

#: Default bound of the journal on disk.
MAX_BYTES = 16 * 1024 * 1024
SEGMENTS = 8

_PREFIX = "events-"
_SUFFIX = ".jsonl"


def encode(event: Event) -> bytes:
    return json.dumps({"seq": event.seq, "time": event.time_ns, "type": event.type, "action": event.action,
                       "actor": event.actor_id, "attrs": event.attributes},
                      separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> Event | None:
    """
    The event a journal line holds; None for a line that is not one (half
    written, or damaged).
    """
    try:
        doc = json.loads(line)
        return Event(type=str(doc["type"]), action=str(doc["action"]), actor_id=str(doc["actor"]),
                     attributes={str(k): str(v) for k, v in doc["attrs"].items()}, time_ns=int(doc["time"]),
                     seq=int(doc["seq"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@attrs.frozen
class Replay:
    """
    What the journal gave for a replay.

    @ivar events: the events asked for, oldest first.
    @ivar oldest: the oldest sequence number the journal still had (events
        before it were dropped to keep the journal within its bound).
    """

    events: list[Event]
    oldest: int


class EventJournal:
    """
    The segments under C{directory}. L{open} before L{append}; only the
    reactor thread appends, any thread may L{read}.
    """

    _log = Logger()

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES, segments: int = SEGMENTS) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, max_bytes // segments)
        self.last_seq = 0
        self._fd = -1
        self._size = 0
        self._broken = False

    # -- writing (reactor thread)

    def open(self) -> None:
        """
        Find where the last daemon stopped (blocking: once, at start).
        """
        private_dir(self.directory)
        segments = self._segments()
        if segments:
            last = segments[-1][1]
            self._cut_partial_line(last)
            for event in self._events_of(last):
                self.last_seq = max(self.last_seq, event.seq)
            if not self.last_seq:
                # An empty or unreadable last segment: its name still says
                # where numbering had got to.
                self.last_seq = segments[-1][0] - 1
            self._open_segment(last)
        else:
            self._open_segment(self._path_of(1))

    def append(self, event: Event) -> None:
        """
        Write C{event} (its C{seq} set) at the end of the journal.
        """
        if self._fd < 0:
            return
        data = encode(event)
        if self._size and self._size + len(data) > self.segment_bytes:
            os.close(self._fd)
            self._fd = -1
            self._open_segment(self._path_of(event.seq))
            self._trim()
        try:
            os.write(self._fd, data)
        except OSError as e:
            # A full disk costs the journal this event, not the daemon its
            # event bus: live subscribers still get it. Said once.
            if not self._broken:
                self._log.error("cannot write the event journal {path}: {error}", path=str(self.directory),
                                error=str(e))
            self._broken = True
            return
        self._broken = False
        self._size += len(data)
        self.last_seq = event.seq

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open_segment(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _trim(self) -> None:
        segments = self._segments()
        total = 0
        sizes = []
        for _, path in segments:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            sizes.append(size)
            total += size
        for (_, path), size in zip(segments[:-1], sizes):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _cut_partial_line(self, path: Path) -> None:
        with open(path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                f.truncate(end)

    # -- reading (any thread, blocking)

    def _path_of(self, first_seq: int) -> Path:
        return self.directory / f"{_PREFIX}{first_seq:020d}{_SUFFIX}"

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            number = path.name[len(_PREFIX):-len(_SUFFIX)]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def _events_of(self, path: Path) -> Iterator[Event]:
        try:
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        return
                    event = decode(line)
                    if event is not None:
                        yield event
        except FileNotFoundError:
            # Trimmed away while we were getting to it.
            return

    def read(self, since_seq: int, since_ns: int, upto: int) -> Replay:
        """
        The events with C{since_seq <= seq <= upto} and C{time_ns >=
        since_ns}, oldest first.
        """
        segments = self._segments()
        # Only the segments that can hold seq >= since_seq: the last one
        # starting at or before it, and every later one.
        start = 0
        for i, (first, _) in enumerate(segments):
            if first <= since_seq:
                start = i
        events = []
        for _, path in segments[start:]:
            for event in self._events_of(path):
                if event.seq > upto:
                    break
                if event.seq >= since_seq and event.time_ns >= since_ns:
                    events.append(event)
        # A segment is named after its first event.
        return Replay(events, segments[0][0] if segments else 1)
