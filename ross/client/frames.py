"""
The input frames of an interactive stream (attach, exec, run -it), spelled
per RPC: what the CLI's sessions and the TUI's panes both send.
"""

from __future__ import annotations

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
