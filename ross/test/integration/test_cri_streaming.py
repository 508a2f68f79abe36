"""
The CRI's streams: Exec, Attach and PortForward hand out one-time URLs
on the streaming server, where a client speaking SPDY/3.1 (as kubelet's
and crictl's client-go) gets the command's streams, its exit code, a
terminal, and connections to a port inside the pod. Tested with a SPDY
client of our own (L{ross.testing.spdyclient}) and, when it is built,
crictl itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.cri.v1 import api_pb2
from ross.protocols import spdy
from ross.testing.cri import CRITestCase, container_config, pod_config
from ross.testing.daemon import DaemonProcess
from ross.testing.spdyclient import SpdyClient, UpgradeRefused, WebSocketClient

# ./dev setup builds it there (and ./dev test says so in ROSS_CRICTL).
CRICTL = os.environ.get("ROSS_CRICTL") or shutil.which("crictl") or "/var/cache/ross/cri-tools/bin/crictl"


def status_of(client: SpdyClient, stream_id: int) -> Any:
    return json.loads(bytes(client.data[stream_id]))


def exec_streams(url: str, stdin: bytes | None = None, stderr: bool = True, tty: bool = False,
                 size: tuple[int, int] | None = None) -> tuple[bytes, bytes, Any]:
    """
    A whole remotecommand v4 session as client-go's: (stdout, stderr,
    status).
    """
    client = SpdyClient(url)
    try:
        error = client.open(streamType="error")
        if tty:
            resize = client.open(streamType="resize")
            if size is not None:
                client.send(resize, json.dumps({"Width": size[1], "Height": size[0]}).encode() + b"\n")
        if stdin is not None:
            sin = client.open(streamType="stdin")
        out = client.open(streamType="stdout")
        err = client.open(streamType="stderr") if stderr and not tty else None
        if stdin is not None:
            client.wait(lambda: {out} <= client.replied)
            if stdin:
                client.send(sin, stdin)
            client.send(sin, b"", fin=True)
        client.run_to_end()
        status = status_of(client, error) if client.data[error] else None
        assert error in client.finished or error in client.reset
        return bytes(client.data[out]), bytes(client.data[err]) if err else b"", status
    finally:
        client.close()


def exit_code(status: Any) -> int:
    if status["status"] == "Success":
        return 0
    assert status["reason"] == "NonZeroExitCode", status
    return int(status["details"]["causes"][0]["message"])


class StreamingTests(CRITestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.pod_id, self.pod = yield self.run_pod(pod_config())

    @inlineCallbacks
    def assertGone(self, cid: str, mark: bytes) -> Any:
        """
        Within 5 s no process of container C{cid} has C{mark} in its
        arguments.
        """
        for _ in range(50):
            _, ps, _ = yield self.exec_sync(cid, "ps", "-o", "args")
            if mark not in ps:
                return
            yield self.call(time.sleep, 0.1)
        self.assertNotIn(mark, ps)

    @inlineCallbacks
    def exec_url(self, cid: str, cmd: list[str], **fields: Any) -> Any:
        fields.setdefault("stdout", True)
        response = yield self.call(self.cri.runtime.Exec, api_pb2.ExecRequest(container_id=cid, cmd=cmd, **fields))
        return response.url

    @inlineCallbacks
    def test_exec(self) -> Any:
        """
        Exec without a terminal: each stream's output, the exit code as
        NonZeroExitCode's cause (Success for 0), stdin to its end; a
        command that cannot run is 127 with its reason on stderr.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], stderr=True)
        self.assertTrue(url.startswith("http://127.0.0.1:"), url)
        out, err, status = yield self.call(exec_streams, url)
        self.assertEqual((out, err, exit_code(status)), (b"out\n", b"err\n", 3))
        url = yield self.exec_url(cid, ["echo", "hello"], stderr=True)
        out, err, status = yield self.call(exec_streams, url)
        self.assertEqual((out, err, status["status"]), (b"hello\n", b"", "Success"))
        url = yield self.exec_url(cid, ["sh", "-c", "wc -c; echo done"], stdin=True)
        out, _, status = yield self.call(exec_streams, url, b"x" * 100000, False)
        self.assertEqual((out.split(), exit_code(status)), ([b"100000", b"done"], 0))
        url = yield self.exec_url(cid, ["no-such-command"], stderr=True)
        out, err, status = yield self.call(exec_streams, url)
        self.assertEqual(exit_code(status), 127)
        self.assertIn(b"no-such-command", err)

    @inlineCallbacks
    def test_exec_websocket(self) -> Any:
        """
        Exec over a WebSocket (v5.channel.k8s.io): output on channels 1
        and 2, the status on 3, stdin on 0 until v5's close; the server
        closes normally. v4 is spoken too; a protocol we do not speak is
        refused.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["sh", "-c", "tr a-z A-Z; echo err >&2; exit 5"], stdin=True, stderr=True)

        def run() -> WebSocketClient:
            client = WebSocketClient(url)
            try:
                client.send(0, b"loud")
                client.close_channel(0)
                client.run_to_end()
                return client
            finally:
                client.close()

        client = yield self.call(run)
        self.assertEqual(client.headers["sec-websocket-protocol"], "v5.channel.k8s.io")
        self.assertEqual((bytes(client.channels[1]), bytes(client.channels[2])), (b"LOUD", b"err\n"))
        self.assertEqual(exit_code(json.loads(bytes(client.channels[3]))), 5)
        self.assertEqual(client.close_code, 1000)
        url = yield self.exec_url(cid, ["echo", "four"])

        def run_v4() -> WebSocketClient:
            client = WebSocketClient(url, "v4.channel.k8s.io")
            try:
                client.run_to_end()
                return client
            finally:
                client.close()

        client = yield self.call(run_v4)
        self.assertEqual((bytes(client.channels[1]), json.loads(bytes(client.channels[3]))["status"]),
                         (b"four\n", "Success"))
        url = yield self.exec_url(cid, ["true"])
        failure = yield self.assertFailure(self.call(WebSocketClient, url, "channel.k8s.io"), UpgradeRefused)
        self.assertEqual(failure.status, 403)

    @inlineCallbacks
    def test_exec_tty(self) -> Any:
        """
        Exec with a terminal: one output stream, the size the client sent
        from the start, a terminal's line endings.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["sh", "-c", "stty size; tty"], tty=True, stdin=True)
        out, _, status = yield self.call(exec_streams, url, b"", True, True, (33, 111))
        self.assertEqual(exit_code(status), 0)
        self.assertIn(b"33 111\r\n", out)
        self.assertIn(b"/dev/pts/", out)

    @inlineCallbacks
    def test_exec_client_gone(self) -> Any:
        """
        A client that goes away ends its exec'd process.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["sleep", "4321"], stderr=True)

        def leave() -> None:
            client = SpdyClient(url)
            for kind in ("error", "stdout", "stderr"):
                client.open(streamType=kind)
            client.wait(lambda: len(client.replied) == 3)
            time.sleep(0.5)
            client.close()

        yield self.call(leave)
        yield self.assertGone(cid, b"4321")

    @inlineCallbacks
    def test_server_stops(self) -> Any:
        """
        A stopping streaming server ends its sessions: clients see the
        connection close, exec'd processes are killed, no URL is served.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["sleep", "5432"], stderr=True)
        client = yield self.call(SpdyClient, url)
        self.addCleanup(client.close)
        for kind in ("error", "stdout", "stderr"):
            client.open(streamType=kind)
        yield self.call(client.wait, lambda: len(client.replied) == 3)
        server = self.daemon.daemon.cri_streams
        yield server.stopService()
        yield self.call(client.run_to_end)
        self.assertTrue(client.eof)
        yield self.assertGone(cid, b"5432")
        code = yield self.failure_code(self.cri.runtime.Exec,
                                       api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)

    @inlineCallbacks
    def test_attach(self) -> Any:
        """
        Attach to a running shell: what the client types runs, its output
        comes back; the container's exit ends the session with Success.
        """
        config = container_config("shell", ["sh"], stdin=True)
        cid = yield self.start_container(self.pod_id, self.pod, config)
        response = yield self.call(self.cri.runtime.Attach, api_pb2.AttachRequest(
            container_id=cid, stdin=True, stdout=True, stderr=True))

        def attach() -> tuple[bytes, Any]:
            client = SpdyClient(response.url)
            try:
                error = client.open(streamType="error")
                sin = client.open(streamType="stdin")
                out = client.open(streamType="stdout")
                client.open(streamType="stderr")
                client.wait(lambda: len(client.replied) == 4)
                client.send(sin, b"echo hello from $((40+2))\n")
                client.wait(lambda: b"hello from 42\n" in client.data[out])
                client.send(sin, b"exit 0\n")
                client.run_to_end()
                return bytes(client.data[out]), status_of(client, error)
            finally:
                client.close()

        out, status = yield self.call(attach)
        self.assertEqual((out, status["status"]), (b"hello from 42\n", "Success"))

    @inlineCallbacks
    def test_attach_detach(self) -> Any:
        """
        A client whose input ends (crictl's detach keys) leaves a container
        without stdin_once: the session ends with Success, the container
        runs on, and can be attached again.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("shell", ["sh"], stdin=True,
                                                                                   tty=True))

        def attach(line: bytes, expected: bytes) -> tuple[bytes, Any]:
            response = self.cri.runtime.Attach(api_pb2.AttachRequest(
                container_id=cid, stdin=True, stdout=True, tty=True), timeout=30)
            client = SpdyClient(response.url)
            try:
                error = client.open(streamType="error")
                client.open(streamType="resize")
                sin = client.open(streamType="stdin")
                out = client.open(streamType="stdout")
                client.wait(lambda: len(client.replied) == 4)
                client.send(sin, line)
                client.wait(lambda: expected in client.data[out])
                client.send(sin, b"", fin=True)
                client.run_to_end()
                return bytes(client.data[out]), status_of(client, error)
            finally:
                client.close()

        for n in (1, 2):
            out, status = yield self.call(attach, b"echo mark-$((%d*7))\r" % n, b"mark-%d" % (n * 7))
            self.assertIn(b"mark-%d" % (n * 7), out)
            self.assertEqual(status["status"], "Success")
        status = yield self.call(self.cri.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=cid))
        self.assertEqual(status.status.state, api_pb2.CONTAINER_RUNNING)

    @inlineCallbacks
    def test_port_forward(self) -> Any:
        """
        PortForward reaches a server listening on the pod's loopback only;
        a closed port is an error on the error stream.
        """
        config = container_config("web", ["sh", "-c", "mkdir -p /www && echo hi-from-pod > /www/index.html && "
                                                       "exec httpd -f -p 127.0.0.1:8080 -h /www"])
        cid = yield self.start_container(self.pod_id, self.pod, config)
        for _ in range(50):
            code, _, _ = yield self.exec_sync(cid, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
            if code == 0:
                break
            yield self.call(time.sleep, 0.1)
        response = yield self.call(self.cri.runtime.PortForward,
                                   api_pb2.PortForwardRequest(pod_sandbox_id=self.pod_id))

        def forward() -> tuple[bytes, bytes, bytes]:
            client = SpdyClient(response.url, protocol="portforward.k8s.io")
            try:
                error = client.open(streamType="error", port="8080", requestID="0")
                data = client.open(streamType="data", port="8080", requestID="0")
                client.send(data, b"GET / HTTP/1.0\r\n\r\n", fin=True)
                client.wait(lambda: data in client.finished and error in client.finished)
                bad_error = client.open(streamType="error", port="1", requestID="1")
                bad_data = client.open(streamType="data", port="1", requestID="1")
                client.wait(lambda: bad_error in client.finished)
                return bytes(client.data[data]), bytes(client.data[error]), bytes(client.data[bad_error])
            finally:
                client.close()

        answer, error, refused = yield self.call(forward)
        self.assertIn(b"200 OK", answer)
        self.assertIn(b"hi-from-pod", answer)
        self.assertEqual(error, b"")
        self.assertIn(b"failed to connect to localhost:1", refused)

    @inlineCallbacks
    def test_port_forward_host_network(self) -> Any:
        """
        A hostNetwork pod's ports are the host's loopback's.
        """
        options = api_pb2.NamespaceOption(network=api_pb2.NODE)
        pod_id, _ = yield self.run_pod(pod_config(linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=options))))
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        response = yield self.call(self.cri.runtime.PortForward, api_pb2.PortForwardRequest(pod_sandbox_id=pod_id))

        def forward() -> bytes:
            client = SpdyClient(response.url, protocol="portforward.k8s.io")
            try:
                client.open(streamType="error", port=str(port), requestID="0")
                data = client.open(streamType="data", port=str(port), requestID="0")
                listener.settimeout(20)
                accepted, _ = listener.accept()  # bounded: settimeout above
                with accepted:
                    accepted.sendall(b"from-the-host")
                    accepted.shutdown(socket.SHUT_WR)
                    client.send(data, b"to-the-host", fin=True)
                    client.wait(lambda: data in client.finished)
                    accepted.settimeout(20)
                    assert accepted.recv(100) == b"to-the-host"
                return bytes(client.data[data])
            finally:
                client.close()

        got = yield self.call(forward)
        self.assertEqual(got, b"from-the-host")

    @inlineCallbacks
    def test_tokens(self) -> Any:
        """
        A URL serves once; an unknown token, or one for another kind of
        stream, is refused (404); a client offering no protocol we speak
        is told which we do (403).
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        url = yield self.exec_url(cid, ["true"])
        _, _, status = yield self.call(exec_streams, url, None, False)
        self.assertEqual(status["status"], "Success")
        for bad in (url, url[:-3] + "abc", url.replace("/exec/", "/attach/"), url + "/x"):
            failure = yield self.assertFailure(self.call(SpdyClient, bad), UpgradeRefused)
            self.assertEqual(failure.status, 404, bad)
        url = yield self.exec_url(cid, ["true"])
        failure = yield self.assertFailure(self.call(SpdyClient, url, "v1.channel.k8s.io"), UpgradeRefused)
        self.assertEqual(failure.status, 403)
        # The token was spent on that refusal too.
        failure = yield self.assertFailure(self.call(SpdyClient, url), UpgradeRefused)
        self.assertEqual(failure.status, 404)

    @inlineCallbacks
    def test_token_expires(self) -> Any:
        """
        A URL not used within its minute is refused.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        requests = self.daemon.daemon.cri_streams.requests
        requests._ttl = 0.2
        url = yield self.exec_url(cid, ["true"])
        yield self.call(time.sleep, 0.5)
        failure = yield self.assertFailure(self.call(SpdyClient, url), UpgradeRefused)
        self.assertEqual(failure.status, 404)

    @inlineCallbacks
    def test_hostile_client(self) -> Any:
        """
        Broken SPDY (a huge frame, a wrong version, garbage headers, even
        stream IDs) ends that connection alone; the daemon serves on.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        attacks = [
            spdy.data_frame(1, b"")[:4] + (0xFFFFFF).to_bytes(4, "big"),
            spdy.control_frame(spdy.SYN_STREAM, 0, b"\0" * 10 + b"not zlib at all"),
            b"\x80\x02\x00\x01" + b"\0" * 12,
            spdy.control_frame(spdy.SYN_STREAM, 0, (2).to_bytes(4, "big") + b"\0" * 6
                               + spdy.HeaderCodec().encode({"streamtype": ["error"]})),
            spdy.control_frame(spdy.SYN_STREAM, 0, (1).to_bytes(4, "big") + b"\0" * 6
                               + spdy.HeaderCodec()._deflate.compress(b"\0" * 200000)
                               + spdy.HeaderCodec()._deflate.flush()),
        ]
        for attack in attacks:
            url = yield self.exec_url(cid, ["true"])

            def send() -> bool:
                client = SpdyClient(url)
                try:
                    client.send_raw(attack)
                    client.run_to_end()
                    return client.eof
                finally:
                    client.close()

            closed = yield self.call(send)
            self.assertTrue(closed)
        url = yield self.exec_url(cid, ["echo", "still"])
        out, _, status = yield self.call(exec_streams, url, None, False)
        self.assertEqual((out, status["status"]), (b"still\n", "Success"))

    @inlineCallbacks
    def test_bad_requests(self) -> Any:
        """
        Exec, Attach and PortForward check their request before handing out
        a URL.
        """
        cid = yield self.start_container(self.pod_id, self.pod, container_config("box", ["sleep", "600"]))
        stopped = yield self.start_container(self.pod_id, self.pod, container_config("done", ["true"]))
        for _ in range(50):
            status = yield self.call(self.cri.runtime.ContainerStatus,
                                     api_pb2.ContainerStatusRequest(container_id=stopped))
            if status.status.state == api_pb2.CONTAINER_EXITED:
                break
            yield self.call(time.sleep, 0.1)
        runtime = self.cri.runtime
        for fn, request, expected in [
            (runtime.Exec, api_pb2.ExecRequest(container_id=cid, stdout=True), grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Exec, api_pb2.ExecRequest(container_id=cid, cmd=["true"]), grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Exec, api_pb2.ExecRequest(container_id=cid, cmd=["echo", "a\0b"], stdout=True),
             grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Exec, api_pb2.ExecRequest(container_id=cid, cmd=[""], stdout=True),
             grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Exec, api_pb2.ExecRequest(container_id=cid, cmd=["true"], tty=True, stdout=True, stderr=True),
             grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Exec, api_pb2.ExecRequest(container_id="0" * 64, cmd=["true"], stdout=True),
             grpc.StatusCode.NOT_FOUND),
            (runtime.Exec, api_pb2.ExecRequest(container_id=stopped, cmd=["true"], stdout=True),
             grpc.StatusCode.FAILED_PRECONDITION),
            (runtime.Attach, api_pb2.AttachRequest(container_id=cid), grpc.StatusCode.INVALID_ARGUMENT),
            (runtime.Attach, api_pb2.AttachRequest(container_id=stopped, stdout=True),
             grpc.StatusCode.FAILED_PRECONDITION),
            (runtime.Attach, api_pb2.AttachRequest(container_id=self.pod_id, stdout=True),
             grpc.StatusCode.NOT_FOUND),
            (runtime.PortForward, api_pb2.PortForwardRequest(pod_sandbox_id=cid), grpc.StatusCode.NOT_FOUND),
            (runtime.PortForward, api_pb2.PortForwardRequest(pod_sandbox_id=self.pod_id, port=[70000]),
             grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            code = yield self.failure_code(fn, request)
            self.assertEqual(code, expected, request)
        self.assertEqual(len(self.daemon.daemon.cri_streams.requests), 0)


class CrictlTests(CRITestCase):
    """
    crictl (client-go's SPDY client) against the streaming server.
    """

    def setUp(self) -> Any:
        if not os.access(CRICTL, os.X_OK):
            raise self.skipTest(f"no crictl at {CRICTL} (set ROSS_CRICTL)")
        return super().setUp()

    def crictl(self, *args: str, stdin: bytes = b"") -> Any:
        return self.call(subprocess.run, [CRICTL, "--runtime-endpoint", f"unix://{self.cri_socket}",
                                          "--timeout", "20s", *args],
                         input=stdin, capture_output=True, timeout=60)

    def test_spdy(self) -> Any:
        """
        crictl's default transport, SPDY/3.1: exec (output, stdin, exit
        code), attach and port-forward.
        """
        return self.exec_attach_port_forward("spdy", 8081)

    def test_websocket(self) -> Any:
        """
        crictl --transport websocket: remotecommand v5 on a WebSocket, and
        port-forward's SPDY tunnelled in one.
        """
        return self.exec_attach_port_forward("websocket", 8082)

    @inlineCallbacks
    def exec_attach_port_forward(self, transport: str, port: int) -> Any:
        pod_id, pod = yield self.run_pod(pod_config())
        config = container_config("web", ["sh", "-c", "mkdir -p /www && echo via-crictl > /www/index.html && "
                                                      f"exec httpd -f -p 127.0.0.1:{port} -h /www"])
        cid = yield self.start_container(pod_id, pod, config)
        done = yield self.crictl("exec", "--transport", transport, cid, "sh", "-c", "echo out; echo err >&2; exit 7")
        # crictl says the code (client-go read it from the error stream)
        # and fails.
        self.assertEqual((done.returncode, done.stdout), (1, b"out\n"), done.stderr)
        self.assertIn(b"\nerr\n", done.stderr)
        self.assertIn(b"command terminated with exit code 7", done.stderr)
        done = yield self.crictl("exec", "--transport", transport, "-i", cid, "tr", "a-z", "A-Z", stdin=b"shout\n")
        self.assertEqual((done.returncode, done.stdout), (0, b"SHOUT\n"), done.stderr)

        shell = yield self.start_container(pod_id, pod, container_config("shell", ["sh"], stdin=True,
                                                                         stdin_once=True))
        done = yield self.crictl("attach", "--transport", transport, "-i", shell,
                                 stdin=b"echo attached-$((6*7))\n")
        self.assertEqual((done.returncode, done.stdout), (0, b"attached-42\n"), done.stderr)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        forward = subprocess.Popen([CRICTL, "--runtime-endpoint", f"unix://{self.cri_socket}", "port-forward",
                                    "--transport", transport, pod_id, f"{local}:{port}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def fetch() -> bytes:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        with socket.create_connection(("127.0.0.1", local), timeout=10) as c:
                            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                            answer = b""
                            while chunk := c.recv(65536):
                                answer += chunk
                            if answer:
                                return answer
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        return b""
                    time.sleep(0.2)

            answer = yield self.call(fetch)
            self.assertIn(b"via-crictl", answer)
        finally:
            forward.terminate()
            yield self.call(forward.communicate, None, 10)


class StreamAddressTests(TestCase):
    """
    --cri-stream-address as twistd takes it.
    """

    timeout = 120

    @inlineCallbacks
    def test_fixed_port(self) -> Any:
        """
        The daemon serves the streams on the port given, and hands out URLs
        on it.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        daemon = DaemonProcess(extra=["--cri-stream-address", f"127.0.0.1:{port}"])
        self.addCleanup(daemon.cleanup)
        self.addCleanup(daemon.stop)
        yield deferToThread(daemon.start)
        self.assertIn(f"CRI streaming server listening on http://127.0.0.1:{port}", daemon.read_log())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /exec/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(10)
            self.assertIn(b" 404 ", c.recv(1000))

    @inlineCallbacks
    def test_refuses_open_address(self) -> Any:
        """
        Tokens are credentials and the server speaks plain HTTP: a
        non-loopback address stops the daemon before it starts.
        """
        daemon = DaemonProcess()
        self.addCleanup(daemon.cleanup)
        command = daemon.command() + ["--cri-stream-address", "0.0.0.0:10010"]
        result = yield deferToThread(subprocess.run, command, capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"--cri-stream-address 0.0.0.0:10010", result.stdout + result.stderr)
        self.assertIn(b"loopback addresses only", result.stdout + result.stderr)
