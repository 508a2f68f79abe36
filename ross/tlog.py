"""
Daemon logging set-up: twisted.logger to stdout, filtered by --log-level.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def observer_for(level: str, stream: Any = None) -> ILogObserver:
    """
    A text observer on C{stream} (stdout) that drops events below C{level}.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    return FilteringLogObserver(textFileLogObserver(stream or sys.stdout), [predicate])
