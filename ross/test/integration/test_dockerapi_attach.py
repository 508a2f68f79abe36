"""
Attach and exec over the Docker API's hijacked connections, with docker-py:
docker's 8-byte frames without a terminal, raw bytes with one, input ended
by a half-close, detach keys, and clients that leave mid-stream.
"""

from __future__ import annotations

import socket
from typing import Any

import docker
from twisted.internet.defer import inlineCallbacks

from ross.testing.containers import sleep
from ross.testing.dockerapi import CLIENT_TIMEOUT, DockerAPITestCase


def raw(sock: Any) -> socket.socket:
    """
    The socket under docker-py's wrapper, with a bound on every read.
    """
    inner: socket.socket = getattr(sock, "_sock", sock)
    inner.settimeout(CLIENT_TIMEOUT)
    return inner


def read_all(sock: socket.socket) -> bytes:
    """
    Everything until the daemon closes the stream.
    """
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def demux(data: bytes) -> dict[int, bytes]:
    """
    docker's multiplexed stream by stream number; fails on a bad frame.
    """
    found: dict[int, bytes] = {}
    while data:
        header, data = data[:8], data[8:]
        assert len(header) == 8 and header[1:4] == b"\0\0\0", header
        size = int.from_bytes(header[4:], "big")
        found[header[0]] = found.get(header[0], b"") + data[:size]
        assert len(data) >= size
        data = data[size:]
    return found


class ExecTests(DockerAPITestCase):
    def running(self, *command: str, **options: Any) -> Any:
        container = self.docker.create_container("busybox", list(command), **options)
        self.docker.start(container["Id"])
        return container["Id"]

    @inlineCallbacks
    def test_exec_frames(self) -> Any:
        """
        Without a terminal, exec output comes in frames, stdout and stderr
        apart; inspect tells the exit code once it ended.
        """
        cid = yield self.call(self.running, "sleep", "60")
        created = yield self.call(self.docker.exec_create, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        before = yield self.call(self.docker.exec_inspect, created["Id"])
        self.assertEqual((before["Running"], before["ExitCode"]), (False, None))
        out, err = yield self.call(self.docker.exec_start, created["Id"], demux=True)
        self.assertEqual((out, err), (b"out\n", b"err\n"))
        inspect = yield self.wait_exec(created["Id"])
        self.assertEqual(inspect["ExitCode"], 3)
        self.assertEqual(inspect["ProcessConfig"]["entrypoint"], "sh")
        missing = yield self.call(self.docker.exec_create, cid, ["nosuchcommand"])
        output = yield self.call(self.docker.exec_start, missing["Id"])
        self.assertIn(b"executable file not found", output)
        inspect = yield self.call(self.docker.exec_inspect, missing["Id"])
        self.assertEqual(inspect["ExitCode"], 127)
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def test_exec_create_refusals(self) -> Any:
        """
        An exec docker refuses is refused at create with 400 and docker's
        message (the engine's check, as for the other listeners).
        """
        cid = yield self.call(self.running, "sleep", "60")
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"cmd": ["echo", "a\0b"]}, "contains a NUL byte"),
            ({"cmd": ["env"], "environment": ["=x"]}, "invalid environment variable: '=x'"),
            ({"cmd": ["pwd"], "workdir": "tmp"}, "the working directory 'tmp' is invalid"),
        ]
        for options, message in refusals:
            error = yield self.assertFailure(self.call(self.docker.exec_create, cid, **options),
                                             docker.errors.APIError)
            self.assertEqual(error.status_code, 400)
            self.assertIn(message, error.explanation)
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def wait_exec(self, exec_id: str) -> Any:
        for _ in range(200):
            inspect = yield self.call(self.docker.exec_inspect, exec_id)
            if not inspect["Running"]:
                return inspect
            yield sleep(0.05)
        self.fail(f"exec {exec_id} still running")

    @inlineCallbacks
    def test_exec_tty(self) -> Any:
        """
        With a terminal the stream is raw: the terminal's line endings, no
        frames.
        """
        cid = yield self.call(self.running, "sleep", "60")
        created = yield self.call(self.docker.exec_create, cid, ["sh", "-c", "echo one; echo two >&2"], tty=True)
        output = yield self.call(self.docker.exec_start, created["Id"], tty=True)
        self.assertEqual(output, b"one\r\ntwo\r\n")
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def test_exec_stdin_half_close(self) -> Any:
        """
        An exec's input is what the client writes; closing its writing side
        ends the input (cat sees EOF and exits), and the output still comes
        back on the same connection.
        """
        cid = yield self.call(self.running, "sleep", "60")
        created = yield self.call(self.docker.exec_create, cid, ["sh", "-c", "cat; echo done"], stdin=True)

        def talk() -> bytes:
            sock = raw(self.docker.exec_start(created["Id"], socket=True))
            try:
                sock.sendall(b"hello\n")
                sock.shutdown(socket.SHUT_WR)
                return read_all(sock)
            finally:
                sock.close()

        output = yield self.call(talk)
        self.assertEqual(demux(output), {1: b"hello\ndone\n"})
        inspect = yield self.wait_exec(created["Id"])
        self.assertEqual(inspect["ExitCode"], 0)
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def test_exec_client_leaves(self) -> Any:
        """
        A client that disconnects in the middle of an exec's output leaves
        the process running, and the daemon serving.
        """
        cid = yield self.call(self.running, "sleep", "60")
        created = yield self.call(self.docker.exec_create, cid, ["sh", "-c", "while :; do echo flood; done"])

        def read_some_then_leave() -> bytes:
            sock = raw(self.docker.exec_start(created["Id"], socket=True))
            try:
                return sock.recv(4096)
            finally:
                sock.close()

        first = yield self.call(read_some_then_leave)
        self.assertIn(b"flood", first)
        yield sleep(0.5)
        inspect = yield self.call(self.docker.exec_inspect, created["Id"])
        self.assertTrue(inspect["Running"])
        again = yield self.call(self.docker.exec_create, cid, ["echo", "still here"])
        output = yield self.call(self.docker.exec_start, again["Id"])
        self.assertEqual(output, b"still here\n")
        yield self.call(self.docker.remove_container, cid, force=True)


