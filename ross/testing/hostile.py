# -*- test-case-name: ross.test.integration.test_containment -*-
"""
A hostile image's and a hostile root process's tools, for the containment
tests and ``bench/probes.py``:

    - L{PROBE_C}: one static C program, a subcommand per attack (files it
      can open for writing, its own fds, keyrings, a /proc scanner racing
      exec helpers), built by L{probe} and put in a root by L{add_probe};
    - L{REPORT}: a shell script printing what confines the container
      (/proc, /sys, /dev are real, kernel paths masked and read-only), read
      back by L{containment_problems};
    - host-side canaries (L{make_canary}, L{tree_state}) that the runtime
      must never touch, whatever an image's symlinks say;
    - keys planted in this process's keyrings (L{plant_key}), and cgroup
      clean-up for attacks that got out (L{remove_cgroup_tree}).

The probes only ever open host-sensitive files to see whether they could
write them; they never write.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from ross.testing.busybox import build_rootfs
from ross.testing.probes import compile_probe

PROBE = "rossprobe"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

PROBE_C = r"""
/* Ross's attack probe: one static binary, a subcommand per attack.
 *
 *   rossprobe writable PATH...   "PATH writable" if it opens for writing
 *                                (nothing is ever written), else "PATH refused ERRNO"
 *   rossprobe fds                "fd N TARGET" for every open fd but the
 *                                listing's own, then "cwd inside|outside PATH"
 *   rossprobe keys plant DESC    add user key DESC (possessor-only) to the
 *                                session keyring, print "planted SERIAL", wait
 *   rossprobe keys find [NAME SERIAL DESC]...
 *                                every way to reach a key: "session ok ID",
 *                                then "OP NAME ok|err ..." per attempt
 *   rossprobe race STOP PYDEV PYINO SECONDS COMM...
 *                                until file STOP exists (at most SECONDS),
 *                                scan /proc: what of a process whose comm is
 *                                none of COMM (a helper joining) can be
 *                                reached (exe-helper: its executable is the file
 *                                PYDEV:PYINO, the engine's helper binary), and
 *                                whether any process has a cwd,
 *                                root or fd outside this root
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* "inside" when walking ".." up from directory fd reaches this process's
   root, "outside" when it tops out in another tree. */
static const char *where(int fd)
{
    struct stat root, here, up;
    if (fd < 0 || stat("/", &root) < 0)
        return "unknown";
    int cur = dup(fd);
    for (int i = 0; i < 4096 && cur >= 0; i++) {
        if (fstat(cur, &here) < 0)
            break;
        if (here.st_dev == root.st_dev && here.st_ino == root.st_ino) {
            close(cur);
            return "inside";
        }
        int next = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        close(cur);
        cur = next;
        if (cur < 0 || fstat(cur, &up) < 0)
            break;
        if (up.st_dev == here.st_dev && up.st_ino == here.st_ino) {
            close(cur);
            return "outside";
        }
    }
    if (cur >= 0)
        close(cur);
    return "unknown";
}

static int cmd_writable(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            printf("%s writable\n", argv[i]);
            close(fd);
        } else {
            printf("%s refused %d\n", argv[i], errno);
        }
    }
    return 0;
}

static int cmd_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        printf("error %d\n", errno);
        return 1;
    }
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]) || atoi(e->d_name) == own)
            continue;
        char link[320], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        printf("fd %s %s\n", e->d_name, target);
    }
    closedir(d);
    char cwd[4096];
    ssize_t n = readlink("/proc/self/cwd", cwd, sizeof cwd - 1);
    cwd[n < 0 ? 0 : n] = 0;
    int here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    printf("cwd %s %s\n", where(here), cwd);
    return 0;
}

#define KEYCTL_GET_KEYRING_ID 0
#define KEYCTL_SETPERM 5
#define KEYCTL_DESCRIBE 6
#define KEYCTL_LINK 8
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11
#define KEY_SPEC_PROCESS_KEYRING -2
#define KEY_SPEC_SESSION_KEYRING -3
#define KEY_SPEC_USER_KEYRING -4
#define KEY_SPEC_USER_SESSION_KEYRING -5
#define KEY_POS_ALL 0x3f000000

