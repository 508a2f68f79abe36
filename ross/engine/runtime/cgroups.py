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

# Not imported at run time: the shim's start pays for every import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Sequence

    from ross.engine.runtime.wire import CgroupGroup, Resources

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


def plan(parent: str, container_id: str, mountinfo: str = "/proc/self/mountinfo") -> list[CgroupGroup]:
    """
    The directories a container's cgroups are, one per hierarchy, as dicts
    (C{path}, C{version}, C{controllers}, C{mount}, C{options}): plain
    data, so the shim can record it and the daemon remove it.
    """
    rel = os.path.join(parent.strip("/"), container_id) if parent.strip("/") else container_id
    groups: list[CgroupGroup] = []
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


def _has(group: CgroupGroup, controller: str) -> bool:
    return controller in group["controllers"]


def create(groups: list[CgroupGroup], resources: Resources, privileged: bool = False,
           devices: Sequence[str] = ()) -> None:
    """
    Make every directory and write the limits of C{resources} (memory,
    memory_swap, nano_cpus, cpu_shares, pids_limit; 0 = unlimited) and the
    device allow-list: the defaults and C{devices}' rules ("c 1:5 rwm").
    Limits the host cannot enforce raise CgroupError.
    """
    for group in groups:
        _make_dirs(group, resources)
    for group in groups:
        if group["version"] == 1:
            _devices_v1(group, privileged, devices)
    update(groups, resources)


def make_v2(groups: list[CgroupGroup], resources: Resources) -> str | None:
    """
    The v2 group's directory made (with its controllers handed down, the
    first step of L{create}) for a process to be born in it: its path, or
    None without a v2 group. CgroupError as L{create}'s.
    """
    for group in groups:
        if group["version"] == 2:
            _make_dirs(group, resources)
            return group["path"]
    return None


def update(groups: list[CgroupGroup], resources: Resources) -> None:
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


def _make_dirs(group: CgroupGroup, resources: Resources) -> None:
    mount, path = group["mount"], group["path"]
    # v2: limits in the leaf need the controllers enabled in every group
    # above it, top down: the kernel refuses (ENOENT) a controller that
    # the parent does not hand down. A level that already existed gets
    # them too (a start cut short may have made it and written nothing).
    enable = [c for c in V2_LIMITED if _has(group, c)] if group["version"] == 2 else []
    if enable:
        _hand_down(mount, enable)
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
        if group["version"] == 1 and _has(group, "cpuset"):
            _inherit_cpuset(parent, current)
            if current != path:
                _clone_to_children(current)
        if enable and current != path:
            _hand_down(current, enable)


def _hand_down(directory: str, controllers: list[str]) -> None:
    """
    Have v2 group C{directory} hand C{controllers} down to its children,
    writing only those it does not yet: every write to
    cgroup.subtree_control makes the kernel walk all the groups below, so
    a start would cost more with each container running.
    """
    path = os.path.join(directory, "cgroup.subtree_control")
    try:
        have = set(_read(path).split())
    except OSError:
        have = set()
    missing = [c for c in controllers if c not in have]
    if missing:
        _write(path, " ".join("+" + c for c in missing))


def _clone_to_children(group: str) -> None:
    """
    Have the kernel give each new child of v1 cpuset group C{group} its
    cpus and mems as it makes it (cgroup.clone_children), so that
    L{_inherit_cpuset} finds them there: written by hand, each container's
    would be checked against all its siblings' and make the scheduler
    rebuild its domains, a start costing more with each container running.
    """
    path = os.path.join(group, "cgroup.clone_children")
    try:
        if _read(path).strip() != "1":
            _write(path, "1")
    except (OSError, CgroupError):
        # Only slower: the children's are written by hand.
        pass


def _inherit_cpuset(parent: str, group: str) -> None:
    """
    Give a v1 cpuset group without cpus or mems its parent's, so tasks can
    join it (the kernel refuses them with ENOSPC). Not only a group this
    call made: another start may have made it a moment ago and not yet
    written them, or been cut short in between.
    """
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(group, name)).strip():
            _write(os.path.join(group, name), _read(os.path.join(parent, name)).strip() or "\n")


def _limits_v1(group: CgroupGroup, r: Resources) -> None:
    path = group["path"]
    if _has(group, "memory") and r.get("memory"):
        _memory_v1(path, r["memory"], r.get("memory_swap", 0))
    if _has(group, "memory") and r.get("memory_reservation"):
        _write(os.path.join(path, "memory.soft_limit_in_bytes"), str(r["memory_reservation"]))
    if _has(group, "memory") and r.get("oom_kill_disable"):
        _write(os.path.join(path, "memory.oom_control"), "1")
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


def _hugetlb(group: CgroupGroup, r: Resources) -> None:
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


