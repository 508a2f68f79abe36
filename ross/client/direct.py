"""
The client's end of a direct channel (SPEC 3; the daemon's end is
L{ross.services.direct}): a ticket from an interactive RPC's C{started}
frame, exchanged on the daemon's direct socket for the channel itself, a
connection to the session in the container's shim that speaks
L{ross.protocols.shimwire}'s STDIN, RESIZE and CLOSE_STDIN frames in, and
its output frames and exit event out. The CLI's sessions and the TUI's
panes both use it (L{ross.protocols.sessionframes} reads the shim's
frames as the gRPC stream's, for a client that handles both paths
alike). ``cp``, ``load
and ``import`` redeem their archive's pipe the same way (L{redeem_fd},
L{write_through}).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Callable

from ross.errors import RossError


class DirectError(RossError):
    """
    The daemon did not hand over a direct channel.
    """


def redeem(path: str, ticket: str) -> socket.socket:
    """
    The direct channel a ticket stands for, from the daemon's direct
    socket at C{path} (see L{ross.services.direct}).
    """
    channel = socket.socket(fileno=redeem_fd(path, ticket))
    channel.setblocking(False)
    return channel


def redeem_fd(path: str, ticket: str) -> int:
    """
    The file descriptor a ticket stands for (L{redeem}'s), as it came: a
    copy's pipe is not a socket.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(path)
            sock.sendall(ticket.encode() + b"\n")
            message, fds, _, _ = socket.recv_fds(sock, 512, 1)
        except OSError as e:
            raise DirectError(f"no direct channel from {path}: {e}") from None
    if not fds or not message.startswith(b"k"):
        for fd in fds:
            os.close(fd)
        raise DirectError(f"no direct channel: {message[1:].decode(errors='replace').strip() or 'refused'}")
    return fds[0]


def write_through(responses: Any, write: Callable[[int], int]) -> tuple[int, Any]:
    """
    The client's side of a call whose bytes go on a direct channel
    (CopyToDirect, LoadImagesDirect, ImportImageDirect): the pipe its first message's ticket
    stands for is redeemed, given to C{write} and closed; then the rest of
    the call's messages are read (an error the daemon reports is raised
    there). Returns what C{write} returned and the last message.

    A C{write} that fails cancels the call: what it wrote, cut short,
    changes nothing on the daemon's side.
    """
    first = next(responses, None)
    if first is None or first.WhichOneof("response") != "ticket":
        raise DirectError("the daemon sent no direct channel")
    fd = redeem_fd(first.ticket.direct_socket, first.ticket.ticket)
    written = 0
    try:
        written = write(fd)
    except BrokenPipeError:
        # The daemon stopped reading: its answer says why.
        pass
    except BaseException:
        responses.cancel()
        raise
    finally:
        os.close(fd)
    last = first
    for last in responses:
        pass
    return written, last


def send_all(source: int, fd: int, chunk: int = 1 << 20, advance: Callable[[int], object] | None = None) -> int:
    """
    Everything C{source} holds, into C{fd} (a direct channel's pipe),
    without a copy through this process when the kernel can (splice), and
    C{advance} told each part's size; the total.
    """
    total = 0
    try:
        while n := os.splice(source, fd, chunk):
            total += n
            if advance is not None:
                advance(n)
        return total
    except OSError as e:
        if e.errno != errno.EINVAL or total:
            raise
    # Neither a pipe nor a file, which splice takes (a terminal, some sockets).
    while data := os.read(source, chunk):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        total += len(data)
        if advance is not None:
            advance(len(data))
    return total