static long keyctl(long op, long a, long b, long c, long d)
{
    return syscall(SYS_keyctl, op, a, b, c, d);
}

static void result(const char *op, const char *name, long r, const char *text)
{
    if (r < 0)
        printf("%s %s err %d\n", op, name, errno);
    else
        printf("%s %s ok %ld %s\n", op, name, r, text ? text : "");
}

static int cmd_keys(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[0], "plant")) {
        char payload[256];
        snprintf(payload, sizeof payload, "secret-%s", argv[1]);
        long key = syscall(SYS_add_key, "user", argv[1], payload, strlen(payload), KEY_SPEC_SESSION_KEYRING);
        if (key < 0) {
            printf("plant err %d\n", errno);
            return 1;
        }
        keyctl(KEYCTL_SETPERM, key, KEY_POS_ALL, 0, 0);
        printf("planted %ld\n", key);
        fflush(stdout);
        for (;;)
            pause();
    }
    if (argc < 1 || strcmp(argv[0], "find"))
        return 2;
    result("session", "-", keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0, 0), NULL);
    static const struct { const char *name; long id; } rings[] = {
        {"session", KEY_SPEC_SESSION_KEYRING}, {"user", KEY_SPEC_USER_KEYRING},
        {"user-session", KEY_SPEC_USER_SESSION_KEYRING}, {"process", KEY_SPEC_PROCESS_KEYRING},
    };
    for (int i = 1; i + 2 < argc; i += 3) {
        const char *name = argv[i];
        long serial = strtol(argv[i + 1], NULL, 10);
        const char *desc = argv[i + 2];
        char buf[512];
        long r = keyctl(KEYCTL_DESCRIBE, serial, (long)buf, sizeof buf - 1, 0);
        if (r >= 0)
            buf[r < (long)sizeof buf ? r : (long)sizeof buf - 1] = 0;
        result("describe", name, r, r >= 0 ? buf : NULL);
        result("read", name, keyctl(KEYCTL_READ, serial, (long)buf, sizeof buf - 1, 0), NULL);
        /* Into this process's own keyring, which dies with it. */
        result("link", name, keyctl(KEYCTL_LINK, serial, KEY_SPEC_PROCESS_KEYRING, 0, 0), NULL);
        for (unsigned j = 0; j < sizeof rings / sizeof rings[0]; j++) {
            char op[64];
            snprintf(op, sizeof op, "search-%s", rings[j].name);
            result(op, name, keyctl(KEYCTL_SEARCH, rings[j].id, (long)"user", (long)desc, 0), NULL);
        }
        result("request", name, syscall(SYS_request_key, "user", desc, NULL, 0), NULL);
    }
    return 0;
}

static char **own_comms;
static int n_own;
static dev_t py_dev;
static ino_t py_ino;
static char reported[512][48];
static int n_reported;
static int foreign_seen[4096];
static int n_foreign;

static void report(const char *kind, int pid, const char *comm, const char *extra)
{
    char key[48];
    snprintf(key, sizeof key, "%s %d", kind, pid);
    for (int i = 0; i < n_reported; i++)
        if (!strcmp(reported[i], key))
            return;
    if (n_reported < 512)
        strcpy(reported[n_reported++], key);
    printf("%s %d %s %s\n", kind, pid, comm, extra ? extra : "");
    fflush(stdout);
}

static int read_comm(int pid, char *comm, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    if (cfd < 0)
        return -1;
    ssize_t n = read(cfd, comm, size - 1);
    close(cfd);
    comm[n > 0 ? n : 0] = 0;
    comm[strcspn(comm, "\n")] = 0;
    return 0;
}

/* Whether process PID still has the name COMM: an access that succeeded
 * before it changed happened before its exec (exec renames, one way). */
static int unchanged(int pid, const char *comm)
{
    char now[64];
    return read_comm(pid, now, sizeof now) == 0 && !strcmp(now, comm);
}

