# -*- test-case-name: ross.test.test_server -*-
"""
API addresses: ``unix:///path`` and ``tcp://HOST:PORT``, shared by the daemon
and the CLI (so this module imports nothing heavy).
"""

# No "from __future__ import annotations": NamedTuple would make each
# field's annotation, a string then, a typing.ForwardRef, whose compile()
# is the CLI's first and sets up the interpreter's AST types (about 1 ms).
from typing import NamedTuple

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
        import ipaddress

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
    if address.startswith("unix://") and not any(c in address for c in "?#\t\r\n"):
        # What urlsplit would make of it (netloc and path are all after
        # the scheme), without importing urllib.parse and ipaddress: 2.5 ms
        # of every command's start on the default address.
        path = address[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidArgument(f"invalid address {address!r}: unix socket path must be absolute")
        return Listener("unix", path=path)
    from urllib.parse import urlsplit

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


def parse_stream_address(text: str) -> tuple[str, int]:
    """
    HOST[:PORT] (IPv6 in brackets) of --cri-stream-address; port 0 (the
    default) is any free port. Loopback only: see L{ross.cri.streaming}.
    """
    import ipaddress

    host, port = text, "0"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidArgument(f"invalid --cri-stream-address {text!r}")
        port = rest[1:] or "0"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise InvalidArgument(f"invalid --cri-stream-address {text!r}: use IP[:PORT]")
    if not 0 <= number < 65536:
        raise InvalidArgument(f"invalid --cri-stream-address {text!r}: bad port")
    if not address.is_loopback:
        raise InvalidArgument(f"--cri-stream-address {text}: the streaming server speaks plain HTTP and its "
                              "tokens are credentials: loopback addresses only")
    return str(address), number
