# -*- test-case-name: ross.test.integration.test_runtime -*-
"""
The container's side of the shim: code that runs in a child the shim
forked, sets up the container around itself and execs the command.

L{run_init} is the container's PID 1 (the shim unshared the PID namespace
before forking it): it joins the cgroups, unshares the mount, UTS, IPC and
network namespaces, mounts the root filesystem and /proc, /dev, /sys,
/etc/{hostname,hosts,resolv.conf}, bind and tmpfs mounts, masks kernel
paths, pivots, then tells the shim it is ready and waits for "go" before
it execs (so clients can attach before the first byte of output).
L{run_exec} joins a running container (cgroups, then namespaces) for an
exec session. Both end in L{_become}: user, capabilities, no_new_privs,
stdio, the seccomp filter the daemon compiled, exec.

Talking to the shim: a SOCK_SEQPACKET socket, C{b"R"} when ready (with the
PTY master attached when there is a TTY), C{b"E<code> <message>"} on
failure (code 125, 126 or 127), and nothing at all on success: the socket
is close-on-exec, so the shim reads EOF once the command runs.

Stdlib only, and every module needed is imported before the fork: after
pivot_root the host's Python library is out of reach.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import socket
import stat
import struct

from ross.engine.runtime import cgroups, linux
from ross.engine.runtime.linux import (
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME, mount,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# docker's masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))

_PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC, "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
}

# statvfs flags -> the mount flags a read-only remount must keep.
_KEEP_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, linux.MS_NOATIME), (os.ST_NODIRATIME, linux.MS_NODIRATIME),
               (os.ST_RELATIME, linux.MS_RELATIME))


class StartError(Exception):
    """
    The container's process could not be started; C{code} is docker's exit
    status for it (125 runtime failure, 126 cannot invoke, 127 not found).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- paths