static void examine(int pid)
{
    char path[64], comm[64] = "";
    if (read_comm(pid, comm, sizeof comm) < 0)
        return;
    int foreign = 1;
    for (int i = 0; i < n_own; i++)
        if (!strcmp(comm, own_comms[i]))
            foreign = 0;
    if (foreign) {
        int known = 0;
        for (int i = 0; i < n_foreign; i++)
            known |= foreign_seen[i] == pid;
        if (!known && n_foreign < 4096)
            foreign_seen[n_foreign++] = pid;
    }

    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && st.st_dev == py_dev && st.st_ino == py_ino)
            report("exe-helper", pid, comm, NULL);
        else if (foreign && unchanged(pid, comm))
            report("exe-open", pid, comm, NULL);
        close(fd);
    }
    /* Opened, never written: an executable in use refuses (ETXTBSY). */
    fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        report("exe-write", pid, comm, NULL);
        close(fd);
    }
    static const char *dirs[] = {"cwd", "root"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/proc/%d/%s", pid, dirs[i]);
        fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        char kind[32];
        if (!strcmp(where(fd), "outside")) {
            snprintf(kind, sizeof kind, "%s-outside", dirs[i]);
            report(kind, pid, comm, NULL);
        } else if (foreign && unchanged(pid, comm)) {
            snprintf(kind, sizeof kind, "%s-open", dirs[i]);
            report(kind, pid, comm, NULL);
        }
        close(fd);
    }
    /* Listing the numbers is the owner's (root's) right, as under docker;
     * opening one is what ptrace access guards. */
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!isdigit((unsigned char)e->d_name[0]))
                continue;
            char fdpath[320];
            snprintf(fdpath, sizeof fdpath, "/proc/%d/fd/%s", pid, e->d_name);
            fd = open(fdpath, O_PATH | O_CLOEXEC);
            if (fd < 0)
                continue;
            if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && !strcmp(where(fd), "outside"))
                report("fd-outside", pid, comm, e->d_name);
            else if (foreign && unchanged(pid, comm))
                report("fd-open", pid, comm, e->d_name);
            close(fd);
        }
        closedir(d);
    }
    if (foreign) {
        pid_t child = fork();
        if (child == 0)
            /* SEIZE never stops the tracee; the tracer's exit detaches. */
            _exit(ptrace(PTRACE_SEIZE, pid, 0, 0) == 0 && unchanged(pid, comm));
        int status;
        if (child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 1)
            report("ptrace", pid, comm, NULL);
    }
}

static int cmd_race(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    const char *stop = argv[0];
    py_dev = (dev_t)strtoull(argv[1], NULL, 10);
    py_ino = (ino_t)strtoull(argv[2], NULL, 10);
    time_t end = time(NULL) + atoi(argv[3]);
    own_comms = argv + 4;
    n_own = argc - 4;
    long scans = 0;
    pid_t self = getpid();
    printf("racing\n");
    fflush(stdout);
    while (access(stop, F_OK) != 0 && time(NULL) < end) {
        scans++;
        DIR *d = opendir("/proc");
        if (!d)
            return 1;
        struct dirent *e;
        while ((e = readdir(d)))
            if (isdigit((unsigned char)e->d_name[0]) && atoi(e->d_name) != self)
                examine(atoi(e->d_name));
        closedir(d);
    }
    printf("scans %ld foreign %d\n", scans, n_foreign);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "writable"))
        return cmd_writable(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "fds"))
        return cmd_fds();
    if (argc >= 2 && !strcmp(argv[1], "keys"))
        return cmd_keys(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "race"))
        return cmd_race(argc - 2, argv + 2);
    fprintf(stderr, "usage: rossprobe writable|fds|keys|race ...\n");
    return 2;
}
"""

#: What the race probe reports when a helper joining the container (or
#: anything outside it) was reachable.
RACE_FINDINGS = ("exe-helper", "exe-open", "exe-write", "cwd-outside", "cwd-open", "root-outside",
                 "root-open", "fd-open", "fd-outside", "ptrace")


def probe() -> Path:
    """The probe binary (built once per process)."""
    return compile_probe(PROBE, PROBE_C)


def add_probe(root: Path) -> Path:
    """Copy the probe to C{/rossprobe} in root filesystem C{root}."""
    target = root / PROBE
    shutil.copyfile(probe(), target)
    os.chmod(target, 0o755)
    return target


def python_identity() -> tuple[int, int]:
    """(st_dev, st_ino) of the interpreter that runs shims and helpers."""
    st = os.stat(sys.executable)
    return st.st_dev, st.st_ino


# ---------------------------------------------------------------- inside


#: docker's masked paths the runtime must hide, and host sysctls and
#: sysfs knobs that must be read-only (only opened, never written).
MASKED_FILES = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts", "/proc/sched_debug",
                "/proc/latency_stats", "/proc/timer_stats")
MASKED_DIRS = ("/sys/firmware", "/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/devices/virtual/powercap")
READONLY_FILES = ("/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
                  "/sys/kernel/profiling", "/sys/kernel/mm/transparent_hugepage/enabled")

REPORT = f"""
for p in /proc /sys /dev; do
  if [ -L $p ]; then echo "type $p link"; elif [ -d $p ]; then echo "type $p dir"; else echo "type $p other"; fi
  echo "mounted $p $(awk -v p=$p '$5 == p' /proc/self/mountinfo 2>/dev/null | wc -l)"
