"""
How a client reaches the daemon: the global options every ``ross`` command
and ``ross-tui`` take (-H, TLS files, token), from flags and the
environment.
"""

from __future__ import annotations

import os


class Globals:
    """
    Connection settings from flags and the environment.
    """

    def __init__(self) -> None:
        self.host = os.environ.get("ROSS_HOST") or "unix:///run/ross/ross.sock"
        self.tls_ca = os.environ.get("ROSS_TLS_CA") or None
        self.tls_cert = os.environ.get("ROSS_TLS_CERT") or None
        self.tls_key = os.environ.get("ROSS_TLS_KEY") or None
        self.token = os.environ.get("ROSS_TOKEN") or None


_VALUED = {"-H": "host", "--host": "host", "--tls-ca": "tls_ca", "--tls-cert": "tls_cert",
           "--tls-key": "tls_key", "--token": "token"}


def parse_globals(argv: list[str]) -> tuple[Globals, list[str]]:
    """
    Split leading global options from the command and its arguments.
    Raises L{UsageError} for an unknown or incomplete option.
    """
    g = Globals()
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[i]
            setattr(g, _VALUED[name], value)
        elif arg in ("-v", "--version", "-h", "--help"):
            return g, argv[i:]
        else:
            raise UsageError(f"unknown flag: {name}")
        i += 1
    return g, argv[i:]


class UsageError(Exception):
    pass