def secure_join(root: str, path: str) -> str:
    """
    C{path} resolved inside C{root} as if C{root} were "/": symlinks are
    followed, but neither they nor ".." lead out of it.
    """
    queue = [p for p in path.split("/") if p]
    current: list[str] = []
    links = 0
    while queue:
        part = queue.pop(0)
        if part == ".":
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root + "/" + "/".join(current + [part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            current.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise StartError(125, f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            queue = [p for p in target.split("/") if p] + queue
        else:
            current.append(part)
    return root + "/" + "/".join(current) if current else root


def _mkdirs(path: str) -> None:
    os.makedirs(path, 0o755, exist_ok=True)


def _touch(path: str) -> None:
    if not os.path.exists(path):
        _mkdirs(os.path.dirname(path))
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _kept_flags(path: str) -> int:
    vfs = os.statvfs(path)
    flags = 0
    for st_flag, ms_flag in _KEEP_FLAGS:
        if vfs.f_flag & st_flag:
            flags |= ms_flag
    return flags


def _remount_ro(path: str) -> None:
    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags(path))


# ---------------------------------------------------------------- set-up


def resolv_conf_for(host_content: str, network: str) -> str:
    """
    The container's resolv.conf from the host's: as it is with the host's
    network, else without loopback name servers (unreachable from another
    namespace), and docker's public fallbacks when none is left.
    """
    if network == "host":
        return host_content
    lines = []
    servers = 0
    for line in host_content.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if fields[1].startswith("127.") or fields[1] == "::1":
                continue
            servers += 1
        lines.append(line)
    if not servers:
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"



def _mount_rootfs(spec: dict, root: str) -> None:  # type: ignore[type-arg]
    if not spec["rootfs"]:
        raise StartError(125, "no root filesystem mounts in the spec")
    for m in spec["rootfs"]:
        target = secure_join(root, m["target"]) if m["target"] not in ("", "/") else root
        flags, data = linux.mount_options(m["options"])
        if m["type"] == "bind" or flags & MS_BIND:
            mount(m["source"], target, None, MS_BIND | (flags & MS_REC) | MS_REC)
            if flags & MS_RDONLY:
                _remount_ro(target)
        else:
            mount(m["source"], target, m["type"], flags, data or None)
    # pivot_root refuses a new root under a shared mount; nothing here is.
    mount(None, root, None, MS_PRIVATE | MS_REC)


def _mount_dev(root: str) -> None:
    dev = secure_join(root, "/dev")
    _mkdirs(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    for name, target in _DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _mount_system(root: str, privileged: bool) -> None:
    proc = secure_join(root, "/proc")
    _mkdirs(proc)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_ = secure_join(root, "/sys")
    _mkdirs(sys_)
    mount("sysfs", sys_, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY))


def _mount_etc(spec: dict, root: str, state_dir: str) -> None:  # type: ignore[type-arg]
    resolv = spec["resolv_conf"]
    if resolv is None:
        try:
            with open("/etc/resolv.conf") as f:
                resolv = resolv_conf_for(f.read(), spec["network"])
        except OSError:
            resolv = resolv_conf_for("", spec["network"])
    files = {"hostname": (spec["hostname"] or spec["id"][:12]) + "\n", "hosts": spec["hosts"],
             "resolv.conf": resolv}
    for name, content in files.items():
        source = f"{state_dir}/{name}"
        with open(source, "w") as f:
            f.write(content)
        target = secure_join(root, "/etc/" + name)
        _touch(target)
        mount(source, target, None, MS_BIND)
        mount(None, target, None, MS_PRIVATE)


def _mount_user(spec: dict, root: str) -> None:  # type: ignore[type-arg]
    # Parents before children, as docker sorts them.
    for m in sorted(spec["mounts"], key=lambda m: len([p for p in m["target"].split("/") if p])):
        target = secure_join(root, m["target"])
        if m["type"] == "bind":
            source = m["source"]
            if not os.path.exists(source):
                raise StartError(125, f"invalid mount config for type \"bind\": bind source path does not exist: {source}")
            if os.path.isdir(source):
                _mkdirs(target)
            else:
                _touch(target)
            mount(source, target, None, MS_BIND | MS_REC)
            mount(None, target, None, _PROPAGATION.get(m.get("propagation") or "rprivate", MS_PRIVATE | MS_REC))
            if m.get("readonly"):
                _remount_ro(target)
        elif m["type"] == "tmpfs":
            _mkdirs(target)
            opts = [o for o in m.get("options", ()) if o]
            if m.get("size"):
                opts.append(f"size={m['size']}")
            opts.append(f"mode={m.get('mode') or 0o1777:o}")
            flags, data = linux.mount_options(opts)
            mount("tmpfs", target, "tmpfs", flags | MS_NOSUID | MS_NODEV | (MS_RDONLY if m.get("readonly") else 0), data)
        else:
            raise StartError(125, f"unknown mount type {m['type']!r} for {m['target']}")


def mount_storage(spec: dict, root: str) -> None:  # type: ignore[type-arg]
    """
    The container's root filesystem and bind mounts (volumes) on C{root},
    read-only where the spec says so, without /proc, /dev, /sys, tmpfs or
    the runtime's /etc files: its files as ``ross cp`` sees them while it
    is not running (a tmpfs holds nothing then; docker's cp copies under
    its mount point too).
    """
    _mount_rootfs(spec, root)
    _mount_user(dict(spec, mounts=[m for m in spec["mounts"] if m["type"] == "bind"]), root)
    if spec["readonly"]:
        _remount_ro(root)


def _mask(root: str) -> None:
    for path in MASKED_PATHS:
        target = root + path
        try:
            st = os.stat(target)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            mount("tmpfs", target, "tmpfs", MS_RDONLY)
        else:
            mount(root + "/dev/null", target, None, MS_BIND)
    for path in READONLY_PATHS:
        target = root + path
        if not os.path.exists(target):
            continue
        mount(target, target, None, MS_BIND | MS_REC)
        _remount_ro(target)


def _open_pty(root: str, console: bool) -> tuple[int, int]:
    """
    A PTY of the container's own devpts instance: (master, slave), the slave
    also bind-mounted on /dev/console for the main process.
    """
    master = os.open(root + "/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, linux.TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, linux.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if console:
        number = struct.unpack("I", fcntl.ioctl(master, linux.TIOCGPTN, b"\0\0\0\0"))[0]
        _touch(root + "/dev/console")
        mount(f"{root}/dev/pts/{number}", root + "/dev/console", None, MS_BIND)
    return master, slave


def _loopback_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), linux.SIOCGIFFLAGS, ifr + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s.fileno(), linux.SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | linux.IFF_UP) + b"\0" * 22)
    finally:
        s.close()


def _pivot(root: str) -> None:
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    os.fchdir(new)
    # pivot_root(".", ".") stacks the old root under the new one, so no
    # put_old directory is needed (and a read-only root works).
    linux.pivot_root(".", ".")
    os.fchdir(old)
    mount(None, ".", None, MS_SLAVE | MS_REC)
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    os.close(old)
    os.close(new)


