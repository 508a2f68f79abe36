"""
The client's end of a direct channel (SPEC 3; the daemon's end is
L{ross.services.direct}): a ticket from an interactive RPC's C{started}
frame, exchanged on the daemon's direct socket for the channel itself, a
connection to the session in the container's shim that speaks
L{ross.protocols.shimwire}'s STDIN, RESIZE and CLOSE_STDIN frames in, and
its output frames and exit event out. The CLI's sessions and the TUI's
panes both use it.
"""

from __future__ import annotations

import os
import socket

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
    channel = socket.socket(fileno=fds[0])
    channel.setblocking(False)
    return channel
