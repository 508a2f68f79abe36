# -*- test-case-name: ross.test.integration.test_runtime -*-
"""
The shim: one process per container, forked by the shim parent
(L{serve_forks}, the one process the daemon runs as

    python -S -E -s -c "from ross.engine.runtime.shim import serve_forks; serve_forks()"

to share the shims' imported pages) with a connected unix socket as fd 3.
It reads the C{create} request from it, forks away from the shim parent
(the parent's child exits at once; the shim has its own session, no
inherited fds, no PDEATHSIG) and from then on:

    - owns the container's PID 1 (L{ross.engine.runtime.container}) and
      every exec session's process, their pipes or PTY masters;
    - writes the container's JSON-lines log (L{ross.engine.runtime.logfile});
    - serves the shim protocol (L{ross.protocols.shimwire}) on fd 3 and on
      C{shim.sock} in the state directory, so a restarted daemon reconnects;
    - records the exit status atomically in C{exit.json} and removes the
      container's cgroups when PID 1 is gone, then exits once its clients
      have their last frames.

Stdlib only. The shim parent pays for its imports once; what a shim
changes after the fork is its own memory, the rest it shares.

Requests (MESSAGE frames with C{id} and C{op}; the answer has the same
C{id}, C{ok}, and either results or C{error}, C{kind} and for start
failures C{code}). The spec, an exec's process and an update's resources
are checked against the wire form (L{ross.engine.runtime.wire}, L{SPEC})
before anything is made of them.

    create {spec, state_dir}     first request, on fd 3 only
    start                        exec the main process -> {pid}
    state                        -> {status, pid, shim_pid, execs, exit}
    kill {signal, all, session}  signal PID 1 (or every process, or the
                                 process group of exec session C{session})
    pause, resume                freezer
    stats                        cgroup and network counters
    exec {exec_id, process, attach, stdin, direct, input_id}   -> {pid}
    attach {session, stdin, replay, since, direct, input_id}
                                 this connection gets the output
                                 -> {offset, input_offset}; with direct,
                                 it is a client's from then on (shimwire)
    resize {session, rows, cols}
    close_stdin {session}
    events                       this connection gets every exit event

Events: C{{"event": "exit", "session": "" or exec id, "status": {...}}}.

A PTY session counts its output bytes; C{offset} in attach's answer is
the count at the first byte this connection gets. C{replay} sends the
scrollback first; C{since} (a count a client already has, re-attaching
after it lost its stream) sends the scrollback's bytes after it, all of it
when they were trimmed away, and for a session that has ended meanwhile
its exit event next, instead of a refusal. C{input_id} names the client's
input (exec's too): the session counts the STDIN bytes it takes in under
that name, and C{input_offset} is the count so far, for a client that
re-attaches to send only what never arrived.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time

from ross.engine.runtime import cgroups, container, linux, userns
from ross.engine.runtime.logfile import CRILogWriter, LogWriter
from ross.protocols import shimwire

# Not imported at run time: the shim's start pays for every import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ross.engine.runtime.wire import CgroupGroup, ExecProcess, ExitStatus, Process, Request, Resources, Spec

READ_SIZE = 256 * 1024
#: The longest input name a client may give (attach's C{input_id}), and
#: how many names a session keeps counts for.
INPUT_ID_MAX = 64
INPUT_IDS_KEPT = 64
# Finished exec sessions kept for `state` (the daemon keeps as many).
MAX_FINISHED_EXECS = 64
HIGH_WATER = 1024 * 1024
SCROLLBACK = 256 * 1024
LINGER = 5.0
HOLD = 0.001

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _WireType:
    """
    A part of the schema: equal to another of its class with the same
    attributes (test_runtime_wire compares schemas).
    """

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Record(_WireType):
    """
    A dict with these fields, each of its wire type, and no other; with
    C{total} false (a TypedDict's C{total=False}) any may be missing.
    """

    def __init__(self, fields: dict[str, object], total: bool = True) -> None:
        self.fields = fields
        self.total = total


class Tagged(_WireType):
    """
    One of several L{Record}s, told apart by the value of their field
    C{tag} (a mount's "type").
    """

    def __init__(self, tag: str, choices: dict[str, Record]) -> None:
        self.tag = tag
        self.choices = choices


class Nullable(_WireType):
    """A value of wire type C{kind}, or None."""

    def __init__(self, kind: object) -> None:
        self.kind = kind


# The schema of what the daemon sends (L{ross.engine.runtime.wire}'s
# types, which test_runtime_wire holds these equal to), checked by
# L{check} before the shim uses any of it. A wire type is str, int, bool
# or bytes; [T], a list of T; (A, B), a pair; a Record, a Tagged union of
# Records, or Nullable(T).
SECCOMP = Record({"code": bytes, "flags": int})
EXEC_PROCESS = Record({
    "args": [str], "env": [str], "cwd": str, "user": str, "tty": bool, "open_stdin": bool,
    "console_size": [int], "privileged": bool,
})
PROCESS = Record({
    **EXEC_PROCESS.fields, "additional_gids": [str], "rlimits": [(str, int, int)], "cap_add": [str], "cap_drop": [str],
    "no_new_privileges": bool, "seccomp": Nullable(SECCOMP),
})
RESOURCES = Record({
    "memory": int, "memory_swap": int, "nano_cpus": int, "cpu_shares": int, "pids_limit": int,
    "cpuset_cpus": str, "cpuset_mems": str, "hugepage_limits": [(str, int)], "memory_reservation": int,
    "oom_kill_disable": bool,
}, total=False)
SPEC = Record({
    "rootfs": [Record({"type": str, "source": str, "target": str, "options": [str]})],
    "mounts": [Tagged("type", {
        "bind": Record({"type": str, "source": str, "target": str, "readonly": bool, "propagation": str,
                        "recursive_readonly": bool, "recursive": bool}),
        "tmpfs": Record({"type": str, "target": str, "size": int, "mode": int, "readonly": bool,
                         "options": [str]}),
    })],
    "readonly": bool,
    "id": str, "process": PROCESS, "hostname": str, "domainname": str, "hosts": str,
    "resolv_conf": Nullable(str), "network": str, "ipc": str, "uts": str, "pid": str,
    "oom_score_adj": int, "shm_size": int, "pause": bool, "resources": RESOURCES, "init": bool,
    "log": Record({"path": str, "max_size": int, "max_files": int, "format": str}),
    "cgroup_parent": str, "masked_paths": [str], "readonly_paths": [str], "sysctls": [[str]],
    "devices": [(str, str, int, int, int, int, int, str, str)],
    "userns": Nullable(Record({"uid_map": [[int]], "gid_map": [[int]], "join": str})),
})


def check(value: object, kind: object, where: str) -> None:
    """
    Raise ValueError naming the first part of C{value} that is not of wire
    type C{kind} (see L{SPEC}): a field missing, unknown or of another
    type, at its path from C{where} ("spec.mounts[0].size"). Lists and
    pairs may come as lists or tuples (marshal keeps either); an int is
    not a bool.
    """
    if isinstance(kind, Nullable):
        if value is not None:
            check(value, kind.kind, where)
    elif isinstance(kind, Tagged):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a dict, got {type(value).__name__}")
        tag = value.get(kind.tag)
        if not isinstance(tag, str) or tag not in kind.choices:
            raise ValueError(f"{where}.{kind.tag}: expected one of {', '.join(kind.choices)}, got {tag!r}")
        check(value, kind.choices[tag], where)
    elif isinstance(kind, Record):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a dict, got {type(value).__name__}")
        for name in value:
            if name not in kind.fields:
                raise ValueError(f"{where}: unknown field {name!r}")
        for name, field in kind.fields.items():
            if name in value:
                check(value[name], field, f"{where}.{name}")
            elif kind.total:
                raise ValueError(f"{where}: missing field {name!r}")
    elif isinstance(kind, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            check(item, kind[0], f"{where}[{i}]")
    elif isinstance(kind, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(kind):
            raise ValueError(f"{where}: expected {len(kind)} items, got {value!r}")
        for i, (item, part) in enumerate(zip(value, kind)):
            check(item, part, f"{where}[{i}]")
    elif isinstance(kind, type):
        if type(value) is not kind:
            raise ValueError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    else:
        raise TypeError(f"not a wire type: {kind!r}")


def write_atomic(path: str, text: str) -> None:
    """
    Replace C{path} with C{text}: a reader sees the old or the new content.
    """
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        data = text.encode()
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write", tmp)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def _log(text: str) -> None:
    try:
        os.write(2, b"%s shim[%d]: %s\n" % (time.strftime("%H:%M:%S").encode(), os.getpid(), text.encode()))
    except OSError:
        pass


def _nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


def _close_fds(keep: set[int]) -> None:
    """
    Close every fd but C{keep} (and 0-2): the child must not hold the shim's
    sockets, pipes or log.
    """
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _recv_ready(sock: socket.socket) -> tuple[bytes, int]:
    """
    The child's first message, and the fd it passed (-1 when none).
    """
    msg, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(4))
    fd = -1
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd = struct.unpack("i", data[:4])[0]
    return msg, fd


class StartFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fork_failure(e: OSError) -> str:
    """
    What a failed fork means to a user: which limit was reached, not a
    bare errno.
    """
    if e.errno == errno.EAGAIN:
        return f"out of processes: a pids limit (the daemon's cgroup's or the host's) is reached ({e.strerror})"
    if e.errno == errno.ENOMEM:
        return f"out of memory or processes: the kernel refused a new process ({e.strerror})"
    return f"cannot make a process: {e.strerror}"


#: The kernel's PF_EXITING task flag (/proc/PID/stat's ninth field).
_PF_EXITING = 0x4


def has_exited(pid: int) -> bool:
    """
    Whether child C{pid} has exited or is exiting, without reaping it: its
    exit is still the poll loop's to handle. A PID namespace's init that
    was killed exits last, once the rest of its namespace is gone.
    """
    try:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
    except ChildProcessError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return True
    return bool(int(fields[6]) & _PF_EXITING)


def _parse_error(msg: bytes) -> StartFailed:
    if msg.startswith(b"E"):
        code, _, text = msg[1:].partition(b" ")
        return StartFailed(int(code), text.decode("utf-8", "replace"))
    return StartFailed(125, "the container process exited during set-up")


class Connection:
    """
    One client of the shim: the daemon's control connection or an attached
    session, with its own output buffer.
    """

    def __init__(self, shim: "Shim", sock: socket.socket) -> None:
        self.shim = shim
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = shimwire.FrameDecoder()
        self.out = bytearray()
        self.session: Session | None = None
        self.stdin = False
        self.events = False
        #: A client's own channel to its session (see shimwire): input,
        #: resize and end of input only.
        self.direct = False
        #: The name of the client's input (attach's C{input_id}): the
        #: session counts the STDIN bytes it takes in from it.
        self.input_id = ""
        self.closed = False
        sock.setblocking(False)

    def attach_to(self, session: Session, request: Request) -> None:
        """
        Make this connection C{session}'s, as attach and exec C{request}
        ask: input taken or not, direct or not, and the input's name.
        """
        self.session = session
        self.stdin = bool(request.get("stdin"))
        self.direct = bool(request.get("direct"))
        input_id = request.get("input_id")
        self.input_id = input_id if isinstance(input_id, str) and len(input_id) <= INPUT_ID_MAX else ""

    def send(self, data: bytes, more: bytes = b"") -> None:
        """
        Send C{data}, then C{more} (a frame's payload after its header:
        sent together, never joined), or keep what the socket does not
        take now for L{flush}.
        """
        if self.closed:
            return
        if not self.out:
            try:
                n = self.sock.sendmsg([data, more]) if more else self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.close()
                return
            if n == len(data) + len(more):
                return
            if n >= len(data):
                data, more = b"", more[n - len(data):]
            else:
                data = data[n:]
        self.out += data
        self.out += more
        self.shim.update(self.fd)

    def reply(self, request: Request, **fields: object) -> None:
        fields["id"] = request.get("id")
        fields["ok"] = True
        self.send(shimwire.message(fields))

    def fail(self, request: Request, kind: str, error: str, code: int = 0) -> None:
        self.send(shimwire.message({"id": request.get("id"), "ok": False, "kind": kind, "error": error, "code": code}))

    def flush(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.out[:n]
        if len(self.out) < HIGH_WATER and self.session is not None:
            self.shim.update_session(self.session)
        self.shim.update(self.fd)

    def readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        try:
            frames = self.decoder.feed(data)
        except shimwire.FrameError as e:
            _log(f"dropping a client: {e}")
            self.close()
            return
        self.frames(frames)

    def frames(self, frames: list[tuple[int, bytes]]) -> None:
        for kind, payload in frames:
            if kind == shimwire.MESSAGE:
                if self.direct:
                    _log("dropping a direct client: it sent a control message")
                    self.close()
                    return
                try:
                    request = shimwire.decode_message(payload)
                except shimwire.FrameError as e:
                    _log(f"dropping a client: {e}")
                    self.close()
                    return
                self.shim.handle(self, request)
            elif kind == shimwire.STDIN and self.session is not None and self.stdin:
                self.session.write_stdin(payload)
                if self.input_id:
                    self.session.took_input(self.input_id, len(payload))
                if self.stdin_full():
                    # Read no more from this client until the process has
                    # taken in what waits for it (the client is held back).
                    self.shim.update(self.fd)
            elif kind == shimwire.RESIZE and self.session is not None:
                try:
                    self.session.resize(*shimwire.decode_resize(payload))
                except (shimwire.FrameError, ValueError, OSError) as e:
                    _log(f"resize of session {self.session.id!r} refused: {e}")
            elif kind == shimwire.CLOSE_STDIN and self.session is not None and self.stdin:
                self.session.close_stdin()
            if self.closed:
                return

    def stdin_full(self) -> bool:
        """
        Whether the input this client sends waits unread past the mark.
        """
        return self.stdin and self.session is not None and len(self.session.stdin_buf) >= HIGH_WATER

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.shim.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass


class Session:
    """
    A process of the container (the main one, id "", or an exec session)
    and its stdio as the shim holds it.
    """

    def __init__(self, shim: "Shim", session_id: str, process: Process, pid: int, tty: bool,
                 outputs: dict[int, int], stdin_fd: int, log: LogWriter | None) -> None:
        self.shim = shim
        self.id = session_id
        self.process = process
        self.pid = pid
        self.tty = tty
        self.outputs = outputs  # fd -> frame kind
        self.stdin_fd = stdin_fd
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        #: STDIN bytes taken in per client input (see attach's
        #: C{input_id}), the last L{INPUT_IDS_KEPT} names.
        self.input_taken: dict[str, int] = {}
        self.log = log
        self.subscribers: list[Connection] = []
        self.scrollback = bytearray()
        #: Output bytes so far (of a PTY session): the count just past the
        #: scrollback's last byte.
        self.written = 0
        self.status = "created"
        self.exit: ExitStatus | None = None
        self.started_at = 0
        # Why the process could not start, and docker's code for it.
        self.error = ""
        self.error_code = 125
        self.last_read = 0.0
        #: Output held back to go out as one frame (see L{readable}): its
        #: chunks as read, and how many bytes they make.
        self.held: list[bytes] = []
        self.held_size = 0
        self.held_kind = 0
        self.held_since = 0.0
        self.returncode: int | None = None
        self.finished = False
        for fd in outputs:
            _nonblocking(fd)
        if stdin_fd >= 0 and stdin_fd not in outputs:
            _nonblocking(stdin_fd)

    # output

    def readable(self, fd: int) -> None:
        kind = self.outputs[fd]
        # Drain what is there, up to READ_SIZE: a PTY hands out a line per
        # read, and a frame per line makes every hop after this one the
        # bottleneck. Nothing waits for more, so no latency is added.
        chunks = []
        total = 0
        eof = False
        while total < READ_SIZE:
            try:
                data = os.read(fd, READ_SIZE - total)
            except BlockingIOError:
                break
            except OSError as e:
                # A PTY master reads EIO once the last slave closed: its EOF.
                if e.errno != errno.EIO:
                    _log(f"reading session {self.id!r}: {e}")
                data = b""
            if not data:
                eof = True
                break
            chunks.append(data)
            total += len(data)
        if not chunks:
            if eof:
                self.release()
                self.close_output(fd)
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        # Output that comes in a burst (reads less than HOLD apart) is held
        # up to HOLD and sent as one frame; a lone read (a keystroke's echo)
        # goes out at once.
        now = time.monotonic()
        burst = now - self.last_read < HOLD
        self.last_read = now
        if self.held and self.held_kind != kind:
            self.release()
        if burst or self.held:
            if not self.held:
                self.held_kind = kind
                self.held_since = now
                self.shim.holding.add(self)
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size >= READ_SIZE:
                self.release()
        else:
            self.output(kind, data)
        if eof:
            self.release()
            self.close_output(fd)

    def release(self) -> None:
        """
        Send what output is held.
        """
        if self.held:
            data = self.held[0] if len(self.held) == 1 else b"".join(self.held)
            self.held.clear()
            self.held_size = 0
            self.shim.holding.discard(self)
            self.output(self.held_kind, data)

    def output(self, kind: int, data: bytes) -> None:
        if self.log is not None:
            self.log.write("stderr" if kind == shimwire.STDERR else "stdout", data)
        if self.tty:
            self.written += len(data)
            self.scrollback += data
            # Trimmed once it holds twice what a replay gives, so fast
            # output moves and searches it once per SCROLLBACK bytes, not
            # at every read.
            if len(self.scrollback) > 2 * SCROLLBACK:
                del self.scrollback[:self.replay_start() - (self.written - len(self.scrollback))]
        if self.subscribers:
            header = shimwire.header(kind, len(data))
            for conn in list(self.subscribers):
                conn.send(header, data)
            self.shim.update_session(self)

    def replay_start(self) -> int:
        """
        The output count a replay begins at: the last L{SCROLLBACK} bytes
        of the scrollback, from the start of a line when one begins there.
        """
        s = self.scrollback
        skip = 0
        if len(s) > SCROLLBACK:
            cut = s.find(b"\n", len(s) - SCROLLBACK)
            skip = cut + 1 if cut >= 0 else len(s) - SCROLLBACK
        return self.written - len(s) + skip

    def close_output(self, fd: int) -> None:
        del self.outputs[fd]
        self.shim.unwatch(fd)
        if fd == self.stdin_fd:
            self.stdin_fd = -1
        os.close(fd)
        if self.log is not None and not self.outputs:
            self.log.flush()
        self.maybe_finish()

    def blocked(self) -> bool:
        return any(len(c.out) >= HIGH_WATER for c in self.subscribers)

    # input

    def go(self, sock: socket.socket, conn: Connection, request: Request) -> bool:
        """
        Let the process, waiting on C{sock}, exec its command: True once it
        did (the session runs), else False with C{request} answered with
        why it could not (the start error it sent back).
        """
        try:
            sock.send(b"G")
            msg = sock.recv(4096)
        except OSError:
            msg = b""
        sock.close()
        if msg:
            error = _parse_error(msg)
            self.error, self.error_code = error.message, error.code
            conn.fail(request, "start", error.message, error.code)
            return False
        self.status = "running"
        self.started_at = time.time_ns()
        return True

    def took_input(self, input_id: str, count: int) -> None:
        taken = self.input_taken
        taken[input_id] = taken.pop(input_id, 0) + count
        if len(taken) > INPUT_IDS_KEPT:
            del taken[next(iter(taken))]

    def write_stdin(self, data: bytes) -> None:
        if self.stdin_fd < 0 or self.stdin_closing:
            return
        self.stdin_buf += data
        self.flush_stdin()

    def flush_stdin(self) -> None:
        if self.stdin_fd < 0:
            return
        while self.stdin_buf:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:
                self.stdin_buf.clear()
                self.close_stdin()
                self._resume_writers()
                return
            del self.stdin_buf[:n]
        self._resume_writers()
        if not self.stdin_buf and self.stdin_closing:
            self.close_stdin()
            return
        self.shim.update_stdin(self)

    def _resume_writers(self) -> None:
        """
        Clients whose input was held back read again once the process has
        taken enough of it.
        """
        if len(self.stdin_buf) < HIGH_WATER:
            for conn in self.subscribers:
                if conn.stdin and not conn.closed and not self.shim.masks.get(conn.fd, 0) & _POLLIN:
                    self.shim.update(conn.fd)

    def close_stdin(self) -> None:
        if self.tty:
            # The terminal stays; end of input is ^D for the program.
            self.stdin_closing = False
            return
        if self.stdin_buf:
            self.stdin_closing = True
            return
        if self.stdin_fd >= 0:
            self.shim.unwatch(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    def resize(self, rows: int, cols: int) -> None:
        if not self.tty or not self.outputs:
            raise ValueError("the session has no terminal")
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise ValueError(f"invalid terminal size {rows}x{cols}")
        fd = next(iter(self.outputs))
        fcntl.ioctl(fd, linux.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # end

    def reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.status = "stopped"
        if self is self.shim.main and self.shim.spec.get("pid"):
            # Not the PID 1 of a namespace of its own, whose end would
            # have ended the rest: what it left (holding its output open)
            # ends with it, as containerd's shim does.
            self.shim.kill_all()
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if self.finished or self.returncode is None or self.outputs:
            return
        self.finished = True
        if self.stdin_fd >= 0:
            self.shim.unwatch(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = -1
        code = self.returncode
        self.exit = {
            "exit_code": 128 - code if code < 0 else code,
            "signal": -code if code < 0 else 0,
            "oom_killed": False,
            "started_ns": self.started_at,
            "finished_ns": time.time_ns(),
            "error": "",
        }
        self.shim.session_finished(self)


class Shim:
    """
    The shim's state and poll loop (see the module docstring).
    """

    def __init__(self, spec: Spec, state_dir: str) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.poll = select.poll()
        self.masks: dict[int, int] = {}
        self.fd_owner: dict[int, object] = {}
        self.conns: dict[int, Connection] = {}
        self.sessions: dict[str, Session] = {}
        self.by_pid: dict[int, Session] = {}
        self.groups: list[CgroupGroup] = []
        #: The init and exec helpers are forked into the v2 group (until the
        #: kernel refuses: L{_fork_into_v2}).
        self.clone_into_cgroup = True
        self.main: Session | None = None
        self.main_sock: socket.socket | None = None
        self.paused = False
        self.exiting_at = 0.0
        self.listener: socket.socket | None = None
        self.creator: Connection | None = None
        self.holding: set[Session] = set()
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        # Ignored signals survive exec: the container must get them default.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.watch(self.wake_r, _POLLIN)

    # poll bookkeeping

    def watch(self, fd: int, mask: int) -> None:
        if self.masks.get(fd) != mask:
            self.masks[fd] = mask
            self.poll.register(fd, mask)

    def unwatch(self, fd: int) -> None:
        if self.masks.pop(fd, None) is not None:
            self.poll.unregister(fd)
        self.fd_owner.pop(fd, None)

    def update(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is not None and not conn.closed:
            self.watch(fd, (0 if conn.stdin_full() else _POLLIN) | (_POLLOUT if conn.out else 0))

    def update_session(self, session: Session) -> None:
        mask = 0 if session.blocked() else _POLLIN
        for fd in session.outputs:
            self.watch(fd, mask | (_POLLOUT if fd == session.stdin_fd and session.stdin_buf else 0))

    def update_stdin(self, session: Session) -> None:
        fd = session.stdin_fd
        if fd < 0:
            return
        if fd in session.outputs:
            self.update_session(session)
        else:
            self.fd_owner[fd] = session
            self.watch(fd, _POLLOUT if session.stdin_buf else 0)

    def add_connection(self, sock: socket.socket) -> Connection:
        conn = Connection(self, sock)
        self.conns[conn.fd] = conn
        self.fd_owner[conn.fd] = conn
        self.watch(conn.fd, _POLLIN)
        return conn

    def forget(self, conn: Connection) -> None:
        self.unwatch(conn.fd)
        self.conns.pop(conn.fd, None)
        if conn.session is not None and conn in conn.session.subscribers:
            conn.session.subscribers.remove(conn)
            self.update_session(conn.session)
        main = self.main
        if conn is self.creator and main is not None and main.status == "created":
            # Whoever created the container went away before starting it
            # (the daemon died in between): nobody will; don't linger with
            # a half set-up container.
            _log("the daemon left before starting the container; giving up")
            try:
                os.kill(main.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def add_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.by_pid[session.pid] = session
        for fd in session.outputs:
            self.fd_owner[fd] = session
        self.update_session(session)
        if session.stdin_fd >= 0 and session.stdin_fd not in session.outputs:
            self.fd_owner[session.stdin_fd] = session

    # create and start

    def create(self, conn: Connection, request: Request) -> bool:
        check(self.spec, SPEC, "spec")
        spec = self.spec
        process = spec["process"]
        self.groups = cgroups.plan(spec["cgroup_parent"], spec["id"])
        write_atomic("state.json", json.dumps({"shim_pid": os.getpid(), "groups": self.groups,
                                              "id": spec["id"], "created_at": time.time_ns()}))
        tty = bool(process["tty"])
        outputs: dict[int, int] = {}
        keep: list[int] = []
        if tty:
            stdio = None
            stdin_w = -1
        else:
            if process["open_stdin"]:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            else:
                stdin_r, stdin_w = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), -1
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            for fd in (out_r, err_r):
                try:
                    fcntl.fcntl(fd, linux.F_SETPIPE_SZ, 1024 * 1024)
                except OSError:
                    pass
            outputs = {out_r: shimwire.STDOUT, err_r: shimwire.STDERR}
            stdio = (stdin_r, out_w, err_w)
            keep = [stdin_r, out_w, err_w]
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = os.path.join(self.state_dir, "rootfs")
        os.makedirs(root, exist_ok=True)
        namespaces = None
        wanted_userns = spec["userns"]
        if wanted_userns:
            namespaces = userns.namespaces_for(wanted_userns)
            keep += namespaces.values()
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        # The container's PID namespace: its own (its command PID 1), one
        # it joins (a pod's: the container is born into it), or the host's.
        pid_mode = spec.get("pid") or ""
        try:
            if pid_mode.startswith("/"):
                joined = os.open(pid_mode, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    linux.setns(joined, linux.CLONE_NEWPID)
                finally:
                    os.close(joined)
            elif pid_mode != "host":
                linux.unshare(linux.CLONE_NEWPID)
        except OSError:
            os.close(own_pid_ns)
            raise
        try:
            pid, born_in_v2 = self._fork_into_v2(make=True)
        except OSError as e:
            linux.setns(own_pid_ns, linux.CLONE_NEWPID)
            os.close(own_pid_ns)
            raise StartFailed(125, f"cannot start the container's process: {fork_failure(e)}") from None
        if pid == 0:
            _close_fds({child_sock.fileno(), *keep})
            container.run_init(spec, self.state_dir, root, self.groups, child_sock, stdio, namespaces, born_in_v2)
            os._exit(125)
        # Later children (exec helpers) are born in the host's PID
        # namespace, out of the container's sight until they are inside it.
        linux.setns(own_pid_ns, linux.CLONE_NEWPID)
        os.close(own_pid_ns)
        child_sock.close()
        for fd in keep:
            os.close(fd)
        msg, master = _recv_ready(parent_sock)
        log: LogWriter | None = None
        log_spec = spec.get("log")
        if log_spec and log_spec.get("path") and log_spec.get("format") == "cri":
            log = CRILogWriter(log_spec["path"])
        elif log_spec and log_spec.get("path"):
            log = LogWriter(log_spec["path"], log_spec.get("max_size", 0), log_spec.get("max_files", 1))
        if tty and master >= 0:
            outputs = {master: shimwire.STDOUT}
            stdin_w = master
            rows, cols = process.get("console_size") or (24, 80)
            fcntl.ioctl(master, linux.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        session = Session(self, "", process, pid, tty, outputs, stdin_w, log)
        self.main = session
        self.main_sock = parent_sock
        self.add_session(session)
        if msg != b"R":
            error = _parse_error(msg)
            session.error, session.error_code = error.message, error.code
            parent_sock.close()
            self.main_sock = None
            conn.fail(request, "start", error.message, error.code)
            return False
        conn.reply(request, pid=pid, shim_pid=os.getpid())
        return True

    def start_main(self, conn: Connection, request: Request) -> None:
        session = self.main
        if session is None or self.main_sock is None or session.status != "created":
            conn.fail(request, "precondition", "the container was started already")
            return
        sock, self.main_sock = self.main_sock, None
        if not session.go(sock, conn, request):
            return
        state = self._read_state()
        state["pid"] = session.pid
        state["started_at"] = session.started_at
        write_atomic("state.json", json.dumps(state))
        conn.reply(request, pid=session.pid)

    def _read_state(self) -> dict[str, object]:
        return {"shim_pid": os.getpid(), "groups": self.groups, "id": self.spec["id"]}

    # requests

    def handle(self, conn: Connection, request: Request) -> None:
        op = request.get("op")
        handler = getattr(self, "op_" + str(op), None)
        if handler is None:
            conn.fail(request, "invalid", f"unknown request {op!r}")
            return
        try:
            handler(conn, request)
        except StartFailed as e:
            conn.fail(request, "start", e.message, e.code)
        except (cgroups.CgroupError, ValueError, KeyError, OSError) as e:
            conn.fail(request, "precondition" if isinstance(e, (cgroups.CgroupError, ValueError)) else "internal", str(e))
        except Exception as e:
            # A request must never take the shim (and the container's
            # monitoring) down with it.
            _log(f"request {op!r} failed: {type(e).__name__}: {e}")
            conn.fail(request, "internal", f"{type(e).__name__}: {e}")

    def op_start(self, conn: Connection, request: Request) -> None:
        self.start_main(conn, request)

    def op_state(self, conn: Connection, request: Request) -> None:
        main = self.main
        assert main is not None
        status = "paused" if self.paused and main.status == "running" else main.status
        execs = {s.id: {"pid": s.pid, "running": s.exit is None, "exit": s.exit, "tty": s.tty,
                        "args": list(s.process["args"])}
                 for s in self.sessions.values() if s.id}
        conn.reply(request, status=status, pid=main.pid, shim_pid=os.getpid(), execs=execs, exit=main.exit,
                   started_ns=main.started_at)

    def op_events(self, conn: Connection, request: Request) -> None:
        conn.events = True
        conn.reply(request)

    def op_kill(self, conn: Connection, request: Request) -> None:
        main = self.main
        assert main is not None
        if main.returncode is not None:
            conn.fail(request, "precondition", "the container is not running")
            return
        sig = int(request.get("signal") or signal.SIGKILL)
        if request.get("session"):
            self._kill_session(conn, request, sig)
            return
        targets = cgroups.procs(self.groups) | {main.pid} if request.get("all") else {main.pid}
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if self.paused and sig == signal.SIGKILL:
            # A frozen task dies only once thawed.
            cgroups.freeze(self.groups, False)
            self.paused = False
        conn.reply(request)

    def _kill_session(self, conn: Connection, request: Request, sig: int) -> None:
        session = self.sessions.get(str(request["session"]))
        if session is None or session is self.main:
            conn.fail(request, "not_found", f"no such exec session: {request['session']}")
            return
        # The session's process leads its own process group (run_exec's
        # setsid): signalling the group reaches what a shell started too.
        # Until the session finished, its leader is unreaped or its output
        # still held (by the group's other processes), so the group ID is
        # not free for reuse. A frozen container gets the signal when thawed.
        if not session.finished:
            try:
                os.killpg(session.pid, sig)
            except ProcessLookupError:
                pass
        conn.reply(request)

    def op_pause(self, conn: Connection, request: Request) -> None:
        self._running_or_fail()
        cgroups.freeze(self.groups, True)
        self.paused = True
        conn.reply(request)

    def op_resume(self, conn: Connection, request: Request) -> None:
        self._running_or_fail()
        cgroups.freeze(self.groups, False)
        self.paused = False
        conn.reply(request)

    def op_update(self, conn: Connection, request: Request) -> None:
        """
        docker update: new limits written into the running container's
        cgroups (the daemon keeps them for its next starts).
        """
        self._running_or_fail()
        check(request.get("resources"), RESOURCES, "resources")
        resources: Resources = request["resources"]
        # Bounds on what a request makes the shim write (cgroups checks
        # each huge page size).
        if (max(len(resources.get("cpuset_cpus", "")), len(resources.get("cpuset_mems", ""))) >= 4096
                or len(resources.get("hugepage_limits", ())) >= 16):
            raise ValueError("update: cpusets must be shorter than 4096 and huge page limits fewer than 16")
        cgroups.update(self.groups, resources)
        conn.reply(request)

    def _running_or_fail(self) -> None:
        main = self.main
        if main is None or main.status != "running" or main.returncode is not None:
            raise ValueError("the container is not running")

    def op_stats(self, conn: Connection, request: Request) -> None:
        main = self.main
        assert main is not None
        out = cgroups.stats(self.groups)
        rx = tx = 0
        if main.returncode is None:
            try:
                with open(f"/proc/{main.pid}/net/dev") as f:
                    for line in f.readlines()[2:]:
                        name, _, fields = line.partition(":")
                        if name.strip() != "lo":
                            values = fields.split()
                            rx += int(values[0])
                            tx += int(values[8])
            except OSError:
                pass
        out["net_rx_bytes"] = rx
        out["net_tx_bytes"] = tx
        with open("/proc/stat") as f:
            ticks = sum(int(v) for v in f.readline().split()[1:8])
        out["system_cpu_ns"] = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        out["online_cpus"] = len(os.sched_getaffinity(0))
        out["read_ns"] = time.time_ns()
        conn.reply(request, **out)

    def op_reopen_log(self, conn: Connection, request: Request) -> None:
        self._running_or_fail()
        main = self.main
        assert main is not None
        if main.log is None:
            raise ValueError("the container has no log")
        main.log.reopen()
        conn.reply(request)

    def op_attach(self, conn: Connection, request: Request) -> None:
        session = self.sessions.get(request.get("session") or "")
        if session is None:
            conn.fail(request, "not_found", f"no such exec session: {request.get('session')}")
            return
        if conn.session is not None:
            conn.fail(request, "precondition", "this connection is attached already")
            return
        since = request.get("since")
        if session.finished and since is None:
            conn.fail(request, "precondition", "the process has exited")
            return
        base = session.written - len(session.scrollback)
        first = session.replay_start()
        if since is not None:
            offset = max(first, min(int(since), session.written))
        else:
            offset = first if request.get("replay") else session.written
        conn.attach_to(session, request)
        if conn.input_id:
            conn.reply(request, offset=offset, input_offset=session.input_taken.get(conn.input_id, 0))
        else:
            conn.reply(request, offset=offset)
        if offset < session.written:
            conn.send(shimwire.frame(shimwire.STDOUT, bytes(session.scrollback[offset - base:])))
        if session.finished:
            conn.send(shimwire.message({"event": "exit", "session": session.id, "status": session.exit}))
            return
        session.subscribers.append(conn)
        self.update_session(session)

    def op_resize(self, conn: Connection, request: Request) -> None:
        session = self.sessions.get(request.get("session") or "")
        if session is None:
            conn.fail(request, "not_found", f"no such exec session: {request.get('session')}")
            return
        session.resize(int(request["rows"]), int(request["cols"]))
        conn.reply(request)

    def op_close_stdin(self, conn: Connection, request: Request) -> None:
        session = self.sessions.get(request.get("session") or "")
        if session is None:
            conn.fail(request, "not_found", f"no such exec session: {request.get('session')}")
            return
        session.close_stdin()
        conn.reply(request)

    def op_exec(self, conn: Connection, request: Request) -> None:
        main = self.main
        exec_id = str(request.get("exec_id") or "")
        if main is None or main.status != "running" or main.returncode is not None:
            conn.fail(request, "precondition", "the container is not running")
            return
        if self.paused:
            conn.fail(request, "precondition", "the container is paused, unpause it first")
            return
        if not exec_id or exec_id in self.sessions:
            conn.fail(request, "exists" if exec_id else "invalid", f"exec session {exec_id!r} exists already"
                      if exec_id else "an exec session needs an id")
            return
        check(request.get("process"), EXEC_PROCESS, "process")
        session, sock = self._spawn_exec(exec_id, request["process"])
        if request.get("attach"):
            conn.attach_to(session, request)
            session.subscribers.append(conn)
        if session.go(sock, conn, request):
            conn.reply(request, pid=session.pid)

    def _fork_into_v2(self, make: bool = False) -> tuple[int, bool]:
        """
        Fork the container's init or an exec session's helper, into the
        container's cgroup v2 group when it has one and the kernel lets it
        (see L{cgroups.join}); C{make} it first (for the init: the group
        may not exist yet). The fork's result, and whether the child was
        born there. Whatever fails here, the child does as before itself,
        and reports it.
        """
        v2 = [g["path"] for g in self.groups if g["version"] == 2]
        if v2 and self.clone_into_cgroup:
            try:
                if make:
                    cgroups.make_v2(self.groups, self.spec["resources"])
                fd = os.open(v2[0], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except (OSError, cgroups.CgroupError):
                fd = -1
            if fd >= 0:
                try:
                    return linux.fork_into_cgroup(fd), True
                except OSError as e:
                    if e.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP):
                        # An old kernel or a seccomp filter (docker's
                        # returns ENOSYS for clone3): not again.
                        self.clone_into_cgroup = False
                finally:
                    os.close(fd)
        return os.fork(), False

    def _spawn_exec(self, exec_id: str, given: ExecProcess) -> tuple[Session, socket.socket]:
        """
        Start exec session C{exec_id}'s process, waiting on the socket
        returned with it for L{Session.go}.
        """
        main = self.main
        assert main is not None
        base = self.spec["process"]
        env = list(base["env"]) + list(given.get("env") or ())
        process: Process = {
            "args": list(given["args"]), "env": env, "cwd": given.get("cwd") or base["cwd"],
            "user": given.get("user") or base["user"],
            "additional_gids": list(base["additional_gids"]),
            "rlimits": list(base["rlimits"]),
            "tty": bool(given.get("tty")), "open_stdin": bool(given.get("open_stdin")),
            "console_size": list(given.get("console_size") or (24, 80)),
            "privileged": bool(given.get("privileged") or base["privileged"]),
            "cap_add": base["cap_add"], "cap_drop": base["cap_drop"],
            "no_new_privileges": base["no_new_privileges"],
            # The container's filter, --privileged or not: runc loads the
            # container's filter into every exec'd process, as docker does.
            "seccomp": base["seccomp"],
        }
        ns_fds: list[tuple[int, int]] = []
        userns_fd = -1
        try:
            for name, nstype in (("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
                                 ("net", linux.CLONE_NEWNET), ("cgroup", linux.CLONE_NEWCGROUP),
                                 ("pid", linux.CLONE_NEWPID), ("mnt", linux.CLONE_NEWNS)):
                ns_fds.append((os.open(f"/proc/{main.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), nstype))
            if self.spec.get("userns"):
                userns_fd = os.open(f"/proc/{main.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            for fd, _ in ns_fds:
                os.close(fd)
            # Its init has exited since it was looked at (its exit is on
            # the way): its namespaces are gone with its /proc entry.
            if e.errno in (errno.ENOENT, errno.ESRCH):
                raise StartFailed(125, "the container is not running") from None
            raise
        tty = process["tty"]
        outputs: dict[int, int] = {}
        keep = [fd for fd, _ in ns_fds] + ([userns_fd] if userns_fd >= 0 else [])
        stdin_w = -1
        stdio = None
        if not tty:
            if process["open_stdin"]:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            else:
                stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            outputs = {out_r: shimwire.STDOUT, err_r: shimwire.STDERR}
            stdio = (stdin_r, out_w, err_w)
            keep += [stdin_r, out_w, err_w]
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        hostname = self.spec["hostname"] or self.spec["id"][:12]
        try:
            pid, born_in_v2 = self._fork_into_v2()
        except OSError as e:
            for fd in keep + list(outputs) + ([stdin_w] if stdin_w >= 0 else []):
                os.close(fd)
            parent_sock.close()
            child_sock.close()
            # ENOMEM: a fork into a PID namespace whose init has died.
            raise StartFailed(125, "the container is not running" if e.errno == errno.ENOMEM
                              else f"cannot start the process: {fork_failure(e)}") from None
        if pid == 0:
            _close_fds({child_sock.fileno(), *keep})
            container.run_exec(process, hostname, ns_fds, self.groups, child_sock, stdio, main.pid, userns_fd,
                               self.spec["oom_score_adj"], born_in_v2)
            os._exit(125)
        child_sock.close()
        for fd in keep:
            os.close(fd)
        # The helper forks the session's process once inside the container
        # and exits: its "P<pid>" and the process's own first message come
        # in either order; a helper that failed before forking sends only
        # its error. The helper is reaped as any unknown child.
        msg, master = b"", -1
        pid = 0
        while not (pid and msg):
            data, fd = _recv_ready(parent_sock)
            if not data:
                break
            if data.startswith(b"P"):
                pid = int(data[1:])
            else:
                msg, master = data, fd
        if not msg:
            # Killed before it could say why: with the container, when its
            # init has exited meanwhile (a stop or kill kills the helper too).
            msg = (b"E125 the container is not running" if has_exited(main.pid)
                   else b"E125 the exec helper exited during set-up")
        if pid == 0:
            parent_sock.close()
            for fd in list(outputs) + [fd for fd in (master, stdin_w) if fd >= 0]:
                os.close(fd)
            raise _parse_error(msg)
        if tty and master >= 0:
            outputs = {master: shimwire.STDOUT}
            stdin_w = master
            rows, cols = process["console_size"]
            fcntl.ioctl(master, linux.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        session = Session(self, exec_id, process, pid, tty, outputs, stdin_w, None)
        self.add_session(session)
        if msg != b"R":
            parent_sock.close()
            raise _parse_error(msg)
        return session, parent_sock

    # ends

    def kill_all(self) -> None:
        """
        SIGKILL every process left in the container's cgroups (a few
        rounds, for those forked meanwhile).
        """
        if self.paused:
            cgroups.freeze(self.groups, False)
            self.paused = False
        for _ in range(5):
            left = cgroups.procs(self.groups)
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            session = self.by_pid.pop(pid, None)
            if session is not None:
                session.reaped(status)

    def session_finished(self, session: Session) -> None:
        assert session.exit is not None
        session.release()
        if session.error:
            session.exit["error"] = session.error
            session.exit["exit_code"] = session.error_code
        if session is self.main:
            if session.log is not None:
                session.log.close()
            session.exit["oom_killed"] = cgroups.oom_killed(self.groups)
            try:
                cgroups.remove(self.groups)
            except cgroups.CgroupError as e:
                _log(str(e))
            try:
                write_atomic("exit.json", json.dumps(session.exit))
            except OSError as e:
                # The daemon hears of the exit below all the same; only a
                # daemon restarted before it would miss the status.
                _log(f"cannot record the exit: {e}")
            if session.log is not None and session.log.dropped:
                _log(f"{session.log.dropped} bytes of output not logged: the disk was full")
            self.exiting_at = time.monotonic() + LINGER
        event = shimwire.message({"event": "exit", "session": session.id, "status": session.exit})
        for conn in list(self.conns.values()):
            if conn.events or conn.session is session:
                conn.send(event)
        if session is not self.main:
            # Health checks exec every few seconds for the container's whole
            # life: keep only the recent finished sessions.
            finished = [s for s in self.sessions.values() if s.finished and s is not self.main]
            for old in finished[:-MAX_FINISHED_EXECS]:
                del self.sessions[old.id]

    def done(self) -> bool:
        if not self.exiting_at:
            return False
        if time.monotonic() > self.exiting_at:
            return True
        return not any(c.out for c in self.conns.values()) and all(s.finished for s in self.sessions.values())

    def listen(self) -> None:
        """
        Listen on shim.sock; done before C{create} is answered, so whoever
        hears "created" can connect at once (attach before start).
        """
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink("shim.sock")
        except FileNotFoundError:
            pass
        listener.bind("shim.sock")
        os.chmod("shim.sock", 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self.listener = listener
        self.watch(listener.fileno(), _POLLIN)

    def serve(self) -> None:
        listener = self.listener
        assert listener is not None
        while not self.done():
            now = time.monotonic()
            timeout = None if not self.exiting_at else max(0, int((self.exiting_at - now) * 1000))
            if self.holding:
                due = min(s.held_since for s in self.holding) + HOLD
                wait = max(0, math.ceil((due - now) * 1000))
                timeout = wait if timeout is None else min(timeout, wait)
            for fd, events in self.poll.poll(timeout):
                if fd == self.wake_r:
                    try:
                        while os.read(fd, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif fd == listener.fileno():
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    self.add_connection(sock)
                else:
                    owner = self.fd_owner.get(fd)
                    if isinstance(owner, Connection):
                        if events & _POLLOUT:
                            owner.flush()
                        if events & (_POLLIN | _POLLERR) and not owner.closed:
                            owner.readable()
                    elif isinstance(owner, Session):
                        if fd in owner.outputs and events & (_POLLIN | _POLLERR):
                            owner.readable(fd)
                        elif fd == owner.stdin_fd and events & (_POLLOUT | _POLLERR):
                            owner.flush_stdin()
            if self.holding:
                now = time.monotonic()
                for session in [s for s in self.holding if now >= s.held_since + HOLD]:
                    session.release()
        try:
            os.unlink("shim.sock")
        except FileNotFoundError:
            pass


def _read_request(sock: socket.socket) -> tuple[Request, shimwire.FrameDecoder, list[tuple[int, bytes]]]:
    """
    The first request, the decoder, and the frames that came with it.
    """
    decoder = shimwire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise SystemExit(2)
        frames = decoder.feed(data)
        if frames:
            return shimwire.decode_message(frames[0][1]), decoder, frames[1:]


def main() -> None:
    """
    The shim's entry point (see the module docstring).
    """
    ctl = socket.socket(fileno=3)
    ctl.setblocking(True)
    request, decoder, early = _read_request(ctl)
    state_dir = request["state_dir"]
    os.makedirs(state_dir, 0o700, exist_ok=True)
    os.chdir(state_dir)
    lock = os.open("shim.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ctl.send(shimwire.message({"id": request.get("id"), "ok": False, "kind": "exists", "code": 125,
                                   "error": f"container {request['spec']['id']} has a running shim already"}))
        raise SystemExit(1)
    for stale in ("exit.json", "shim.sock"):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    try:
        child = os.fork()
    except OSError as e:
        ctl.send(shimwire.message({"id": request.get("id"), "ok": False, "kind": "start", "code": 125,
                                   "error": f"cannot start the container's shim: {fork_failure(e)}"}))
        raise SystemExit(1)
    if child:
        os._exit(0)
    os.setsid()
    # Exec'd processes are grandchildren (see container.run_exec): they
    # come back to the shim when their helper exits.
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    # Not dumpable, and so neither is any child until it execs the
    # container's command: a process of the container cannot ptrace, or
    # open /proc/PID/{exe,fd,cwd,mem} of, an exec helper that is already
    # in its PID namespace but still holds the shim's fds and the host's
    # Python binary (runc's CVE-2019-5736 class).
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open("shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = sys.stderr = open(2, "w", closefd=False)
    shim = Shim(request["spec"], state_dir)
    conn = shim.add_connection(ctl)
    conn.decoder = decoder
    shim.creator = conn
    shim.listen()
    try:
        created = shim.create(conn, request)
    except StartFailed as e:
        _log(f"create failed: {e.message}")
        conn.fail(request, "start", e.message, e.code)
        created = False
    except Exception as e:
        _log(f"create failed: {type(e).__name__}: {e}")
        conn.fail(request, "start", f"{type(e).__name__}: {e}", 125)
        created = False
    if not created and shim.main is None:
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(conn.out)
        except OSError:
            pass
        cgroups.remove(shim.groups)
        write_atomic("exit.json", json.dumps({"exit_code": 125, "signal": 0, "oom_killed": False,
                                              "started_ns": 0, "finished_ns": time.time_ns(),
                                              "error": "the shim could not create the container"}))
        os._exit(1)
    conn.frames(early)
    shim.serve()
    os._exit(0)


def _reap(*_: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def serve_forks() -> None:
    """
    The shim parent: the daemon's one long-lived process that every shim
    is forked from, so that the shims share the pages of its imported
    modules instead of each importing them again (a shim's own memory is
    then what it changes). Its objects are frozen out of the collector's
    reach first: a collection in a shim would otherwise touch, and so copy,
    every page of them.

    Each request on fd 3 is one byte with two descriptors (SCM_RIGHTS):
    the new shim's control socket, which becomes its fd 3, and where its
    stderr goes until it has forked away (see L{main}). Each is answered
    there with the PID of the shim forked for it (4 bytes, native order;
    -1 when the fork failed). The parent serves until the daemon closes
    fd 3, and dies with the daemon.
    """
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    ctl = socket.socket(fileno=3)
    ctl.setblocking(True)
    signal.signal(signal.SIGCHLD, _reap)
    gc.collect()
    gc.freeze()
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 1, 2)
        except OSError as e:
            _log(f"shim parent: {e}")
            break
        if not msg:
            break
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        sock_fd, err_fd = fds
        try:
            pid = os.fork()
        except OSError as e:
            # The daemon sees the shim's socket close unanswered.
            os.write(err_fd, f"cannot start the container's shim: {fork_failure(e)}\n".encode())
            pid = -1
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                ctl.close()
                os.dup2(err_fd, 1)
                os.dup2(err_fd, 2)
                os.dup2(sock_fd, 3)
                os.close(err_fd)
                os.close(sock_fd)
                main()
            except SystemExit as e:
                os._exit(e.code if isinstance(e.code, int) else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
            os._exit(1)
        os.close(sock_fd)
        os.close(err_fd)
        # The answer: which PID the request got (-1: none), in order.
        try:
            ctl.sendall(struct.pack("=i", pid))
        except OSError:
            break
    os._exit(0)
