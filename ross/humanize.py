# -*- test-case-name: ross.test.test_cli -*-
"""
Sizes, durations and times as docker prints and parses them; shared by the
CLI and the daemon.
"""

from __future__ import annotations

import calendar
import re
import time

from ross.errors import InvalidArgument


def human_size(size: float, precision: int = 4) -> str:
    """
    docker's units.HumanSize: decimal units, at most four significant
    digits (C{precision}: HumanSizeWithPrecision, e.g. 3 for ``cp``).
    """
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_duration(seconds: float) -> str:
    """
    docker's units.HumanDuration.
    """
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def docker_status(status: str, exit_code: int, health: str, started: float, finished: float, now: float) -> str:
    """
    docker's STATUS column ("Up 3 minutes (healthy)", "Exited (0) 2 seconds
    ago") for a container in C{status} (docker's state names); C{started}
    and C{finished} are seconds since the epoch, 0 when it never did.
    """
    ago = lambda at: human_duration(now - at)  # noqa: E731
    if status in ("running", "paused"):
        text = f"Up {ago(started)}" if started else "Up"
        if status == "paused":
            return text + " (Paused)"
        if health:
            return text + f" ({'health: starting' if health == 'starting' else health})"
        return text
    if status in ("exited", "restarting"):
        if not finished:
            return "Created" if status == "exited" else f"Restarting ({exit_code})"
        return f"{status.capitalize()} ({exit_code}) {ago(finished)} ago"
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    return "Created"


def parse_time(value: str, now: float | None = None) -> float:
    """
    A time as docker's --since/--until take it: RFC 3339 ("2026-11-25T08:00:00Z",
    with or without fractions and zone), a date, Unix seconds ("1732521600.5"),
    or a duration before now ("10m", "1h30m", "45s"). Seconds since the epoch.
    """
    import datetime
    import re

    now = time.time() if now is None else now
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _in_range(float(text), value)
    duration = re.fullmatch(r"((\d+(\.\d+)?)(ns|us|ms|s|m|h))+", text)
    if duration:
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        total = sum(float(n) * scale[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|ms|s|m|h)", text))
        return _in_range(now - total, value)
    iso = text.replace("Z", "+00:00")
    # Python's fromisoformat takes at most microseconds.
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
    try:
        parsed = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidArgument(f"invalid time {value!r}: use RFC 3339, Unix seconds or a duration like 10m")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return _in_range(parsed.timestamp(), value)


def _in_range(seconds: float, value: str) -> float:
    # Years 1 to 9999: what a protobuf Timestamp can carry.
    if not -62135596800 <= seconds <= 253402300799:
        raise InvalidArgument(f"invalid time {value[:64]!r}: out of range")
    return seconds


def rfc3339(seconds: float | int, nanos: int | None = None) -> str:
    """
    RFC 3339 with nanoseconds, UTC, as docker prints timestamps.
    """
    import datetime

    whole = int(seconds)
    frac = nanos if nanos is not None else int(round((seconds - whole) * 1e9))
    stamp = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def go_time(seconds: int) -> str:
    """
    A time in whole seconds as Go's time.String() prints it in UTC, which
    docker's listings show as CreatedAt ("2026-12-08 02:52:21 +0000 UTC").
    """
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(seconds))


def parse_bytes(text: str) -> int:
    """
    "64m", "1g", "512k", "100" (bytes), as docker's RAMInBytes.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?\s*", text.lower())
    if not m:
        raise InvalidArgument(f"invalid size: '{text}'")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}[m.group(2)]
    number = float(m.group(1))
    if number * scale >= 1 << 63:
        raise InvalidArgument(f"invalid size: '{text[:64]}' is too large")
    return int(number * scale)


def parse_rfc3339_ns(text: str) -> int:
    """
    Nanoseconds since the epoch of an RFC 3339 time as image configs hold
    it ("2023-11-14T22:13:20.123456789Z"); 0 when absent or unreadable.
    """
    match = re.match(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)?$", text.strip())
    if not match:
        return 0
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = match.group(7) or ""
    nanos = int((fraction[1:] + "000000000")[:9]) if fraction else 0
    zone = match.group(8) or "Z"
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + nanos
