"""
Daemon logging set-up: twisted.logger to stdout (or twistd's --logfile or
--syslog), filtered by --log-level.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def observer_for(level: str, logfile: str | None = None, syslog_prefix: str | None = None) -> ILogObserver:
    """
    An observer that drops events below C{level} and writes the rest where
    twistd would have: to syslog under C{syslog_prefix} when given, else as
    text to C{logfile} (twistd's rotating log file; None or C{"-"}: stdout).
    """
    sink: ILogObserver
    if syslog_prefix is not None:
        from twisted.python.syslog import SyslogObserver

        sink = LegacyLogObserverWrapper(SyslogObserver(syslog_prefix).emit)  # type: ignore[arg-type]
    elif logfile and logfile != "-":
        from twisted.python.logfile import LogFile

        sink = textFileLogObserver(LogFile.fromFullPath(logfile))
    else:
        sink = textFileLogObserver(sys.stdout)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    return FilteringLogObserver(sink, [predicate])