# ---------------------------------------------------------------- users


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(user: str, extra_groups: list[str], passwd: str = "/etc/passwd",
                 group: str = "/etc/group") -> tuple[int, int, list[int], str]:
    """
    (uid, gid, supplementary gids, home) of a docker user string ("", "name",
    "uid", "name:group", "uid:gid") in the container's passwd and group files.
    """
    name, _, grp = (user or "0").partition(":")
    users = [e for e in _entries(passwd) if len(e) >= 7]
    groups = [e for e in _entries(group) if len(e) >= 4]
    entry = next((e for e in users if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in users if e[2] == name), None)
        uid, gid, home, login = int(name), 0, "/", ""
        if entry is not None:
            gid, home, login = int(entry[3]), entry[5], entry[0]
    elif entry is None:
        raise StartError(125, f"unable to find user {name}: no matching entries in passwd file")
    else:
        uid, gid, home, login = int(entry[2]), int(entry[3]), entry[5], entry[0]
    if grp:
        gid = _group_id(grp, groups)
    supplementary = [int(g[2]) for g in groups if login and login in g[3].split(",")]
    for extra in extra_groups:
        supplementary.append(_group_id(extra, groups))
    return uid, gid, sorted(set(supplementary)), home or "/"


def _group_id(grp: str, groups: list[list[str]]) -> int:
    entry = next((g for g in groups if g[0] == grp), None)
    if entry is not None:
        return int(entry[2])
    if grp.isdigit():
        return int(grp)
    raise StartError(125, f"unable to find group {grp}: no matching entries in group file")


def _environment(process: dict, home: str, hostname: str) -> dict[str, str]:  # type: ignore[type-arg]
    env: dict[str, str] = {}
    for item in process["env"]:
        key, sep, value = item.partition("=")
        if key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    if process["tty"]:
        env.setdefault("TERM", "xterm")
    return env


def _lookup(arg0: str, path: str) -> str:
    if "/" in arg0:
        return arg0
    for d in path.split(":"):
        candidate = os.path.join(d or ".", arg0)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise StartError(127, f'exec: "{arg0}": executable file not found in $PATH')


# ---------------------------------------------------------------- the end


def _report(sock: socket.socket, error: StartError) -> None:
    try:
        sock.send(b"E%d %s" % (error.code, error.message.encode("utf-8", "replace")))
    except OSError:
        pass


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _capabilities(process: dict) -> int:  # type: ignore[type-arg]
    return linux.container_capabilities(bool(process.get("privileged")), process.get("cap_add", ()),
                                        process.get("cap_drop", ()), linux.bounding_set())


def _seccomp(program: tuple[bytes, int]) -> None:
    try:
        linux.seccomp_filter(*program)
    except OSError as e:
        raise StartError(125, f"loading the seccomp filter failed: {e.strerror}") from None


def _become(process: dict, hostname: str, stdio: tuple[int, int, int], tty: bool,  # type: ignore[type-arg]
            sock: socket.socket) -> None:
    """
    Turn this process into the container's command: stdio, user, groups,
    capabilities, no_new_privs, seccomp, then exec. Never returns.
    """
    uid, gid, groups, home = resolve_user(process["user"], list(process.get("additional_gids", ())))
    seccomp = process.get("seccomp")
    program = (bytes.fromhex(seccomp["code"]), int(seccomp["flags"])) if seccomp else None
    no_new_privs = bool(process.get("no_new_privileges"))
    env = _environment(process, home, hostname)
    cwd = process["cwd"] or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise StartError(125, f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}") from None
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(stdio):
        if fd > 2:
            os.close(fd)
    if tty:
        fcntl.ioctl(0, linux.TIOCSCTTY, 0)
    if program is not None and not no_new_privs:
        # Without no_new_privs, installing a filter takes CAP_SYS_ADMIN:
        # before the capabilities go (runc's order).
        _seccomp(program)
    caps = _capabilities(process)
    for cap in range(len(linux.CAPABILITIES)):
        if not caps & (1 << cap) and linux.prctl(linux.PR_CAPBSET_READ, cap) == 1:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # Root gets its capabilities back from the bounding set at exec; other
    # users have none left after setuid, as with docker.
    if uid == 0:
        linux.capset(caps, caps, 0)
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    os.umask(0o022)
    args = list(process["args"])
    if not args:
        raise StartError(125, "no command specified")
    executable = _lookup(args[0], env["PATH"])
    if program is not None and no_new_privs:
        # As late as possible: none of the set-up above is filtered.
        _seccomp(program)
    try:
        os.execve(executable, args, env)
    except OSError as e:
        code = 127 if e.errno == 2 else 126 if e.errno in (1, 8, 13, 21) else 125
        raise StartError(code, f'exec: "{args[0]}": {e.strerror.lower() if e.strerror else e}') from None