done
for f in {' '.join(MASKED_FILES)}; do
  if [ ! -e $f ]; then echo "mask $f absent"
  elif [ -c $f ]; then echo "mask $f masked"
  elif [ "$(stat -c %s $f)" = 0 ] && [ "$(head -c 1 $f 2>/dev/null | wc -c)" = 0 ]; then echo "mask $f masked"
  else echo "mask $f open"; fi
done
for d in {' '.join(MASKED_DIRS)}; do
  if [ ! -e $d ]; then echo "mask $d absent"
  elif [ -z "$(ls -A $d 2>/dev/null)" ]; then echo "mask $d masked"
  else echo "mask $d open"; fi
done
/{PROBE} writable {' '.join(READONLY_FILES)} | sed 's/^/write /'
echo "report done"
"""


def containment_problems(output: str) -> list[str]:
    """
    What L{REPORT}'s C{output} says is wrong: /proc, /sys or /dev not a real
    mounted directory, a masked path the host has that is visible, a
    kernel file that opens for writing.
    """
    lines = output.splitlines()
    if "report done" not in lines:
        return [f"the report did not finish: {output!r}"]
    problems = []
    for line in lines:
        fields = line.split()
        if fields[:1] == ["type"] and fields[2] != "dir":
            problems.append(f"{fields[1]} is a {fields[2]}, not a directory")
        elif fields[:1] == ["mounted"] and fields[2] == "0":
            problems.append(f"nothing is mounted on {fields[1]}")
        elif fields[:1] == ["mask"] and os.path.exists(fields[1]) and _has_content(fields[1]) and fields[2] != "masked":
            problems.append(f"{fields[1]} is not masked ({fields[2]})")
        elif fields[:1] == ["write"] and os.path.exists(fields[1]) and fields[2] != "refused":
            problems.append(f"{fields[1]} opens for writing")
    return problems


def _has_content(path: str) -> bool:
    try:
        if os.path.isdir(path):
            return bool(os.listdir(path))
        with open(path, "rb") as f:
            return bool(f.read(1))
    except OSError:
        return False


# Raise every limit the container can find, mount cgroupfs, make cgroups
# wherever it can and move into them or to the top: TAG names what it
# makes, so the host can find (and remove) it.
CGROUP_ATTACK = r"""
tag=TAG
cgmounts() { awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^cgroup/) print $5; break } }' /proc/self/mountinfo; }
for f in $(find /sys/fs/cgroup \( -name memory.limit_in_bytes -o -name memory.max -o -name memory.memsw.limit_in_bytes \
    -o -name pids.max -o -name cpu.cfs_quota_us -o -name cpu.max \) 2>/dev/null); do
  echo max > $f 2>/dev/null && echo "raised $f"
  echo 1099511627776 > $f 2>/dev/null && echo "raised $f"
done
for c in memory pids cpu cpuacct cpuset freezer devices blkio; do
  mkdir -p /tmp/cg/$c; mount -t cgroup -o $c cgroup /tmp/cg/$c 2>/dev/null && echo "mounted $c"
