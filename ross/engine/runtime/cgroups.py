# -*- test-case-name: ross.test.integration.test_runtime_security -*-
"""
A container's cgroups, decided per controller: on a hybrid host each v1
hierarchy gets a directory C{<mount>/<parent>/<id>}, and the v2 hierarchy
one too (it holds the controllers v1 lacks, and gives C{cgroup.kill}); on a
pure v2 host there is a single directory.

Stdlib only: the shim creates the groups and joins them before the
container's command runs; the daemon removes leftovers (in a thread).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices", "hugetlb", "io")

# docker's default device allow-list (moby oci/devices_linux.go): mknod of
# any device, but only these may be opened, so CAP_MKNOD gives no access
# to the host's disks.
DEFAULT_DEVICES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
)

CFS_PERIOD_US = 100_000

#: The v2 controllers Ross writes limits of, enabled down to the leaf.
V2_LIMITED = ("memory", "pids", "cpu", "cpuset", "hugetlb")

#: A huge page size as the hugetlb files name it ("2MB").
_PAGE_SIZE = re.compile(r"[0-9]{1,7}[KMG]B")


class CgroupError(Exception):
    """
    A cgroup could not be created, limited, joined or removed.
    """


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, int, tuple[str, ...], str]]:
    """
    Every cgroup hierarchy of this host as (mount point, version,
    controllers, mount options: what mounts the same hierarchy again). A v1
    hierarchy without a known controller (name=systemd) is left out.
    """
    found = []
    with open(mountinfo, "rb") as f:
        for raw in f:
            fields = raw.decode("utf-8", "surrogateescape").split()
            sep = fields.index("-")
            fstype, super_options = fields[sep + 1], fields[sep + 3]
            point = fields[4].replace("\\040", " ")
            if fstype == "cgroup":
                ctrls = tuple(c for c in super_options.split(",") if c in CONTROLLERS)
                if ctrls:
                    options = ",".join(o for o in super_options.split(",") if o not in ("rw", "ro"))
                    found.append((point, 1, ctrls, options))
            elif fstype == "cgroup2":
                try:
                    with open(os.path.join(point, "cgroup.controllers")) as c:
                        ctrls = tuple(c.read().split())
                except OSError:
                    ctrls = ()
                found.append((point, 2, ctrls, ""))
    return found


def plan(parent: str, container_id: str, mountinfo: str = "/proc/self/mountinfo") -> list[dict]:  # type: ignore[type-arg]
    """
    The directories a container's cgroups are, one per hierarchy, as dicts
    (C{path}, C{version}, C{controllers}, C{mount}, C{options}): plain
    data, so the shim can record it and the daemon remove it.
    """
    rel = os.path.join(parent.strip("/"), container_id) if parent.strip("/") else container_id
    groups = []
    seen = set()
    for point, version, ctrls, options in hierarchies(mountinfo):
        if point in seen:
            continue
        seen.add(point)
        groups.append({"path": os.path.join(point, rel), "version": version,
                       "controllers": list(ctrls), "mount": point, "options": options})
    return groups


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"cannot open {path}: {e.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _has(group: dict, controller: str) -> bool:  # type: ignore[type-arg]
    return controller in group["controllers"]


def create(groups: list[dict], resources: dict, privileged: bool = False) -> None:  # type: ignore[type-arg]
    """
    Make every directory and write the limits of C{resources} (memory,
    memory_swap, nano_cpus, cpu_shares, pids_limit; 0 = unlimited) and the
    device allow-list. Limits the host cannot enforce raise CgroupError.
    """
    for group in groups:
        _make_dirs(group, resources)
    for group in groups:
        if group["version"] == 1:
            _devices_v1(group, privileged)
    update(groups, resources)


def update(groups: list[dict], resources: dict) -> None:  # type: ignore[type-arg]
    """
    Write the limits of C{resources} (as L{create}'s; 0 = not set) into
    existing groups: at creation, and for docker update on a running
    container.
    """
    for group in groups:
        if group["version"] == 1:
            _limits_v1(group, resources)
        else:
            _limits_v2(group, resources)
    wanted = [("memory", resources.get("memory")), ("pids", resources.get("pids_limit")),
              ("cpu", resources.get("nano_cpus") or resources.get("cpu_shares")),
              ("cpuset", resources.get("cpuset_cpus") or resources.get("cpuset_mems")),
              ("hugetlb", resources.get("hugepage_limits"))]
    for controller, value in wanted:
        if value and not any(_has(g, controller) for g in groups):
            raise CgroupError(f"the {controller} cgroup controller is not available on this host")


def _make_dirs(group: dict, resources: dict) -> None:  # type: ignore[type-arg]
    mount, path = group["mount"], group["path"]
    # v2: limits in the leaf need the controllers enabled in every group
    # above it, top down: the kernel refuses (ENOENT) a controller that
    # the parent does not hand down. A level that already existed gets
    # them too (a start cut short may have made it and written nothing).
    enable = " ".join("+" + c for c in V2_LIMITED if _has(group, c)) if group["version"] == 2 else ""
    if enable:
        _write(os.path.join(mount, "cgroup.subtree_control"), enable)
    parts = os.path.relpath(path, mount).split(os.sep)
    current = mount
    for part in parts:
        parent, current = current, os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {current}: {e.strerror}") from None
        else:
            if group["version"] == 1 and _has(group, "cpuset"):
                # A new cpuset group has no cpus or mems: copy the
                # parent's so tasks can join it.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    _write(os.path.join(current, name), _read(os.path.join(parent, name)).strip() or "\n")
        if enable and current != path:
            _write(os.path.join(current, "cgroup.subtree_control"), enable)


def _limits_v1(group: dict, r: dict) -> None:  # type: ignore[type-arg]
    path = group["path"]
    if _has(group, "memory") and r.get("memory"):
        _memory_v1(path, r["memory"], r.get("memory_swap", 0))
    if _has(group, "cpu"):
        if r.get("nano_cpus"):
            _write(os.path.join(path, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            quota = max(1000, r["nano_cpus"] * CFS_PERIOD_US // 1_000_000_000)
            _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
        if r.get("cpu_shares"):
            _write(os.path.join(path, "cpu.shares"), str(r["cpu_shares"]))
    if _has(group, "pids") and r.get("pids_limit"):
        _write(os.path.join(path, "pids.max"), _pids(r["pids_limit"]))
    _cpuset(group, r)
    _hugetlb(group, r)


def _hugetlb(group: dict, r: dict) -> None:  # type: ignore[type-arg]
    """
    The huge page limits, per page size: v1's limit_in_bytes (and the
    reservations' limit, where the kernel has it, as runc), v2's max.
    """
    if not _has(group, "hugetlb"):
        return
    names = ("limit_in_bytes", "rsvd.limit_in_bytes") if group["version"] == 1 else ("max", "rsvd.max")
    for size, limit in r.get("hugepage_limits") or ():
        if not (isinstance(size, str) and _PAGE_SIZE.fullmatch(size)) or type(limit) is not int:  # noqa: E721
            raise CgroupError(f"invalid huge page limit {size!r}: {limit!r}")
        for name in names:
            path = os.path.join(group["path"], f"hugetlb.{size}.{name}")
            if name == names[0] or os.path.exists(path):
                _write(path, str(limit))


def _cpuset(group: dict, r: dict) -> None:  # type: ignore[type-arg]
    """
    cpuset.cpus and cpuset.mems as asked (the kernel refuses what the
    parent group does not have).
    """
    if not _has(group, "cpuset"):
        return
    for key in ("cpuset_cpus", "cpuset_mems"):
        if r.get(key):
            _write(os.path.join(group["path"], key.replace("_", ".")), r[key])


def _memory_v1(path: str, memory: int, swap: int) -> None:
    """
    memory.limit_in_bytes and, where swap accounting is on, the
    memory+swap limit (docker's --memory-swap: 0 is twice the memory, -1
    unlimited). The kernel refuses any moment where the memory limit is
    above memory+swap's, so the write that makes room goes first: memsw
    when it grows (raising both in an update), memory when memsw shrinks.
    """
    limit = os.path.join(path, "memory.limit_in_bytes")
    memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
    if not os.path.exists(memsw):
        _write(limit, str(memory))
        return
    total = -1 if swap == -1 else (swap or 2 * memory)
    grows = total == -1 or total >= int(_read(memsw).strip() or 0)
    writes = [(memsw, total), (limit, memory)] if grows else [(limit, memory), (memsw, total)]
    for name, value in writes:
        _write(name, str(value))


def _pids(limit: int) -> str:
    """pids.max of docker's --pids-limit: -1 (after a limit, in an update) is none."""
    return "max" if limit < 0 else str(limit)


def _devices_v1(group: dict, privileged: bool) -> None:  # type: ignore[type-arg]
    path = group["path"]
    if _has(group, "devices"):
        if privileged:
            _write(os.path.join(path, "devices.allow"), "a")
        else:
            _write(os.path.join(path, "devices.deny"), "a")
            for rule in DEFAULT_DEVICES:
                _write(os.path.join(path, "devices.allow"), rule)


def _limits_v2(group: dict, r: dict) -> None:  # type: ignore[type-arg]
    path = group["path"]
    if _has(group, "memory") and r.get("memory"):
        _write(os.path.join(path, "memory.max"), str(r["memory"]))
        swap = r.get("memory_swap", 0)
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            _write(os.path.join(path, "memory.swap.max"),
                   "max" if swap == -1 else str((swap or 2 * r["memory"]) - r["memory"]))
    if _has(group, "cpu"):
        if r.get("nano_cpus"):
            quota = max(1000, r["nano_cpus"] * CFS_PERIOD_US // 1_000_000_000)
            _write(os.path.join(path, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
        if r.get("cpu_shares"):
            weight = 1 + ((r["cpu_shares"] - 2) * 9999) // 262142
            _write(os.path.join(path, "cpu.weight"), str(min(10000, max(1, weight))))
    if _has(group, "pids") and r.get("pids_limit"):
        _write(os.path.join(path, "pids.max"), _pids(r["pids_limit"]))
    _cpuset(group, r)
    _hugetlb(group, r)


def join(groups: list[dict], pid: int = 0) -> None:  # type: ignore[type-arg]
    """
    Move process C{pid} (0: the caller) into every group.
    """
    for group in groups:
        _write(os.path.join(group["path"], "cgroup.procs"), str(pid))


def _freezer(groups: list[dict]) -> dict:  # type: ignore[type-arg]
    for group in groups:
        if group["version"] == 1 and _has(group, "freezer"):
            return group
    for group in groups:
        if group["version"] == 2 and os.path.exists(os.path.join(group["path"], "cgroup.freeze")):
            return group
    raise CgroupError("pausing needs the freezer cgroup, which this host lacks")


def freeze(groups: list[dict], frozen: bool, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    """
    Freeze or thaw every process of the container, returning once the
    kernel reports it done.
    """
    group = _freezer(groups)
    deadline = time.monotonic() + timeout
    if group["version"] == 1:
        state = os.path.join(group["path"], "freezer.state")
        want = "FROZEN" if frozen else "THAWED"
        while True:
            _write(state, want)
            if _read(state).strip() == want:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"the container did not reach {want}")
            time.sleep(0.001)
    _write(os.path.join(group["path"], "cgroup.freeze"), "1" if frozen else "0")
    events = os.path.join(group["path"], "cgroup.events")
    while f"frozen {int(frozen)}" not in _read(events):
        if time.monotonic() > deadline:
            raise CgroupError("the container did not freeze" if frozen else "the container did not thaw")
        time.sleep(0.001)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def oom_killed(groups: list[dict]) -> bool:  # type: ignore[type-arg]
    """
    Whether the kernel's OOM killer killed a process of the container.
    """
    for group in groups:
        if not _has(group, "memory"):
            continue
        name = "memory.oom_control" if group["version"] == 1 else "memory.events"
        try:
            if _counter(_read(os.path.join(group["path"], name)), "oom_kill") > 0:
                return True
        except OSError:
            pass
    return False


def stats(groups: list[dict]) -> dict:  # type: ignore[type-arg]
    """
    Counters of the container: cpu_usage_ns, memory_usage (without the
    inactive file cache, as docker shows it), memory_limit, pids,
    block_read_bytes, block_write_bytes.
    """
    out = {"cpu_usage_ns": 0, "memory_usage": 0, "memory_limit": 0, "pids": 0,
           "block_read_bytes": 0, "block_write_bytes": 0}
    for g in groups:
        p = g["path"]
        try:
            if g["version"] == 1:
                if _has(g, "cpuacct"):
                    out["cpu_usage_ns"] = int(_read(os.path.join(p, "cpuacct.usage")))
                if _has(g, "memory"):
                    stat = _read(os.path.join(p, "memory.stat"))
                    usage = int(_read(os.path.join(p, "memory.usage_in_bytes")))
                    out["memory_usage"] = max(0, usage - _counter(stat, "total_inactive_file"))
                    out["memory_limit"] = int(_read(os.path.join(p, "memory.limit_in_bytes")))
                if _has(g, "pids"):
                    out["pids"] = int(_read(os.path.join(p, "pids.current")))
                if _has(g, "blkio"):
                    for line in _read(os.path.join(p, "blkio.throttle.io_service_bytes")).splitlines():
                        parts = line.split()
                        if len(parts) == 3 and parts[1] in ("Read", "Write"):
                            key = "block_read_bytes" if parts[1] == "Read" else "block_write_bytes"
                            out[key] += int(parts[2])
            else:
                if _has(g, "cpu") or os.path.exists(os.path.join(p, "cpu.stat")):
                    out["cpu_usage_ns"] = out["cpu_usage_ns"] or _counter(_read(os.path.join(p, "cpu.stat")), "usage_usec") * 1000
                if _has(g, "memory"):
                    usage = int(_read(os.path.join(p, "memory.current")))
                    out["memory_usage"] = max(0, usage - _counter(_read(os.path.join(p, "memory.stat")), "inactive_file"))
                    limit = _read(os.path.join(p, "memory.max")).strip()
                    out["memory_limit"] = 0 if limit == "max" else int(limit)
                if _has(g, "pids"):
                    out["pids"] = int(_read(os.path.join(p, "pids.current")))
                if _has(g, "io"):
                    for line in _read(os.path.join(p, "io.stat")).splitlines():
                        for field in line.split()[1:]:
                            k, _, v = field.partition("=")
                            if k == "rbytes":
                                out["block_read_bytes"] += int(v)
                            elif k == "wbytes":
                                out["block_write_bytes"] += int(v)
        except (OSError, ValueError):
            continue
    return out


def _subtree(path: str) -> list[str]:
    """
    C{path} and every cgroup under it, deepest first (a privileged
    container, or one given CAP_SYS_ADMIN, can make child cgroups).
    """
    found = []
    for top, dirs, _files in os.walk(path, topdown=False):
        found.append(top)
    return found


def procs(groups: list[dict]) -> set[int]:  # type: ignore[type-arg]
    """
    PIDs (host namespace) of every process in the container's groups and
    their children.
    """
    found: set[int] = set()
    for group in groups:
        for path in _subtree(group["path"]):
            try:
                found.update(int(p) for p in _read(os.path.join(path, "cgroup.procs")).split())
            except OSError:
                pass
    return found


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove(groups: list[dict], timeout: float = 5.0) -> None:  # type: ignore[type-arg]
    """
    Kill whatever still runs in the groups or under them and remove every
    directory, deepest first (the parent stays). Missing directories are
    fine.
    """
    deadline = time.monotonic() + timeout
    left = [g for g in groups if os.path.isdir(g["path"])]
    if not left:
        return
    for group in left:
        kill = os.path.join(group["path"], "cgroup.kill")
        if group["version"] == 2 and os.path.exists(kill):
            try:
                _write(kill, "1")
            except CgroupError:
                pass
    pids = procs(left)
    if pids:
        _kill_all(pids)
        # A frozen task dies only once thawed; a child cgroup may have
        # been frozen on its own.
        for group in left:
            if group["version"] == 1 and _has(group, "freezer"):
                for path in _subtree(group["path"]):
                    try:
                        _write(os.path.join(path, "freezer.state"), "THAWED")
                    except CgroupError:
                        pass
            elif os.path.exists(os.path.join(group["path"], "cgroup.freeze")):
                for path in _subtree(group["path"]):
                    try:
                        _write(os.path.join(path, "cgroup.freeze"), "0")
                    except CgroupError:
                        pass
    for group in left:
        for path in _subtree(group["path"]):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from None
                    # Whatever was forked after the first round dies too.
                    _kill_all(procs([dict(group, path=path)]))
                    time.sleep(0.002)
