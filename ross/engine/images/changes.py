# -*- test-case-name: ross.test.test_image_units -*-
"""
The Dockerfile instructions `ross import --change` applies to a config:
CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL
(docker's list, without ONBUILD).
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Sequence

from ross.errors import InvalidArgument

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR", "STOPSIGNAL")

Change = tuple[str, str]


def parse_changes(changes: Sequence[str]) -> list[Change]:
    """
    (instruction, arguments) pairs; InvalidArgument for an instruction
    import does not take, as docker says it.
    """
    out = []
    for change in changes:
        text = change.strip()
        if not text:
            continue
        word, _, rest = text.partition(" ")
        instruction = word.upper()
        if instruction not in ALLOWED:
            raise InvalidArgument(f"{word} is not a valid change command")
        rest = rest.strip()
        if not rest:
            raise InvalidArgument(f"{instruction} requires at least one argument")
        out.append((instruction, rest))
    return out


def _exec_form(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(rest)
    except ValueError as e:
        raise InvalidArgument(f"{instruction} {rest}: {e}")
    if "=" not in words[0]:
        # The legacy form: "ENV KEY value with spaces".
        key, _, value = rest.partition(" ")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{instruction} names must be KEY=VALUE: {word!r}")
        pairs.append((key, value))
    return pairs


def apply_changes(config: dict[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    """
    The OCI "config" object C{config} with C{changes} applied, in order.
    """
    c = dict(config)
    for instruction, rest in changes:
        if instruction == "CMD":
            c["Cmd"] = _exec_form(rest)
        elif instruction == "ENTRYPOINT":
            c["Entrypoint"] = _exec_form(rest)
        elif instruction == "ENV":
            env = [e for e in c.get("Env") or []]
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            c["Env"] = env
        elif instruction == "LABEL":
            labels = dict(c.get("Labels") or {})
            labels.update(_pairs(rest, "LABEL"))
            c["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(c.get("ExposedPorts") or {})
            for port in rest.split():
                ports[port if "/" in port else port + "/tcp"] = {}
            c["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            volumes = dict(c.get("Volumes") or {})
            paths = rest.split()
            if rest.startswith("["):
                try:
                    parsed = json.loads(rest)
                except (ValueError, RecursionError):
                    parsed = None
                if not isinstance(parsed, list):
                    raise InvalidArgument(f"VOLUME takes paths or a JSON list of paths: {rest!r}")
                paths = [str(p) for p in parsed]
            for v in paths:
                volumes[v] = {}
            c["Volumes"] = volumes
        elif instruction == "USER":
            c["User"] = rest
        elif instruction == "WORKDIR":
            c["WorkingDir"] = rest
        elif instruction == "STOPSIGNAL":
            c["StopSignal"] = rest
    return c