class AttachTests(DockerAPITestCase):
    @inlineCallbacks
    def test_attach_before_start(self) -> Any:
        """
        The CLI's run: attach to a created container (stdin too), then
        start it; nothing of its output is missed, and the client's
        half-close is the end of a StdinOnce container's input.
        """
        config = self.docker.create_container_config("busybox", ["sh", "-c", "echo ready; cat; echo bye >&2"],
                                                     stdin_open=True)
        config["StdinOnce"] = True
        created = yield self.call(self.docker.create_container_from_config, config)
        cid = created["Id"]

        def session() -> bytes:
            sock = raw(self.docker.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}))
            try:
                self.docker.start(cid)
                sock.sendall(b"typed\n")
                sock.shutdown(socket.SHUT_WR)
                return read_all(sock)
            finally:
                sock.close()

        output = yield self.call(session)
        self.assertEqual(demux(output), {1: b"ready\ntyped\n", 2: b"bye\n"})
        result = yield self.call(self.docker.wait, cid, timeout=30)
        self.assertEqual(result["StatusCode"], 0)
        yield self.call(self.docker.remove_container, cid)

    @inlineCallbacks
    def test_attach_logs_then_start(self) -> Any:
        """
        Attached with logs and stream to a created container, the client
        that starts it as soon as it has the head misses none of its output.
        """
        created = yield self.call(self.docker.create_container, "busybox", ["printf", "quick"])
        cid = created["Id"]

        def session() -> bytes:
            sock = raw(self.docker.attach_socket(cid, params={"stdout": 1, "stream": 1, "logs": 1}))
            try:
                self.docker.start(cid)
                return read_all(sock)
            finally:
                sock.close()

        output = yield self.call(session)
        self.assertEqual(demux(output), {1: b"quick"})
        yield self.call(self.docker.wait, cid, timeout=30)
        yield self.call(self.docker.remove_container, cid)

    @inlineCallbacks
    def test_attach_tty_detach_keys(self) -> Any:
        """
        With a terminal the stream is raw and the input is the terminal's
        (its echo comes back); the detach keys end the attachment and leave
        the container running.
        """
        created = yield self.call(self.docker.create_container, "busybox", ["cat"], tty=True, stdin_open=True)
        cid = created["Id"]
        yield self.call(self.docker.start, cid)

        def session() -> bytes:
            sock = raw(self.docker.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stream": 1,
                                                                "detachKeys": "ctrl-a"}))
            try:
                sock.sendall(b"abc\n")
                seen = b""
                while b"abc\r\n" not in seen or seen.count(b"abc") < 2:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    seen += chunk
                sock.sendall(b"\x01")
                return seen + read_all(sock)
            finally:
                sock.close()

        output = yield self.call(session)
        self.assertIn(b"abc\r\n", output)
        self.assertNotIn(b"\x00\x00\x00", output)
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertTrue(inspect["State"]["Running"])
        yield self.call(self.docker.remove_container, cid, force=True)

    @inlineCallbacks
    def test_attach_client_leaves(self) -> Any:
        """
        A client that disconnects from a flooding container's attach leaves
        it running; the next attach (with logs) works.
        """
        created = yield self.call(self.docker.create_container, "busybox",
                                  ["sh", "-c", "echo first; while :; do echo flood; done"])
        cid = created["Id"]
        yield self.call(self.docker.start, cid)

        def read_some_then_leave() -> bytes:
            sock = raw(self.docker.attach_socket(cid, params={"stdout": 1, "stream": 1}))
            try:
                return sock.recv(4096)
            finally:
                sock.close()

        first = yield self.call(read_some_then_leave)
        self.assertIn(b"flood", first)
        yield sleep(0.3)
        inspect = yield self.call(self.docker.inspect_container, cid)
        self.assertTrue(inspect["State"]["Running"])
        yield self.call(self.docker.kill, cid)
        yield self.call(self.docker.wait, cid, timeout=30)
        logs = yield self.call(self.docker.attach, cid, stdout=True, stderr=True, logs=True, stream=False)
        self.assertTrue(logs.startswith(b"first\nflood\n"))
        yield self.call(self.docker.remove_container, cid)
