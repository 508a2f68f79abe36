# -*- test-case-name: ross.test.integration.test_registry -*-
"""
What a pull or push tells its client while it works: docker's progress
lines ("a3ed95caeb02: Pull complete", "Digest: sha256:...").
"""

from __future__ import annotations

from typing import Callable

import attrs

from ross.humanize import human_size


@attrs.frozen
class Progress:
    """
    One progress line. C{id} is the short layer ID the line is about ("" for
    whole-image lines); C{current}/C{total} the bytes of a transfer.
    C{digest} and C{size} are set on a push's final line.
    """

    status: str
    id: str = ""
    current: int = 0
    total: int = 0
    digest: str = ""
    size: int = 0

    @property
    def text(self) -> str:
        """Human form of the transfer: "12.3MB/40.1MB"."""
        if not self.total and not self.current:
            return ""
        if self.total:
            return f"{human_size(self.current)}/{human_size(self.total)}"
        return human_size(self.current)


Report = Callable[[Progress], None]


def short_id(digest: str) -> str:
    """docker's short layer ID: 12 hex digits of the digest."""
    return digest.partition(":")[2][:12]


class Throttle:
    """
    Transfer progress at most every C{interval} seconds per item (and
    always at its end), so a fast transfer does not flood the client.
    """

    def __init__(self, report: Report, clock: Callable[[], float], status: str, id: str, total: int,
                 interval: float = 0.1) -> None:
        self._report = report
        self._clock = clock
        self._status = status
        self._id = id
        self._total = total
        self._interval = interval
        self._last = 0.0

    def __call__(self, current: int) -> None:
        now = self._clock()
        if now - self._last >= self._interval or current >= self._total:
            self._last = now
            self._report(Progress(self._status, self._id, current, self._total))
