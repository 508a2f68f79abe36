# -*- test-case-name: ross.test.test_server -*-
"""
API addresses: ``unix:///path`` and ``tcp://HOST:PORT``, shared by the daemon
and the CLI (so this module imports nothing heavy).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit

from ross.errors import InvalidArgument

DEFAULT_LISTEN = "unix:///run/ross/ross.sock"


class Listener(NamedTuple):
    """
    One address to serve on or connect to. (A NamedTuple rather than attrs:
    the CLI imports this, and every millisecond of its start-up counts.)
    """

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def is_loopback(self) -> bool:
        if self.scheme == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def grpc_address(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_listen(address: str) -> Listener:
    """
    Parse a C{--listen} / C{-H} address. Bare absolute paths are unix sockets.
    """
    if address.startswith("/"):
        address = "unix://" + address
    parts = urlsplit(address)
    if parts.scheme == "unix":
        path = parts.netloc + parts.path
        if not path.startswith("/"):
            raise InvalidArgument(f"invalid address {address!r}: unix socket path must be absolute")
        return Listener("unix", path=path)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise InvalidArgument(f"invalid address {address!r}: expected tcp://HOST:PORT")
        return Listener("tcp", host=parts.hostname, port=port)
    raise InvalidArgument(f"invalid address {address!r}: use unix:///path or tcp://HOST:PORT")
