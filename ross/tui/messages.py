# -*- test-case-name: ross.test.integration.test_tui -*-
"""
What the TUI's threads tell its widgets. Threads never touch widgets: they
post one of these, and the handler runs on Textual's event loop.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message
from textual.notifications import SeverityLevel


class ContainersListed(Message):
    """
    Every container of daemon C{host}, when its event feed (re)connects.
    """

    def __init__(self, host: int, containers: list[Any]) -> None:
        super().__init__()
        self.host = host
        self.containers = containers


class ContainerChanged(Message):
    """
    A container as it is after an event about it.
    """

    def __init__(self, host: int, container: Any) -> None:
        super().__init__()
        self.host = host
        self.container = container


class ContainerGone(Message):
    def __init__(self, host: int, container_id: str) -> None:
        super().__init__()
        self.host = host
        self.container_id = container_id


class EventSeen(Message):
    """
    An event of daemon C{host}, for the events view and the lists it
    changes.
    """

    def __init__(self, host: int, event: Any) -> None:
        super().__init__()
        self.host = host
        self.event = event


class FeedLost(Message):
    """
    Daemon C{host}'s event feed ended with C{error} (the daemon went away,
    refused the credentials...).
    """

    def __init__(self, host: int, error: str) -> None:
        super().__init__()
        self.host = host
        self.error = error


class Notice(Message):
    """
    Something to tell the user: an action's failure, a session's end.
    """

    def __init__(self, text: str, severity: SeverityLevel = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


class StatsSample(Message):
    def __init__(self, container_id: str, sample: Any) -> None:
        super().__init__()
        self.container_id = container_id
        self.sample = sample


class StreamEnded(Message):
    """
    A log or stats stream ended on its own (the container stopped), or
    failed with C{error}.
    """

    def __init__(self, container_id: str, error: str | None) -> None:
        super().__init__()
        self.container_id = container_id
        self.error = error


class ShellEnded(Message):
    """
    A shell pane's session is over: C{text} says how.
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class PaneClosed(Message):
    """
    A shell pane closed itself because its session ended (C{text} says how).
    """

    def __init__(self, pane: Any, text: str) -> None:
        super().__init__()
        self.pane = pane
        self.text = text