done
mkdir -p /tmp/cg/unified; mount -t cgroup2 cgroup2 /tmp/cg/unified 2>/dev/null && echo "mounted cgroup2"
for m in $(cgmounts); do mount -o remount,rw $m 2>/dev/null && echo "remounted $m"; done
for d in $(cgmounts); do
  mkdir $d/escape-$tag 2>/dev/null && mkdir $d/escape-$tag/deeper && echo "made $d/escape-$tag"
  sleep 1000 &
  echo $! > $d/escape-$tag/deeper/cgroup.procs 2>/dev/null && echo "moved into $d/escape-$tag/deeper"
  echo $$ > $d/cgroup.procs 2>/dev/null && echo "moved to $d"
done
sed 's/^/cgroup /' /proc/self/cgroup
echo "attack done"
"""


# ---------------------------------------------------------------- host side


#: Names the runtime touches under /proc, /sys, /dev and /etc, as decoys in
#: a canary directory that a symlink in an image points at.
CANARY_FILES = ("kcore", "keys", "timer_list", "interrupts", "sysrq-trigger", "null", "console", "hosts",
                "hostname", "resolv.conf", "sys/vm/drop_caches", "pts/ptmx", "firmware/canary",
                "acpi/canary", "bus/canary", "fs/canary", "irq/canary", "shm/canary", "mqueue/canary",
                "devices/virtual/powercap/canary", "fs/cgroup/canary")


def make_canary(path: Path) -> Path:
    """A directory of decoys (see L{CANARY_FILES}), each file naming itself."""
    for name in CANARY_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"host canary {name}\n")
    return path


def tree_state(path: Path, skip: Iterable[str] = ()) -> dict[str, tuple[object, ...]]:
    """
    Everything below C{path} (links not followed), for before/after
    comparison: type, mode, owner, size, modification time, device
    number, content digest or link target. Top-level names in C{skip} are
    left out.
    """
    skipped = set(skip)
    state: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath == str(path):
            dirnames[:] = [d for d in dirnames if d not in skipped]
            filenames = [f for f in filenames if f not in skipped]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                detail: object = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            else:
                detail = None
            state[os.path.relpath(full, path)] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid,
                                                  st.st_size, st.st_mtime_ns, st.st_rdev, detail)
    return state


class Watch:
    """
    inotify on every directory below C{path} but its top-level entries in
    C{skip}: whatever opens, creates, changes or removes anything there (a
    host file the runtime must never touch) shows in L{events}. Stop with
    L{close}.
    """

    _NAMES = {0x20: "open", 0x2: "modify", 0x4: "attrib", 0x8: "close-write", 0x40: "moved-from",
              0x80: "moved-to", 0x100: "create", 0x200: "delete"}

    def __init__(self, path: Path, skip: Iterable[str] = ()) -> None:
        self.skip = {str(path / name) for name in skip}
        directories = [path, *(Path(d) for d, _, _ in os.walk(path) if Path(d) != path
                                and not any(d == s or d.startswith(s + "/") for s in self.skip))]
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs: dict[int, str] = {}
        for directory in directories:
            wd = _libc.inotify_add_watch(self.fd, str(directory).encode(), sum(self._NAMES))
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            self.dirs[wd] = str(directory)

    def events(self) -> list[str]:
        """"EVENT PATH" for everything that happened since the last call."""
        found: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode(errors="replace")
                offset += 16 + length
                path = os.path.join(self.dirs.get(wd, "?"), name)
                if path.rstrip("/") not in self.skip:
                    found.append(f"{'/'.join(n for bit, n in self._NAMES.items() if mask & bit) or hex(mask)} {path}")

    def close(self) -> None:
        os.close(self.fd)


def mount_points(under: Iterable[str]) -> list[str]:
    """This namespace's mount points at or below any of C{under}."""
    prefixes = [os.path.realpath(p).rstrip("/") for p in under]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted(p for p in points if any(p == pre or p.startswith(pre + "/") for pre in prefixes))


def replace(root: Path, path: str, link: str | None = None, file: bool = False) -> None:
    """
    Replace C{path} (relative to C{root}) by a symlink to C{link}, or by a
    regular file when C{file}, creating parents.
    """
    target = root / path.strip("/")
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if link is not None:
        os.symlink(link, target)
    elif file:
        target.write_text("an image's file where a directory belongs\n")


