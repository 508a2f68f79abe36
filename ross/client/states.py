# -*- test-case-name: ross.test.test_tui,ross.test.test_cli -*-
"""
A container's state as docker names it, for every client (the CLI's
``inspect``, the TUI's rows).
"""

from __future__ import annotations

from typing import Any

from ross.v1 import container_pb2

STATE_NAMES: dict[int, str] = {
    container_pb2.CONTAINER_STATUS_CREATED: "created",
    container_pb2.CONTAINER_STATUS_RUNNING: "running",
    container_pb2.CONTAINER_STATUS_PAUSED: "paused",
    container_pb2.CONTAINER_STATUS_RESTARTING: "restarting",
    container_pb2.CONTAINER_STATUS_EXITED: "exited",
    container_pb2.CONTAINER_STATUS_REMOVING: "removing",
    container_pb2.CONTAINER_STATUS_DEAD: "dead",
}


def status_name(status: int) -> str:
    """
    "running", "exited"...: docker's name of a container status.
    """
    return STATE_NAMES.get(status, "unknown")
