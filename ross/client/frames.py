"""
The input frames of an interactive stream (attach, exec, run -it), spelled
per RPC: what the CLI's sessions and the TUI's panes both send.
"""

from __future__ import annotations

import os
from typing import Any

from ross.v1 import common_pb2


class Frames:
    """
    How one RPC spells its input frames.
    """

    def __init__(self, message: Any) -> None:
        self.message = message

    def stdin(self, data: bytes) -> Any:
        return self.message(stdin=data)

    def resize(self, rows: int, cols: int) -> Any:
        return self.message(resize=common_pb2.WindowSize(rows=rows, cols=cols))

    def close_stdin(self) -> Any:
        return self.message(close_stdin=True)


class SentInput:
    """
    The input a TTY session sent, for the stream it attaches next (SPEC 3:
    sessions outlive the daemon): the name its start frames give it
    (C{input_id}), the count of bytes sent, and the last L{KEPT} of them.
    A stream lost with the daemon may take keystrokes with it (grpcio had
    taken them, or the daemon had not passed them on); the session counts
    what it took in under the name, and the next stream's C{started} says
    how much (C{input_offset}), so what never arrived goes out again, once.
    """

    #: Bytes kept for sending again: far more than a terminal has in flight.
    KEPT = 1024 * 1024

    def __init__(self) -> None:
        self.input_id = os.urandom(8).hex()
        self.sent = 0
        self._tail = bytearray()

    def name(self, first: Any) -> Any:
        """
        C{first}, a start frame (InteractiveInput, AttachInput or
        ExecInput), with this input's name.
        """
        if first is not None and first.HasField("start"):
            first.start.input_id = self.input_id
        return first

    def record(self, data: bytes) -> None:
        """
        C{data} is about to be sent.
        """
        self.sent += len(data)
        self._tail += data
        if len(self._tail) > 2 * self.KEPT:
            # (Trimmed now and then, not on every write.)
            del self._tail[:len(self._tail) - self.KEPT]

    def unsent(self, started: Any) -> bytes:
        """
        What was sent and never taken in, by the C{started} frame of a
        stream attached again (all that is kept, if more went missing;
        nothing when the daemon does not count input).
        """
        if not started.HasField("input_offset"):
            return b""
        missing = self.sent - started.input_offset
        if missing <= 0:
            return b""
        return bytes(self._tail[-min(missing, self.KEPT):])
