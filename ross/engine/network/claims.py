# -*- test-case-name: ross.test.integration.test_network -*-
"""
One daemon per bridge and nftables table: a daemon holds the names of its
own while it runs, and a second one given the same is refused at start
rather than taking them from under the first. And one daemon at a time
choosing a subnet for a new network (L{lock_subnets}).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import time
from typing import Sequence

from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.protocol import Protocol, ServerFactory

from ross.errors import FailedPrecondition


#: Held by a daemon while it chooses a subnet from the host's routes and
#: makes the bridge that routes it: another daemon doing the same meanwhile
#: waits, then finds the first one's route. A file's lock: the host's, across
#: network namespaces too, and let go when its holder dies. In a directory
#: of root's own: in the world-writable /run/lock another user could make
#: the file first, and hold it or have root's open refused.
SUBNET_LOCK = "/run/ross/subnets.lock"


def lock_subnets(path: str = SUBNET_LOCK, timeout: float = 10.0) -> int | None:
    """
    Wait for the host's subnet lock (blocking); the descriptor holding it
    (close it to let go), or None after C{timeout} seconds or when the
    file cannot be opened: a holder that hangs does not stop every other
    daemon's networks.
    """
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.005)


def claim_all(wanted: Sequence[tuple[str, str]]) -> list[socket.socket]:
    """
    L{claim} each (what, name) of C{wanted} (blocking: it may ask the
    holder); none held unless all are.
    """
    held: list[socket.socket] = []
    try:
        for what, name in wanted:
            held.append(claim(what, name))
    except BaseException:
        for s in held:
            s.close()
        raise
    return held


def claim(what: str, name: str) -> socket.socket:
    """
    Hold C{what} C{name} (the bridge, the nftables table) for this daemon
    while it runs: a listening abstract unix socket, per network namespace
    as the bridge and the table are, gone with the process and leaving no
    file. FailedPrecondition, naming the holder, while another daemon holds
    it.
    """
    address = f"\0ross-{what.replace(' ', '-')}-{name}"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        held.bind(address)
        held.listen(64)
        return held
    except OSError as e:
        held.close()
        if e.errno != errno.EADDRINUSE:
            raise
    raise FailedPrecondition(
        f"{what} {name} is in use by another Ross daemon{_holder(address)}: stop that daemon, "
        "or give this one a --bridge-name and --nft-table of its own")


class _Answered(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


def answer_probes(reactor: IReactorSocket, held: Sequence[socket.socket]) -> list[IListeningPort]:
    """
    Accept (and close at once) the connections on the C{held} claims: a
    daemon refused at start connects to learn who holds a name
    (L{_holder}); left in the backlog, those connections would fill it
    after a few dozen, and the next would be told no pid.
    """
    factory = ServerFactory()
    factory.protocol = _Answered
    factory.noisy = False
    ports = []
    for s in held:
        # The reactor's copy shares the descriptor's flags: an accept with
        # nothing left to take must not block.
        s.setblocking(False)
        ports.append(reactor.adoptStreamPort(s.fileno(), socket.AF_UNIX, factory))
    return ports


def _holder(address: str) -> str:
    """
    " (pid N, root DIR)" of the daemon listening on C{address}, as far as
    it can be told.
    """
    deadline = time.monotonic() + 1
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1)
        try:
            probe.connect(address)
            pid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            break
        except BlockingIOError:
            # Its backlog is full for the moment (others asking at once):
            # the holder takes them off it (L{answer_probes}).
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.01)
        except OSError:
            return ""
        finally:
            probe.close()
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return f" (pid {pid})"
    root = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--root"), "")
    root = root or next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--root=")), "")
    return f" (pid {pid}, root {root})" if root else f" (pid {pid})"
