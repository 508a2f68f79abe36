# -*- test-case-name: ross.test.test_runtime_logfile -*-
"""
Reading what L{ross.engine.runtime.logfile.LogWriter} wrote: one entry per
JSON line, the logged bytes given back exactly, and the file set of a
rotated log in order.

Blocking file work: call it in a thread.
"""

from __future__ import annotations

import calendar
import json
import os

import attrs


@attrs.frozen
class LogEntry:
    """
    One log line: C{stream} is "stdout" or "stderr", C{time_ns} nanoseconds
    since the epoch, C{data} the raw bytes (with their newline when they had one).
    """

    stream: str
    time_ns: int
    data: bytes


def parse_time(text: str) -> int:
    """
    Nanoseconds since the epoch of an RFC 3339 UTC time
    ("2024-05-01T10:00:00.123456789Z"; the fraction may have 0 to 9 digits).
    """
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC RFC 3339 time: {text!r}")
    main, _, fraction = text[:-1].partition(".")
    seconds = calendar.timegm((int(main[0:4]), int(main[5:7]), int(main[8:10]),
                               int(main[11:13]), int(main[14:16]), int(main[17:19]), 0, 0, 0))
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


def parse_entry(line: bytes) -> LogEntry:
    """
    The entry of one JSON line; ValueError when it is not one.
    """
    obj = json.loads(line)
    return LogEntry(obj["stream"], parse_time(obj["time"]), obj["log"].encode("utf-8", "surrogateescape"))


def log_files(path: str, max_files: int) -> list[str]:
    """
    The existing files of a rotated log, oldest first, the current one last.
    """
    files = [f"{path}.{i}" for i in range(max(1, max_files) - 1, 0, -1)] + [path]
    return [f for f in files if os.path.exists(f)]