def _cpuset(group: CgroupGroup, r: Resources) -> None:
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


def _devices_v1(group: CgroupGroup, privileged: bool, devices: Sequence[str]) -> None:
    path = group["path"]
    if _has(group, "devices"):
        if privileged:
            _write(os.path.join(path, "devices.allow"), "a")
        else:
            _write(os.path.join(path, "devices.deny"), "a")
            for rule in (*DEFAULT_DEVICES, *devices):
                _write(os.path.join(path, "devices.allow"), rule)


def _limits_v2(group: CgroupGroup, r: Resources) -> None:
    path = group["path"]
    if _has(group, "memory") and r.get("memory_reservation"):
        _write(os.path.join(path, "memory.low"), str(r["memory_reservation"]))
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


def join(groups: list[CgroupGroup], born_in_v2: bool = False) -> None:
    """
    Move the calling process, which must have one thread (a child just
    forked), into every group; into all but the v2 one when it was born
    there (C{born_in_v2}: L{linux.fork_into_cgroup}).

    A write to a group's C{cgroup.procs} takes the kernel's global
    threadgroup lock, and the first to take it in a while waits out an RCU
    grace period: 7-20 ms here, on every container start and exec. A
    thread moving itself takes no such lock, so in v1 hierarchies the
    caller writes 0 to C{tasks}: its one thread is the whole process.
    cgroup v2 has no such way for a domain group; there it is born in the
    group, or writes C{cgroup.procs}.
    """
    for group in groups:
        if group["version"] == 1:
            _write(os.path.join(group["path"], "tasks"), "0")
        elif not born_in_v2:
            _write(os.path.join(group["path"], "cgroup.procs"), "0")


def _freezer(groups: list[CgroupGroup]) -> CgroupGroup:
    for group in groups:
        if group["version"] == 1 and _has(group, "freezer"):
            return group
    for group in groups:
        if group["version"] == 2 and os.path.exists(os.path.join(group["path"], "cgroup.freeze")):
            return group
    raise CgroupError("pausing needs the freezer cgroup, which this host lacks")


def freeze(groups: list[CgroupGroup], frozen: bool, timeout: float = 10.0) -> None:
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


def oom_killed(groups: list[CgroupGroup]) -> bool:
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


def stats(groups: list[CgroupGroup]) -> dict[str, int]:
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


def procs(groups: list[CgroupGroup]) -> set[int]:
    """
    PIDs (host namespace) of every process in the container's groups and
    their children.
    """
    found: set[int] = set()
    for group in groups:
        found |= _procs_under(group["path"])
    return found


def _procs_under(top: str) -> set[int]:
    found: set[int] = set()
    for path in _subtree(top):
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


def remove(groups: list[CgroupGroup], timeout: float = 5.0) -> None:
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
                    _kill_all(_procs_under(path))
                    time.sleep(0.002)


#: A v1 memory limit this large is no limit.
_UNLIMITED = 1 << 62


def _numbers(text: str) -> dict[str, int]:
    """
    C{key value} lines (memory.stat, cpu.stat, cpuacct.stat) as a dict.
    """
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            found[key] = int(value)
        except ValueError:
            continue
    return found


def counters(groups: list[CgroupGroup]) -> dict[str, int]:
    """
    The detailed counters of the container's groups, for the CRI's
    metrics: CPU time (cpu_usage_ns, cpu_user_ns, cpu_system_ns), CFS
    periods (nr_periods, nr_throttled, throttled_ns), limits (cpu_shares,
    cfs_period_us, memory_limit, memsw_limit and pids_max, 0 for none),
    memory (memory_usage, memory_max_usage, cache, rss, mapped_file, swap,
    kernel, inactive_file, failcnt, oom_kill, pgfault, pgmajfault). What
    the host does not account is left out.
    """
    out: dict[str, int] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for g in groups:
        path = g["path"]
        for controller, reader in _V1_READERS if g["version"] == 1 else _V2_READERS:
            if g["version"] == 1 and not _has(g, controller):
                continue
            try:
                reader(lambda name: _read(os.path.join(path, name)), out, ticks)
            except (OSError, ValueError):
                continue
    return out


