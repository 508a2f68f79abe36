# -*- test-case-name: ross.test.test_tui -*-
"""
What the TUI's tables show for containers and images, as ``ross ps`` and
``ross images`` show it; pure functions of the API's messages.
"""

from __future__ import annotations

import time
from typing import Any

from ross.client.states import status_name
from ross.humanize import docker_status, human_duration, human_size

CONTAINER_COLUMNS = ("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "STATUS", "PORTS")
IMAGE_COLUMNS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")



def _seconds(ts: Any) -> float:
    return float(ts.seconds + ts.nanos / 1e9)


def state_name(c: Any) -> str:
    """
    "running", "exited"...: the container's state as docker names it.
    """
    return status_name(c.state.status)


def status_text(c: Any, now: float | None = None) -> str:
    """
    docker's STATUS column, worked out from the state and the clock so it
    stays true between events.
    """
    state = c.state
    return docker_status(state_name(c), state.exit_code, state.health, _seconds(state.started_at),
                         _seconds(state.finished_at), time.time() if now is None else now)


def ports_text(c: Any) -> str:
    return ", ".join(
        f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}" for p in c.network_settings.ports)


def container_cells(c: Any, now: float | None = None) -> tuple[str, ...]:
    """
    One table row, in L{CONTAINER_COLUMNS} order.
    """
    return (c.id[:12], c.name, c.image, c.command, status_text(c, now), ports_text(c))


def matches(c: Any, text: str) -> bool:
    """
    Whether the filter box's C{text} selects container C{c}: every word
    must appear in its name, image, state or status (any case), or start
    its ID.
    """
    haystack = " ".join((c.name, c.image, state_name(c), status_text(c))).lower()
    return all(word in haystack or c.id.startswith(word) for word in text.lower().split())


def _familiar(name: str) -> str:
    from ross.reference import ReferenceError, parse_normalized

    try:
        return parse_normalized(name).familiar()
    except ReferenceError:
        return name


def image_rows(images: Any, now: float | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """
    (row key, cells in L{IMAGE_COLUMNS} order) for every tag of every
    image, as ``ross images`` lists them.
    """
    now = time.time() if now is None else now
    rows: list[tuple[str, tuple[str, ...]]] = []
    for image in images:
        created = _seconds(image.created)
        when = human_duration(now - created) + " ago" if created else "N/A"
        short = image.id.split(":", 1)[-1][:12]
        for tag in [_familiar(t) for t in image.repo_tags] or ["<none>:<none>"]:
            head, sep, tail = tag.rpartition(":")
            repo, version = (head, tail) if sep and "/" not in tail else (tag, "<none>")
            rows.append((f"{image.id} {tag}", (repo, version, short, when, human_size(image.size))))
    return rows
