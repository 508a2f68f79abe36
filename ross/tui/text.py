# -*- test-case-name: ross.test.test_tui -*-
"""
Text for display: what a log line shows of a terminal's output.
"""

from __future__ import annotations

import re

# Terminal control in a log (a container with -t writes colours, cursor
# moves, carriage returns): the log pane shows the text only.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\r(?!\n)|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """
    C{text} without terminal control sequences, as the log pane shows it.
    """
    return _CONTROL.sub("", text.replace("\r\n", "\n"))
