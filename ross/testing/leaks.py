"""
What a test may leave behind, checked: mounts, cgroups, processes, open
files, network devices, nftables tables and firewall rules.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def mounts_under(path: str | Path) -> list[str]:
    """
    Mount points at or below C{path} (symlinks resolved) in this mount
    namespace.
    """
    prefix = os.path.realpath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def fds_under(path: str | Path) -> list[str]:
    """
    What this process's open fds at or below C{path} name (" (deleted)"
    once removed). Not a count of fds: other tests' threads open and close
    theirs meanwhile.
    """
    prefix = os.fspath(path).rstrip("/")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target == prefix or target.startswith(prefix + "/") or target == prefix + " (deleted)":
            found.append(target)
    return found


def cgroups_under(parent: str) -> list[str]:
    """
    cgroup directories inside C{parent} in every hierarchy (a container's
    cgroups live at C{<hierarchy>/<parent>/<id>}).
    """
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        candidate = hierarchy / parent
        if candidate.is_dir():
            found += [str(p) for p in candidate.iterdir() if p.is_dir()]
    return found


def remove_cgroup_parent(parent: str) -> None:
    """
    Remove a test's (empty) cgroup parent from every hierarchy.
    """
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        try:
            os.rmdir(hierarchy / parent)
        except OSError:
            pass


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """
    Processes whose command line contains C{text} (shims name their state
    directory on theirs).
    """
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry), cmdline))
    return found


def network_links() -> set[str]:
    """
    Names of the network devices in this network namespace.
    """
    return set(os.listdir("/sys/class/net"))


def nft_tables() -> set[str]:
    """
    The nftables tables of the host, "family name".
    """
    from ross.engine.network import nft

    return set(nft.tables())


def firewall_rules_of(table: str) -> list[str]:
    """
    What the daemon whose nftables table is C{table} put in other firewall
    managers' chains (ross.engine.network.firewall): its iptables chains and
    its commented nftables rules.
    """
    import subprocess

    from ross.engine.network import firewall, nft

    found = []
    for item in nft.run_json([{"list": {"ruleset": None}}]).get("nftables", []):
        rule = item.get("rule", {})
        if str(rule.get("comment", "")).startswith(f"ross:{table}:"):
            found.append(f"{rule['family']} {rule['table']} {rule['chain']}: {rule['comment']}")
    chains = {firewall.iptables_chain(table, hook) for hook in ("forward", "input")}
    for backend, where in firewall.IPTABLES_BACKENDS.items():
        # Listing a legacy table that is not there would make it.
        if backend.endswith("-legacy") and not firewall.legacy_filter_loaded(where):
            continue
        saved = subprocess.run([f"{backend}-save", "-t", "filter"], capture_output=True, text=True, timeout=30).stdout
        found += [f"{backend}-save: {line}" for line in saved.splitlines() if any(c in line.split() for c in chains)]
    return found


def thaw(directory: str) -> None:
    """
    Thaw the frozen groups at and under C{directory} (v1 freezer.state,
    v2 cgroup.freeze); nothing where there is no freezer.
    """
    for sub, _, _ in os.walk(directory):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                with open(os.path.join(sub, name), "w") as f:
                    f.write(value)
            except OSError:
                pass


def sweep(base: str | Path, cgroup_parent: str) -> None:
    """
    Take away what a daemon rooted under C{base} left running after it was
    killed with its containers still up (a test that failed half-way, or
    one that let containers outlive their daemon): the containers'
    processes (through their cgroups), the shims (their command lines name
    their state directory under C{base}), the mounts under C{base}, and the
    cgroups under C{cgroup_parent}.
    """
    from ross.testing.mounts import unmount

    for _ in range(3):
        pids = {pid for pid, _ in processes_mentioning(str(base))}
        for directory in cgroups_under(cgroup_parent):
            # A paused container's processes take their SIGKILL only once
            # thawed: frozen, they would outlive the sweep (in D state).
            thaw(directory)
            for name in ("cgroup.procs", "tasks"):
                try:
                    with open(os.path.join(directory, name)) as f:
                        pids.update(int(line) for line in f if line.strip())
                except OSError:
                    pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for point in sorted(mounts_under(base), key=len, reverse=True):
        try:
            unmount(point)
        except OSError:
            pass
    for directory in sorted(cgroups_under(cgroup_parent), key=len, reverse=True):
        for sub, _, _ in sorted(os.walk(directory), key=lambda entry: len(entry[0]), reverse=True):
            try:
                os.rmdir(sub)
            except OSError:
                pass
    remove_cgroup_parent(cgroup_parent)
