"""
The client's side of a direct channel's pipe in tests (CopyToDirect,
LoadImagesDirect, ImportImageDirect), written by hand: as much as a test
wants, whole or cut short.
"""

from __future__ import annotations

import os
from typing import Any

import grpc

from ross.client.direct import redeem_fd


def open_pipe(stream: Any) -> tuple[int, Any]:
    """(blocking) The pipe of a direct call's first message (its ticket), redeemed; and the ticket."""
    ticket = next(stream).ticket
    return redeem_fd(ticket.direct_socket, ticket.ticket), ticket


def write_and_close(stream: Any, fd: int, data: bytes) -> tuple[list[Any], grpc.RpcError | None]:
    """
    (blocking) C{data} into C{fd}, which is then closed; the call's other
    messages, and the error it ended with (None when it succeeded).
    """
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    messages: list[Any] = []
    try:
        for message in stream:
            messages.append(message)
    except grpc.RpcError as e:
        return messages, e
    return messages, None