def _count_cpuacct_v1(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    out["cpu_usage_ns"] = int(read("cpuacct.usage"))
    stat = _numbers(read("cpuacct.stat"))
    out["cpu_user_ns"] = stat.get("user", 0) * 1_000_000_000 // ticks
    out["cpu_system_ns"] = stat.get("system", 0) * 1_000_000_000 // ticks


def _count_cpu_v1(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    stat = _numbers(read("cpu.stat"))
    out.update(nr_periods=stat.get("nr_periods", 0), nr_throttled=stat.get("nr_throttled", 0),
               throttled_ns=stat.get("throttled_time", 0))
    out["cpu_shares"] = int(read("cpu.shares"))
    out["cfs_period_us"] = int(read("cpu.cfs_period_us"))


def _limit(value: str) -> int:
    value = value.strip()
    if value == "max":
        return 0
    number = int(value)
    return 0 if number >= _UNLIMITED else number


def _count_memory_v1(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    out["memory_usage"] = int(read("memory.usage_in_bytes"))
    out["memory_max_usage"] = int(read("memory.max_usage_in_bytes"))
    out["failcnt"] = int(read("memory.failcnt"))
    out["memory_limit"] = _limit(read("memory.limit_in_bytes"))
    stat = _numbers(read("memory.stat"))
    for key in ("cache", "rss", "mapped_file", "swap", "inactive_file", "pgfault", "pgmajfault"):
        out[key] = stat.get(f"total_{key}", stat.get(key, 0))
    out["oom_kill"] = _numbers(read("memory.oom_control")).get("oom_kill", 0)
    for name, key in (("memory.memsw.limit_in_bytes", "memsw_limit"), ("memory.kmem.usage_in_bytes", "kernel")):
        try:
            out[key] = _limit(read(name))
        except OSError:
            pass


def _count_pids(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    out["pids_max"] = _limit(read("pids.max"))


def _count_cpu_v2(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    stat = _numbers(read("cpu.stat"))
    if "usage_usec" in stat and "cpu_usage_ns" not in out:
        out.update(cpu_usage_ns=stat["usage_usec"] * 1000, cpu_user_ns=stat.get("user_usec", 0) * 1000,
                   cpu_system_ns=stat.get("system_usec", 0) * 1000)
    if "nr_periods" in stat:
        out.update(nr_periods=stat["nr_periods"], nr_throttled=stat.get("nr_throttled", 0),
                   throttled_ns=stat.get("throttled_usec", 0) * 1000)
        out["cfs_period_us"] = int(read("cpu.max").split()[1])


def _count_memory_v2(read: Callable[[str], str], out: dict[str, int], ticks: int) -> None:
    out["memory_usage"] = int(read("memory.current"))
    out["memory_limit"] = _limit(read("memory.max"))
    stat = _numbers(read("memory.stat"))
    out.update(cache=stat.get("file", 0), rss=stat.get("anon", 0), mapped_file=stat.get("file_mapped", 0),
               inactive_file=stat.get("inactive_file", 0), kernel=stat.get("kernel", 0),
               pgfault=stat.get("pgfault", 0), pgmajfault=stat.get("pgmajfault", 0))
    events = _numbers(read("memory.events"))
    out.update(failcnt=events.get("max", 0), oom_kill=events.get("oom_kill", 0))
    for name, key in (("memory.peak", "memory_max_usage"), ("memory.swap.current", "swap")):
        try:
            out[key] = int(read(name))
        except OSError:
            pass


_V1_READERS: tuple[tuple[str, Callable[[Callable[[str], str], dict[str, int], int], None]], ...] = (
    ("cpuacct", _count_cpuacct_v1), ("cpu", _count_cpu_v1), ("memory", _count_memory_v1), ("pids", _count_pids))
_V2_READERS: tuple[tuple[str, Callable[[Callable[[str], str], dict[str, int], int], None]], ...] = (
    ("cpu", _count_cpu_v2), ("memory", _count_memory_v2), ("pids", _count_pids))


def block_io(groups: list[CgroupGroup]) -> tuple[tuple[str, str, int, int], ...]:
    """
    (device "major:minor", operation, bytes, count) of the block I/O the
    container's groups accounted; empty where the host accounts none.
    """
    found: dict[tuple[str, str], list[int]] = {}
    for g in groups:
        p = g["path"]
        try:
            if g["version"] == 1 and _has(g, "blkio"):
                for index, name in enumerate(("blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced")):
                    for line in _read(os.path.join(p, name)).splitlines():
                        parts = line.split()
                        if len(parts) == 3 and ":" in parts[0]:
                            found.setdefault((parts[0], parts[1]), [0, 0])[index] = int(parts[2])
            elif g["version"] == 2 and os.path.exists(os.path.join(p, "io.stat")):
                for line in _read(os.path.join(p, "io.stat")).splitlines():
                    device, *fields = line.split()
                    values = dict(field.partition("=")[::2] for field in fields)
                    found[(device, "Read")] = [int(values.get("rbytes", 0)), int(values.get("rios", 0))]
                    found[(device, "Write")] = [int(values.get("wbytes", 0)), int(values.get("wios", 0))]
        except (OSError, ValueError):
            continue
    return tuple((device, operation, size, count) for (device, operation), (size, count) in sorted(found.items()))
