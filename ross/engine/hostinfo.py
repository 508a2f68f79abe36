# -*- test-case-name: ross.test.test_hostinfo -*-
"""
Facts about the host that the engine reports and decides by: kernel, OS,
cgroup layout.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any, Mapping

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices", "hugetlb")


def cgroup_controllers(mountinfo: str) -> dict[str, str]:
    """
    Map each cgroup controller to "v1" or "v2" according to where it is
    mounted, from the text of /proc/self/mountinfo. Hybrid hosts mount most
    controllers as v1 and a few on the v2 hierarchy: decide per controller.
    """
    found: dict[str, str] = {}
    v2_roots: list[str] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fstype, _source, options = (right.split() + ["", "", ""])[:3]
        mountpoint = left.split()[4]
        if fstype == "cgroup":
            for opt in options.split(","):
                if opt in V1_CONTROLLERS:
                    found[opt] = "v1"
        elif fstype == "cgroup2":
            v2_roots.append(mountpoint)
    for root in v2_roots:
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                names = f.read().split()
        except OSError:
            continue
        for name in names:
            found.setdefault(name, "v2")
    return found


def cgroup_mode(controllers: Mapping[str, str]) -> str:
    """
    "v1", "v2" or "hybrid" for a controller map from L{cgroup_controllers}.
    """
    versions = set(controllers.values())
    if versions == {"v2"}:
        return "v2"
    if versions == {"v1"}:
        return "v1"
    if not versions:
        return "none"
    return "hybrid"


def read_mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def operating_system() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def memory_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def security_options() -> list[str]:
    """
    docker's SecurityOptions: a seccomp profile (the builtin one) when the
    host can filter system calls, and no_new_privs, which containers get
    unless they opt out.
    """
    from ross.engine.runtime import seccomp

    options = ["name=seccomp,profile=builtin"] if seccomp.available() else []
    return options + ["name=no-new-privileges"]


def host_facts() -> dict[str, Any]:
    """
    What the daemon reports about the host in its info, by the field
    names of ross.v1's InfoResponse (blocking: reads /proc and /etc).
    """
    controllers = cgroup_controllers(read_mountinfo())
    return {
        "cgroup_version": cgroup_mode(controllers),
        "cgroup_controllers": controllers,
        "kernel_version": platform.release(),
        "operating_system": operating_system(),
        "architecture": platform.machine(),
        "ncpu": os.cpu_count() or 1,
        "mem_total": memory_total(),
        "name": socket.gethostname(),
        "security_options": security_options(),
    }
