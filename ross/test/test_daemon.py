"""
Tests of ``twistd -n ross`` as users run it: a real daemon process.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.syslog import SyslogObserver
from twisted.trial.unittest import TestCase

from ross.testing import certs
from ross.testing.daemon import DaemonProcess
from ross.testing.images import docker_archive
from ross.testing.registry import RegistryServer
from ross.tlog import observer_for
from ross.v1 import system_pb2, system_pb2_grpc

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class DaemonProcessTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)

    @inlineCallbacks
    def test_cli_against_daemon(self) -> Any:
        """
        The daemon serves ``ross version``, ``ross info`` and ``ross events``
        over its unix socket.
        """
        yield deferToThread(self.daemon.start)
        result = yield deferToThread(self.daemon.ross, "version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Server: Ross Engine", result.stdout)
        result = yield deferToThread(self.daemon.ross, "info", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b'"StorageDriver":"overlayfs"', result.stdout)
        result = yield deferToThread(self.daemon.ross, "events", "--since", "1h", "--until", "0s")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b" daemon start ross", result.stdout)

    @inlineCallbacks
    def test_starts_without_cryptography(self) -> Any:
        """
        A daemon without TLS listeners has not loaded cryptography (12 MiB)
        once it serves: its reactor was installed without pyOpenSSL.
        """
        yield deferToThread(self.daemon.start)
        result = yield deferToThread(self.daemon.ross, "version")
        self.assertEqual(result.returncode, 0, result.stderr)
        assert self.daemon.process is not None
        maps = Path(f"/proc/{self.daemon.process.pid}/maps").read_text()
        self.assertIn("/grpc/", maps)
        self.assertNotIn("/cryptography/", maps)

    @inlineCallbacks
    def test_second_daemon_refused(self) -> Any:
        """
        A second daemon on the same root refuses to start, naming the first.
        """
        yield deferToThread(self.daemon.start)
        second = DaemonProcess(base=self.daemon.base)
        result = yield deferToThread(
            subprocess.run, second.command(), capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        assert self.daemon.process is not None
        self.assertIn(
            f"another Ross daemon (pid {self.daemon.process.pid}) is using --root".encode(),
            result.stdout + result.stderr)
        # The first one is unharmed.
        result = yield deferToThread(self.daemon.ross, "version")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_sigterm_stops_cleanly(self) -> Any:
        """
        SIGTERM ends open streams with UNAVAILABLE, exits 0 and removes the
        socket; the lock is released so a new daemon starts.
        """
        yield deferToThread(self.daemon.start)
        channel = grpc.insecure_channel(f"unix:{self.daemon.socket}")
        self.addCleanup(channel.close)
        stream = system_pb2_grpc.SystemServiceStub(channel).Events(system_pb2.EventsRequest())
        outcome: list[Any] = []
        ready = threading.Event()

        def follow() -> None:
            try:
                ready.set()
                for _ in stream:
                    pass
                outcome.append("ended OK")
            except grpc.RpcError as e:
                outcome.append(e.code())

        reader = threading.Thread(target=follow)
        reader.start()
        yield deferToThread(ready.wait, 5)
        yield deferToThread(__import__("time").sleep, 0.3)
        self.daemon.signal(signal.SIGTERM)
        assert self.daemon.process is not None
        code = yield deferToThread(self.daemon.process.wait, 30)
        yield deferToThread(reader.join, 10)
        # twistd re-raises the signal after a clean shutdown.
        self.assertIn(code, (0, -signal.SIGTERM), self.daemon.read_log())
        self.assertIn("Server Shut Down.", self.daemon.read_log())
        self.assertEqual(outcome, [grpc.StatusCode.UNAVAILABLE])
        self.assertFalse(os.path.exists(self.daemon.socket))
        yield deferToThread(self.daemon.start)

    @inlineCallbacks
    def test_refuses_open_tcp(self) -> Any:
        """
        A non-loopback TCP listener without TLS stops the daemon before it
        starts, with the reason.
        """
        command = self.daemon.command() + ["--listen", "tcp://0.0.0.0:23750"]
        result = yield deferToThread(subprocess.run, command, capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"refusing to listen on tcp://0.0.0.0:23750 without TLS", result.stdout + result.stderr)

    @inlineCallbacks
    def test_userns_remap_without_ranges(self) -> Any:
        """
        --userns-remap for a user without subordinate ids stops the daemon
        before it starts, saying where it looked.
        """
        empty = os.path.join(self.daemon.base, "subuid")
        with open(empty, "w") as f:
            f.write("someone:100000:65536\n")
        command = self.daemon.command() + ["--userns-remap", "daemon", "--subuid-file", empty]
        result = yield deferToThread(subprocess.run, command, capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"ross: --userns-remap: no subuid ranges found for 'daemon' in {empty}".encode(),
                      result.stdout + result.stderr)

    @inlineCallbacks
    def test_refuses_to_daemonize(self) -> Any:
        """
        Without twistd's -n the daemon refuses to start, saying how to start
        it, and makes nothing: a twistd that forked it into the background
        would have left its threads, shims and locks in the parent that
        exits, and served nothing.
        """
        self.daemon.twistd = ["--pidfile=", "--logfile", str(self.daemon.base / "twistd.log")]
        result = yield deferToThread(subprocess.run, self.daemon.command(), capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"Ross runs in the foreground, as dockerd does: start it with 'twistd -n ross'",
                      result.stdout + result.stderr)
        self.assertFalse(self.daemon.root.exists())
        self.assertFalse(self.daemon.exec_root.exists())

    @inlineCallbacks
    def test_logs_to_twistds_logfile(self) -> Any:
        """
        twistd's --logfile is where the daemon logs, still from --log-level
        up; nothing of it goes to stdout.
        """
        logfile = self.daemon.base / "ross.log"
        self.daemon.twistd = ["--pidfile=", "-n", "--logfile", str(logfile)]
        self.daemon.extra += ["--log-level", "debug"]
        yield deferToThread(self.daemon.start)
        result = yield deferToThread(self.daemon.ross, "version")
        self.assertEqual(result.returncode, 0, result.stderr)
        code = yield deferToThread(self.daemon.stop)
        self.assertIn(code, (0, -signal.SIGTERM))
        logged = logfile.read_text()
        self.assertIn("engine started (root ", logged)
        self.assertIn("Server Shut Down.", logged)
        self.assertNotIn("engine started (root ", self.daemon.read_log())
        self.daemon.extra[-1] = "error"
        logfile.unlink()
        yield deferToThread(self.daemon.start)
        yield deferToThread(self.daemon.stop)
        self.assertNotIn("engine started (root ", logfile.read_text())

    @inlineCallbacks
    def test_help_lists_options(self) -> Any:
        result = yield deferToThread(subprocess.run, [TWISTD, "ross", "--help"], capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 0)
        for option in (b"--root", b"--exec-root", b"--listen", b"--tls-cert", b"--tls-key", b"--tls-ca",
                       b"--auth-token-file", b"--log-level", b"--userns-remap", b"--subuid-file", b"--subgid-file"):
            self.assertIn(option, result.stdout)


class LogObserverTests(TestCase):
    """
    L{observer_for}: where the daemon's log goes, from which level up.
    """

    def test_logfile(self) -> None:
        path = Path(self.mktemp())
        observer = observer_for("warn", str(path))
        log = Logger(namespace="ross.test", observer=observer)
        log.info("not this one")
        log.warn("a warning {n}", n=1)
        text = path.read_text()
        self.assertIn("[ross.test#warn] a warning 1", text)
        self.assertNotIn("not this one", text)

    def test_syslog(self) -> None:
        opened: list[tuple[Any, ...]] = []
        sent: list[tuple[int, str]] = []
        self.patch(SyslogObserver, "openlog", lambda _, *args: opened.append(args))
        self.patch(SyslogObserver, "syslog", lambda _, priority, line: sent.append((priority, line)))
        log = Logger(namespace="ross.test", observer=observer_for("info", "ignored.log", "rossd"))
        log.debug("not this one")
        log.error("broken {what}", what="pipe")
        self.assertEqual([args[0] for args in opened], ["rossd"])
        self.assertEqual(len(sent), 1)
        self.assertIn("broken pipe", sent[0][1])
        self.assertFalse(os.path.exists("ignored.log"))


class TLSThroughTwistedTests(TestCase):
    """
    The daemon's reactor is installed without pyOpenSSL (L{ross.tap}), and
    the daemon still speaks TLS wherever it does so through Twisted.
    """

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir(parents=True)
        self.ca = certs.authority()
        self.registry = RegistryServer(self.tmp / "registry",
                                       tls=self.ca.issue("localhost", server=True).write(self.tmp, "registry"))
        await self.registry.start()
        self.addCleanup(self._registry_gone)
        certs_dir = self.tmp / "certs.d"
        (certs_dir / self.registry.host).mkdir(parents=True)
        (certs_dir / self.registry.host / "ca.crt").write_bytes(self.ca.pem)
        cert, key = self.ca.issue("localhost", server=True).write(self.tmp, "daemon")
        self.daemon = DaemonProcess(extra=["--registry-certs-dir", str(certs_dir),
                                           "--docker-listen", "tcp://127.0.0.1:0",
                                           "--tls-cert", cert, "--tls-key", key])
        self.addCleanup(self.daemon.cleanup)
        await deferToThread(self.daemon.start)

    async def _registry_gone(self) -> None:
        await self.registry.stop()
        self.registry.remove()

    def ross(self, *args: str) -> Deferred[bytes]:
        def run() -> bytes:
            result = self.daemon.ross(*args)
            self.assertEqual(result.returncode, 0, (args, result.stderr, self.daemon.read_log()[-3000:]))
            return result.stdout
        return deferToThread(run)

    async def test_push_pull_and_docker_api_over_tls(self) -> None:
        """
        A push to a registry that speaks only TLS, and a pull back, work; so
        does the Docker API's TCP listener, checked with a client that trusts
        the CA.
        """
        archive = docker_archive(self.tmp / "busybox.tar", tags=("bb:latest",))
        name = f"{self.registry.host}/bb:tls"
        await self.ross("load", "-i", str(archive.path))
        await self.ross("tag", "bb:latest", name)
        await self.ross("push", name)
        await self.ross("rmi", name)
        await self.ross("pull", name)
        images = await self.ross("images", "--format", "{{.Repository}}:{{.Tag}}")
        self.assertIn(name.encode(), images.split())

        port = int(re.findall(r"Docker API listening on tcp://127\.0\.0\.1:(\d+)", self.daemon.read_log())[0])

        def ping() -> tuple[int, bytes]:
            context = ssl.create_default_context(cadata=self.ca.pem.decode())
            # As docker's clients do.
            context.set_alpn_protocols(["http/1.1"])
            connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
            try:
                connection.request("GET", "/_ping")
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        self.assertEqual(await deferToThread(ping), (200, b"OK"))
