"""
A real pseudo-terminal for tests of interactive commands: the program runs
with the PTY as its controlling terminal, the test types into it, reads the
screen's bytes, resizes it, and checks its mode afterwards.

Blocking: call from a thread in trial tests.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Sequence

# Makes its stdin (the PTY slave) the controlling terminal, then execs: no
# Python code runs in a forked child of the (threaded) test process.
_SETSID = "import os,fcntl,termios,sys; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"


class Terminal:
    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols, signal_child=False)
        self.initial_mode = termios.tcgetattr(self.slave)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SETSID, *argv],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env, close_fds=True,
        )
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._grew = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._grew:
                self._buffer += data
                self._grew.notify_all()

    @property
    def output(self) -> bytes:
        with self._lock:
            return bytes(self._buffer)

    @property
    def length(self) -> int:
        with self._lock:
            return len(self._buffer)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, pattern: bytes, timeout: float = 15.0, start: int = 0) -> re.Match[bytes]:
        """
        Wait until the output (from offset C{start}) matches C{pattern}.
        Sleeps until output arrives (no polling: a busy waiter would hold
        the GIL from the reader and add its switch interval to every
        round trip); only new output is searched again, with a margin for
        matches that straddle reads.
        """
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        checked = start
        with self._grew:
            while True:
                m = regex.search(bytes(self._buffer[max(start, checked - 4096):]))
                if m:
                    return m
                checked = len(self._buffer)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = bytes(self._buffer[-2000:])
                    raise AssertionError(f"timed out waiting for {pattern!r}; output ends with:\n{tail!r}")
                self._grew.wait(remaining)

    def resize(self, rows: int, cols: int, signal_child: bool = True) -> None:
        # TIOCSWINSZ on the master makes the kernel send SIGWINCH to the
        # terminal's foreground process group.
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def mode(self) -> list:  # type: ignore[type-arg]
        return termios.tcgetattr(self.slave)

    def wait(self, timeout: float = 30.0) -> int:
        """
        The process's exit code once it exits, and once the reader has
        taken what it wrote last: the reader thread may not have read it
        yet when the process is gone (a test then missed its last line).
        """
        code = self.process.wait(timeout)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pending = struct.unpack("i", fcntl.ioctl(self.master, termios.FIONREAD, b"\0\0\0\0"))[0]
            if not pending:
                break
            time.sleep(0.01)
        # Read but maybe not yet added: the reader adds it within a moment.
        with self._grew:
            self._grew.wait(0.05)
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
