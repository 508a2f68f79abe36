# -*- test-case-name: ross.test.test_commit_config -*-
"""
``ross commit``'s container half: the image config a container's settings
make, as docker's commit writes it.
"""

from __future__ import annotations

from typing import Any, Mapping

from ross.engine.containers.config import DEFAULT_PATH, ContainerConfig


def image_config(config: ContainerConfig, base: Mapping[str, Any]) -> dict[str, Any]:
    """
    The OCI "config" object of an image committed from a container with
    the effective C{config}, over the base image's C{base} "config".

    The container's Cmd, Entrypoint, Env, WorkingDir, User, Labels,
    ExposedPorts, Volumes, StopSignal and Healthcheck replace the base's;
    its other keys (Shell, OnBuild, ...) stay. What the daemon put in the
    effective config at create rather than the user or the image (HOSTNAME,
    TERM for a terminal, the default PATH, WorkingDir "/", StopSignal
    SIGTERM) is left out, as docker never stores it: a container of the
    new image gets it again at its own create.
    """
    out = dict(base or {})
    base_env = [str(e) for e in out.get("Env") or ()]
    base_keys = {e.partition("=")[0] for e in base_env}
    daemon_added = {f"HOSTNAME={config.hostname}"}
    if config.tty and "TERM" not in base_keys:
        daemon_added.add("TERM=xterm")
    if "PATH" not in base_keys:
        daemon_added.add(f"PATH={DEFAULT_PATH}")
    env = [e for e in config.env if e not in daemon_added]
    _set(out, "Env", env)
    _set(out, "Cmd", list(config.cmd or ()))
    _set(out, "Entrypoint", list(config.entrypoint or ()))
    working_dir = config.working_dir
    if working_dir == "/" and not out.get("WorkingDir"):
        working_dir = ""
    _set(out, "WorkingDir", working_dir)
    _set(out, "User", config.user)
    _set(out, "Labels", dict(config.labels))
    _set(out, "ExposedPorts", {port: {} for port in config.exposed_ports})
    _set(out, "Volumes", {volume: {} for volume in config.volumes})
    stop_signal = config.stop_signal
    if stop_signal == "SIGTERM" and not out.get("StopSignal"):
        stop_signal = ""
    _set(out, "StopSignal", stop_signal)
    health = config.healthcheck
    _set(out, "Healthcheck", health.to_json() if health is not None and health.test else None)
    return out


def created_by(config: ContainerConfig) -> str:
    """The history entry's "created_by": the container's Cmd, as docker."""
    return " ".join(config.cmd or ())


def _set(doc: dict[str, Any], key: str, value: Any) -> None:
    """An empty value drops the key, as docker's omitempty fields."""
    if value:
        doc[key] = value
    else:
        doc.pop(key, None)