def _reaper(child: int) -> None:
    """
    PID 1 with init: forward every signal to the command, reap every
    zombie, exit with the command's status (128+N for a signal).
    """
    def forward(sig: int, frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def run_init(spec: dict, state_dir: str, root: str, groups: list, sock: socket.socket,  # type: ignore[type-arg]
             stdio: tuple[int, int, int] | None) -> None:
    """
    The container's PID 1 after the shim's fork. Never returns.
    """
    try:
        _reset_signals()
        os.umask(0)
        os.setsid()
        privileged = bool(spec["process"].get("privileged"))
        cgroups.create(groups, spec["resources"], privileged)
        cgroups.join(groups)
        network = spec["network"]
        flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if network not in ("host",) and not network.startswith("/"):
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        if network.startswith("/"):
            fd = os.open(network, os.O_RDONLY | os.O_CLOEXEC)
            linux.setns(fd, linux.CLONE_NEWNET)
            os.close(fd)
        elif network != "host":
            _loopback_up()
        mount(None, "/", None, MS_REC | MS_SLAVE)
        _mount_rootfs(spec, root)
        _mount_system(root, privileged)
        _mount_dev(root)
        _mount_etc(spec, root, state_dir)
        _mount_user(spec, root)
        if not privileged:
            _mask(root)
        master = -1
        if spec["process"]["tty"]:
            master, slave = _open_pty(root, True)
            stdio = (slave, slave, slave)
        cwd = spec["process"]["cwd"] or "/"
        _mkdirs(secure_join(root, cwd))
        _pivot(root)
        if spec["readonly"]:
            _remount_ro("/")
        hostname = spec["hostname"] or spec["id"][:12]
        if network != "host":
            socket.sethostname(hostname)
            if spec.get("domainname"):
                linux.setdomainname(spec["domainname"])
        if master >= 0:
            sock.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
            os.close(master)
        else:
            sock.send(b"R")
        if sock.recv(1) != b"G":
            os._exit(125)
        assert stdio is not None
        if spec.get("init"):
            child = os.fork()
            if child:
                sock.close()
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                for fd in set(stdio):
                    if fd > 2:
                        os.close(fd)
                _reaper(child)
            os.setsid()
        _become(spec["process"], hostname, stdio, bool(spec["process"]["tty"]), sock)
    except StartError as e:
        _report(sock, e)
    except OSError as e:
        _report(sock, StartError(125, _describe(e)))
    except Exception as e:  # everything must reach the shim, never a traceback
        _report(sock, StartError(125, f"{type(e).__name__}: {e}"))
    os._exit(125)


def run_exec(process: dict, hostname: str, ns_fds: list[tuple[int, int]], groups: list,  # type: ignore[type-arg]
             sock: socket.socket, stdio: tuple[int, int, int] | None, root_pid: int) -> None:
    """
    An exec session's process after the shim's fork (already in the
    container's PID namespace): join the cgroups and namespaces, then
    become the command. Never returns.
    """
    try:
        _reset_signals()
        os.setsid()
        cgroups.join(groups)
        for fd, nstype in ns_fds:
            linux.setns(fd, nstype)
            os.close(fd)
        if process["tty"]:
            master, slave = _open_pty("", False)
            stdio = (slave, slave, slave)
            sock.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
            os.close(master)
        else:
            sock.send(b"R")
        if sock.recv(1) != b"G":
            os._exit(125)
        assert stdio is not None
        _become(process, hostname, stdio, bool(process["tty"]), sock)
    except StartError as e:
        _report(sock, e)
    except OSError as e:
        _report(sock, StartError(125, _describe(e)))
    except Exception as e:
        _report(sock, StartError(125, f"{type(e).__name__}: {e}"))
    os._exit(125)


def _describe(e: OSError) -> str:
    if e.filename:
        return f"{e.strerror or e}: {e.filename}"
    return str(e.strerror or e)

