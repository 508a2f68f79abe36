# -*- test-case-name: ross.test.integration.test_direct -*-
"""
A session's shim frames (L{ross.protocols.shimwire}) as the API's
C{InteractiveOutput} frames: for the clients that hold a direct channel
(the CLI's sessions, the TUI's panes) and for the daemon's relay of a
gRPC client's session (L{ross.services.relay}), so every path reads them
alike.
"""

from __future__ import annotations

from typing import Any

from ross.protocols import shimwire
from ross.v1 import common_pb2, container_pb2


def exit_result(message: dict[str, Any]) -> Any:
    """
    The C{ExitResult} of a shim's exit event (a MESSAGE frame's dict), as
    the gRPC stream's C{exit} frame would carry it; None for any other
    message.
    """
    if message.get("event") != "exit":
        return None
    status = message.get("status") or {}
    return container_pb2.ExitResult(status_code=int(status.get("exit_code", 0)), signal=int(status.get("signal") or 0),
                                    oom_killed=bool(status.get("oom_killed")), error=str(status.get("error") or ""))


def output_of(kind: int, payload: bytes) -> Any:
    """
    The C{InteractiveOutput} frame a shim frame from a direct channel
    stands for (C{data} or C{exit}); None for a frame that stands for
    nothing there.
    """
    if kind == shimwire.STDOUT or kind == shimwire.STDERR:
        stream = common_pb2.STD_STREAM_STDOUT if kind == shimwire.STDOUT else common_pb2.STD_STREAM_STDERR
        return container_pb2.InteractiveOutput(data=container_pb2.OutputData(stream=stream, data=payload))
    if kind == shimwire.MESSAGE:
        result = exit_result(shimwire.decode_message(payload))
        if result is not None:
            return container_pb2.InteractiveOutput(exit=result)
    return None
