# -*- test-case-name: ross.test.integration.test_direct -*-
"""
Direct channels of interactive sessions (SPEC 3): for a client on the
same host, the daemon hands the session's byte stream to the client, a
connection to the container's shim that the shim takes only that
session's input, resize and end of input from (L{ross.protocols.shimwire}).
The bytes never cross the daemon, and the session outlives it. ``cp``,
``load`` and ``import`` hand over their archive's pipe the same way (to
the copy helper, or the daemon's load thread), so it never crosses gRPC.

The RPC that asked for the channel (with the credentials every RPC needs)
gets a ticket: 32 random bytes, good once, for that session's channel
only, for L{TICKET_TTL} seconds. The client sends it and a newline to the
daemon's direct socket (C{direct.sock} beside ross.sock, as its mode) and
receives the channel's file descriptor (SCM_RIGHTS) with the byte C{k}, or
C{e} and a line saying why not. A ticket not redeemed in time closes its
channel, so a client that vanished frees it.
"""

from __future__ import annotations

import os
import secrets
import typing
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from ross.errors import ResourceExhausted
from ross.engine.fsutil import prepare_socket_path
from ross.protocols.bridge import CallInfo
from ross.v1 import common_pb2

#: Seconds a ticket is good for.
TICKET_TTL = 10.0
#: Tickets outstanding at most (each holds a connection to a shim).
MAX_TICKETS = 1000
#: Seconds a client of the direct socket has to send its ticket.
REDEEM_TIMEOUT = 5.0
#: The ticket's text: 64 hex digits.
TICKET_LENGTH = 64


class Channel(typing.Protocol):
    """
    What a ticket stands for: a connection to a shim's session, or one end
    of a pipe (a copy's, a load's).
    """

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class DirectChannels(Service):
    """
    The tickets outstanding and the socket they are redeemed on.
    """

    _log = Logger()

    def __init__(self, reactor: Any, path: str) -> None:
        self._reactor = reactor
        self.path = path
        self._tickets: dict[str, tuple[Channel, Any]] = {}
        self._port: IListeningPort | None = None
        #: Channels handed to their clients so far.
        self.handed = 0

    def startService(self) -> None:
        super().startService()
        prepare_socket_path(self.path)
        factory = Factory.forProtocol(_Redeem)
        factory.channels = self  # type: ignore[attr-defined]
        self._port = self._reactor.listenUNIX(self.path, factory, mode=0o660)
        os.chmod(self.path, 0o660)

    def stopService(self) -> Any:
        super().stopService()
        for ticket in list(self._tickets):
            self._drop(ticket)
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None

    def issue(self, channel: Channel) -> str:
        """
        A ticket for C{channel}, which this now holds until it is redeemed
        or expires.
        """
        if len(self._tickets) >= MAX_TICKETS:
            channel.close()
            raise ResourceExhausted("too many direct channels waiting for their clients")
        ticket = secrets.token_hex(TICKET_LENGTH // 2)
        timer = self._reactor.callLater(TICKET_TTL, self._expire, ticket)
        self._tickets[ticket] = (channel, timer)
        return ticket

    def serves(self, call: CallInfo) -> bool:
        """Whether C{call}'s client can use a channel: one on this host's unix socket."""
        return call.peer.startswith("unix:")

    def ticket(self, pipe: Channel) -> common_pb2.DirectTicket:
        """
        The C{DirectTicket} that hands C{pipe} (a copy's or a load's) to the
        client; C{pipe} is closed here when no ticket can be had.
        """
        return common_pb2.DirectTicket(direct_socket=self.path, ticket=self.issue(pipe))

    def _expire(self, ticket: str) -> None:
        if ticket in self._tickets:
            self._log.info("a direct channel's ticket expired unused; its channel is closed")
            self._tickets.pop(ticket)[0].close()

    def _drop(self, ticket: str) -> None:
        channel, timer = self._tickets.pop(ticket)
        if timer.active():
            timer.cancel()
        channel.close()

    def redeem(self, ticket: str) -> Channel | None:
        """
        The channel of C{ticket}, which stops being valid; None for a
        ticket that is unknown, used or expired.
        """
        entry = self._tickets.pop(ticket, None)
        if entry is None:
            return None
        channel, timer = entry
        if timer.active():
            timer.cancel()
        self.handed += 1
        return channel


class _Redeem(Protocol):
    """
    One client of the direct socket: a ticket line in, the channel out.
    """

    factory: Any
    _log = Logger()

    def connectionMade(self) -> None:
        self._buffer = b""
        self._channel: Channel | None = None
        self._timeout = self.factory.channels._reactor.callLater(REDEEM_TIMEOUT, self._refuse, "no ticket in time")

    def dataReceived(self, data: bytes) -> None:
        if self._channel is not None or not self._timeout.active():
            return
        self._buffer += data
        if b"\n" not in self._buffer:
            if len(self._buffer) > TICKET_LENGTH:
                self._refuse("not a ticket")
            return
        line = self._buffer.split(b"\n", 1)[0]
        try:
            ticket = line.decode("ascii")
        except UnicodeDecodeError:
            ticket = ""
        channel = self.factory.channels.redeem(ticket) if len(ticket) == TICKET_LENGTH else None
        if channel is None:
            self._refuse("unknown, used or expired ticket")
            return
        self._timeout.cancel()
        self._channel = channel
        transport = self._transport()
        transport.sendFileDescriptor(channel.fileno())
        transport.write(b"k")
        # Our copy closes once the descriptor went out (connectionLost).
        transport.loseConnection()

    def _transport(self) -> Any:
        """The connection's IUNIXTransport (it is one: see the factory)."""
        assert self.transport is not None
        return self.transport

    def _refuse(self, why: str) -> None:
        if self._timeout.active():
            self._timeout.cancel()
        self._log.warn("direct channel refused: {why}", why=why)
        transport = self._transport()
        transport.write(b"e" + why.encode() + b"\n")
        transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._timeout.active():
            self._timeout.cancel()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
