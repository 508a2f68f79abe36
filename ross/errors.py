# -*- test-case-name: ross.test.test_bridge -*-
"""
Domain errors of the Ross engine.

The engine raises these; it never imports grpc. The bridge
(L{ross.protocols.bridge}) turns each class into a gRPC status code in one
place. Messages name the object and the problem: "No such container: web1".
"""

from __future__ import annotations

import errno
import sys


class RossError(Exception):
    """
    Base of every error the engine reports to a client on purpose.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(RossError):
    """The request is malformed: a bad name, reference, flag or value."""


class NotFound(RossError):
    """The named object does not exist."""


class AlreadyExists(RossError):
    """An object with that name or key exists already."""


class FailedPrecondition(RossError):
    """The object is not in a state that allows the operation."""


class Aborted(RossError):
    """A concurrent change conflicted with this one; retrying may work."""


class PermissionDenied(RossError):
    """The caller may not do this (a registry refused access, say)."""


class Unauthenticated(RossError):
    """Credentials are missing or wrong."""


class ResourceExhausted(RossError):
    """A limit was hit: disk space, a stream buffer, open streams."""


class Unavailable(RossError):
    """A service Ross depends on (a registry, the daemon itself) is not there."""


class DeadlineExceeded(RossError):
    """The operation did not finish in time."""


class Unimplemented(RossError):
    """The operation is part of the API but not built yet."""


class DataLoss(RossError):
    """Stored data is corrupt: a blob that does not match its digest."""


def disk_full(error: BaseException) -> bool:
    """
    Whether C{error} says the daemon's disk is full: ENOSPC or EDQUOT from
    the kernel, or SQLite's SQLITE_FULL ("database or disk is full").
    """
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # Without sqlite3 imported, no error can be SQLite's.
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(error, sqlite3.OperationalError):
        return bool(getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)
    return False