def deep_directories(root: str | Path, depth: int, name: str = "a", each: str = "") -> int:
    """
    A chain of C{depth} directories C{name} under C{root} (as deep as a
    container can make one: past Python's recursion limit, or paths past
    PATH_MAX), made through fds, with an empty file C{each} at every level
    when given. Returns an fd of the deepest directory (the caller's to
    close).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        if each:
            os.close(os.open(each, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.mkdir(name, dir_fd=fd)
        deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def climbing(path: Path, depth: int = 24) -> str:
    """
    A relative link target that climbs past any root to C{path}: inside a
    root it stays inside, followed on the host it reaches C{path}.
    """
    return "../" * depth + str(path).lstrip("/")


def hostile_rootfs(root: Path, mutate: Callable[[Path], None] | None = None) -> Path:
    """A busybox root filesystem with the probe, then C{mutate}d."""
    build_rootfs(root)
    add_probe(root)
    if mutate is not None:
        mutate(root)
    return root


def image_archive(dest: Path, tag: str, mutate: Callable[[Path], None] | None = None,
                  config: dict[str, object] | None = None) -> Path:
    """
    A docker-save archive of one layer: busybox, the probe, then
    C{mutate}; C{config} is merged into the image config.
    """
    from ross.testing.images import docker_archive, image_config, layer_tar

    with tempfile.TemporaryDirectory(prefix="ross-hostile-") as tmp:
        layer = layer_tar(hostile_rootfs(Path(tmp) / "rootfs", mutate))
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    docker_archive(dest, tags=[tag], layers=[layer], config=image_config([diff_id], extra=config))
    return dest


# ---------------------------------------------------------------- keyrings

_SYS_ADD_KEY = 248
_SYS_KEYCTL = 250
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
_KEYCTL_GET_KEYRING_ID = 0
_KEYCTL_SETPERM = 5
_KEYCTL_SEARCH = 10
_KEYCTL_UNLINK = 9
_KEY_POS_ALL = 0x3F000000


def _keyctl(*args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(_SYS_KEYCTL), *[ctypes.c_long(a) if isinstance(a, int) else a
                                                               for a in args]))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def keyring_id(keyring: int) -> int:
    """The serial of one of this process's keyrings (a KEY_SPEC_*)."""
    return _keyctl(_KEYCTL_GET_KEYRING_ID, keyring, 0)


def plant_key(description: str, keyring: int, possessor_only: bool = False) -> int:
    """
    Add a "user" key to one of this process's keyrings; with
    C{possessor_only}, only a process that possesses it (through its own
    keyrings) may even see it.
    """
    payload = f"host-secret-{description}".encode()
    serial = int(_libc.syscall(ctypes.c_long(_SYS_ADD_KEY), b"user", description.encode(), payload,
                               ctypes.c_size_t(len(payload)), ctypes.c_long(keyring)))
    if serial < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    if possessor_only:
        _keyctl(_KEYCTL_SETPERM, serial, _KEY_POS_ALL)
    return serial


def drop_keys(description: str) -> None:
    """
    Unlink every key C{description} from this process's session and user
    keyrings (unlinking needs no permission on the key, only on the keyring;
    a key no keyring holds is gone).
    """
    for keyring in (KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING):
        while True:
            try:
                serial = _keyctl(_KEYCTL_SEARCH, keyring, b"user", description.encode(), 0)
                _keyctl(_KEYCTL_UNLINK, serial, keyring)
            except OSError:
                break


# ---------------------------------------------------------------- cgroups


def cgroups_named(name: str, parent: str) -> list[Path]:
    """
    Directories called C{name} in every cgroup hierarchy: at the top, and
    anywhere below C{parent} (where a container's cgroups are).
    """
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / name).is_dir():
            found.append(hierarchy / name)
        for dirpath, dirnames, _ in os.walk(hierarchy / parent):
            found += [Path(dirpath) / d for d in dirnames if d == name]
    return found


def remove_cgroup_tree(path: Path, timeout: float = 10.0) -> None:
    """
    Kill every process in cgroup C{path} and its children and remove them,
    deepest first (what an attack left behind).
    """
    deadline = time.monotonic() + timeout
    for dirpath, _, _ in sorted(os.walk(path), key=lambda entry: -entry[0].count("/")):
        while True:
            try:
                pids = Path(dirpath, "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
