# -*- test-case-name: ross.test.test_tui -*-
"""
The console's settings file, C{~/.config/ross/tui.toml} (or
C{$ROSS_TUI_CONFIG}): keys, and contexts (named daemons, each with its own
TLS files and token).

    [keys]
    stop = "k"                 # a binding's id = key(s), as Textual names them
    remove = "d,delete"

    [contexts.prod]
    host = "tcp://prod.example:2376"
    tls_ca = "/etc/ross/prod/ca.pem"
    tls_cert = "/etc/ross/prod/cert.pem"
    tls_key = "/etc/ross/prod/key.pem"
    token_file = "/etc/ross/prod/token"

    [contexts.local]
    host = "unix:///run/ross/ross.sock"

    # The daemons shown when no -H is given.
    hosts = ["local", "prod"]
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from ross.client.settings import Globals


class ConfigError(Exception):
    pass


def config_path() -> Path:
    return Path(os.environ.get("ROSS_TUI_CONFIG") or Path.home() / ".config" / "ross" / "tui.toml")


@attrs.frozen
class Context:
    """
    A daemon and the credentials for it.
    """

    name: str
    host: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None

    def settings(self, base: Globals) -> Globals:
        """
        C{base} (flags and environment) with this context's settings over it.
        """
        g = copy.copy(base)
        g.host = self.host
        for key in ("tls_ca", "tls_cert", "tls_key", "token"):
            value = getattr(self, key)
            if value is not None:
                setattr(g, key, value)
        return g


@attrs.frozen
class Config:
    keys: dict[str, str] = attrs.field(factory=dict)
    contexts: dict[str, Context] = attrs.field(factory=dict)
    hosts: tuple[str, ...] = ()


def _context(name: str, table: Any, where: Path) -> Context:
    if not isinstance(table, dict) or not isinstance(table.get("host"), str):
        raise ConfigError(f"{where}: context {name!r} needs a host (unix:///path or tcp://HOST:PORT)")
    token = table.get("token")
    if "token_file" in table:
        try:
            token = Path(str(table["token_file"])).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: context {name!r}: cannot read token_file: {e.strerror}") from None
    known = {"host", "tls_ca", "tls_cert", "tls_key", "token", "token_file"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: context {name!r}: unknown settings {', '.join(sorted(unknown))}")
    return Context(name, table["host"], table.get("tls_ca"), table.get("tls_cert"), table.get("tls_key"), token)


def load(path: Path | None = None) -> Config:
    """
    The settings; an absent file is no settings. ConfigError for a file
    that cannot be used, naming it.
    """
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = data.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(f"{path}: [keys] maps action names to key strings")
    contexts = {name: _context(name, table, path) for name, table in data.get("contexts", {}).items()}
    hosts = data.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{path}: hosts is a list of context names or addresses")
    return Config(keys=dict(keys), contexts=contexts, hosts=tuple(hosts))


def resolve_hosts(names: list[str], base: Globals, config: Config) -> list[tuple[str, Globals]]:
    """
    (label, settings) of every daemon to show: C{names} from -H (addresses
    or context names), else the config's hosts, else C{base}'s one host.
    """
    names = names or list(config.hosts)
    if not names:
        return [(base.host, base)]
    found = []
    for name in names:
        if name in config.contexts:
            found.append((name, config.contexts[name].settings(base)))
        elif "://" in name:
            g = copy.copy(base)
            g.host = name
            found.append((name, g))
        else:
            raise ConfigError(f"no such context: {name} (not in {config_path()}, and not an address)")
    return found
