"""
docker's image inspect C{Config}: every field docker shows, not only those
an image's OCI config sets, so that templates such as
C{{{.Config.Hostname}}} or C{{{.Config.Env}}} find them. Shared by the CLI
and the Docker API (stdlib only).
"""

from __future__ import annotations

from typing import Any

#: docker's fields, with the values it shows when an image leaves them out.
#: Lists and maps are empty rather than null: a template prints docker's
#: nil ones as "[]" and "map[]", which only these give.
_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": [], "Cmd": [],
    "Image": "", "Volumes": {}, "WorkingDir": "", "Entrypoint": [], "OnBuild": [], "Labels": {},
}


def inspect_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """C{config} (an OCI image config's C{config}) with docker's fields filled in."""
    filled = {key: value.copy() if isinstance(value, (list, dict)) else value for key, value in _DEFAULTS.items()}
    filled.update((key, value) for key, value in (config or {}).items() if value is not None)
    return filled
