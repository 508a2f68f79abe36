"""
The CLI's own gRPC client (ross.client.h2grpc) against a real daemon: on
a unix socket and on TCP with mutual TLS, commands that succeed never
import grpcio, say the same as through grpcio (C{ROSS_GRPCIO=1}), carry
the bearer token, and fail with the same messages.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing import certs
from ross.testing.daemon import DaemonProcess, run_cli, short_tempdir
from ross.testing.images import docker_archive

TOKEN = "s3cret-token"


class CliClientTests(TestCase):
    timeout = 240

    def test_same_answers_without_grpcio(self) -> Any:
        daemon = DaemonProcess(token=TOKEN)
        self.addCleanup(daemon.cleanup)
        return deferToThread(self._check, daemon)

    def _cli(self, daemon: DaemonProcess, *args: str, grpcio: bool = False, token: str = TOKEN,
             importtime: bool = False) -> tuple[int, str, str]:
        env = {"ROSS_TOKEN": token, "ROSS_GRPCIO": "1" if grpcio else "0"}
        if importtime:
            env["PYTHONPROFILEIMPORTTIME"] = "1"
        result = run_cli(daemon.address, *args, env=env)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def _check(self, daemon: DaemonProcess) -> None:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar").path
        code, out, err = self._cli(daemon, "load", "-i", str(archive))
        self.assertEqual(code, 0, err)
        code, out, err = self._cli(daemon, "run", "-d", "--name", "c1", "busybox", "sh", "-c",
                                   "echo one; echo two >&2; sleep 60")
        self.assertEqual(code, 0, err)
        self.addCleanup(self._cli, daemon, "rm", "-f", "c1")

        local = daemon.base / "local.txt"
        local.write_bytes(b"copied\n" * 1000)
        for args in (["ps", "--no-trunc"], ["inspect", "c1"], ["images"], ["logs", "c1"],
                     ["run", "--rm", "busybox", "echo", "ran"], ["exec", "c1", "cat", "/etc/hostname"],
                     ["cp", str(local), "c1:/tmp/"], ["exec", "c1", "md5sum", "/tmp/local.txt"],
                     ["cp", "c1:/tmp/local.txt", "-"]):
            fast = self._cli(daemon, *args, importtime=True)
            self.assertEqual(fast[0], 0, f"{args}: {fast[2][-2000:]}")
            imported = [line.rsplit("|", 1)[-1].strip() for line in fast[2].splitlines() if line.startswith("import time")]
            self.assertNotIn("grpc", imported, f"ross {' '.join(args)} imported grpcio")
            slow = self._cli(daemon, *args, grpcio=True)
            self.assertEqual(slow[0], 0, slow[2])
            if args[0] == "ps":
                # "Up 2 seconds" may tick between the two.
                self.assertEqual([line.split()[:2] for line in fast[1].splitlines()],
                                 [line.split()[:2] for line in slow[1].splitlines()])
            elif args[0] == "inspect":
                self.assertEqual(json.loads(fast[1])[0]["Id"], json.loads(slow[1])[0]["Id"])
            else:
                self.assertEqual(fast[1], slow[1], args)
        self.assertIn("ran", self._cli(daemon, "run", "--rm", "busybox", "echo", "ran")[1])

        # The same errors, with docker's exit codes.
        for args in (["inspect", "nosuch"], ["stop", "nosuch"], ["logs", "nosuch"], ["rm", "c1"]):
            fast = self._cli(daemon, *args)
            slow = self._cli(daemon, *args, grpcio=True)
            self.assertNotEqual(fast[0], 0, args)
            self.assertEqual((fast[0], fast[2]), (slow[0], slow[2]), args)

        # The token is checked on the unix socket too.
        code, out, err = self._cli(daemon, "ps", token="wrong")
        self.assertEqual(code, 125)
        self.assertIn("refused the credentials", err)

        # No daemon there.
        missing = run_cli(f"unix://{daemon.base}/none.sock", "ps", env={"ROSS_GRPCIO": "0"})
        self.assertEqual(missing.returncode, 125)
        self.assertIn(b"Cannot connect to the Ross daemon", missing.stderr)


class TlsCliClientTests(TestCase):
    """
    A remote client's path: TCP with mutual TLS and a token, through the
    CLI's own client.
    """

    timeout = 240

    def test_same_answers_over_tls(self) -> Any:
        return deferToThread(self._check)

    def _check(self) -> None:
        authority, other = certs.authority(), certs.authority("Another CA")
        base = short_tempdir()
        server_cert, server_key = authority.issue("localhost", server=True).write(base, "server")
        cert, key = authority.issue("client").write(base, "client")
        (base / "ca.pem").write_bytes(authority.pem)
        (base / "other.pem").write_bytes(other.pem)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        daemon = DaemonProcess(base, token=TOKEN, extra=[
            "--listen", f"tcp://127.0.0.1:{port}", "--tls-cert", server_cert, "--tls-key", server_key,
            "--tls-ca", str(base / "ca.pem")])
        self.addCleanup(daemon.cleanup)
        daemon.start()
        remote = f"tcp://127.0.0.1:{port}"
        files = {"ROSS_TLS_CA": str(base / "ca.pem"), "ROSS_TLS_CERT": cert, "ROSS_TLS_KEY": key}

        def cli(*args: str, grpcio: bool = False, env: dict[str, str] | None = None) -> tuple[int, str, str]:
            full = {"ROSS_TOKEN": TOKEN, "ROSS_GRPCIO": "1" if grpcio else "0", **files, **(env or {})}
            result = run_cli(remote, *args, env=full)
            return result.returncode, result.stdout.decode(), result.stderr.decode()

        archive = docker_archive(daemon.base / "busybox.tar").path
        code, out, err = cli("load", "-i", str(archive))
        self.assertEqual(code, 0, err)
        code, out, err = cli("run", "-d", "--name", "c1", "busybox", "sh", "-c", "echo one; sleep 60")
        self.assertEqual(code, 0, err)
        self.addCleanup(cli, "rm", "-f", "c1")
        for args in (["images"], ["logs", "c1"], ["exec", "c1", "cat", "/etc/hostname"],
                     ["run", "--rm", "busybox", "echo", "ran"]):
            fast = run_cli(remote, *args, env={"ROSS_TOKEN": TOKEN, "ROSS_GRPCIO": "0", **files,
                                               "PYTHONPROFILEIMPORTTIME": "1"})
            self.assertEqual(fast.returncode, 0, f"{args}: {fast.stderr[-2000:]!r}")
            imported = [line.rsplit("|", 1)[-1].strip() for line in fast.stderr.decode().splitlines()
                        if line.startswith("import time")]
            self.assertNotIn("grpc", imported, f"ross {' '.join(args)} imported grpcio")
            slow = cli(*args, grpcio=True)
            self.assertEqual((fast.stdout.decode(), slow[0]), (slow[1], 0), args)
        code, out, err = cli("version")
        self.assertIn("HTTP/2 on TCP with TLS", out)

        # What a remote client can get wrong: each refused, with words.
        for env, words in (({"ROSS_TLS_CA": str(base / "other.pem")}, "certificate verify failed"),
                           ({"ROSS_TLS_CERT": "", "ROSS_TLS_KEY": ""}, "Cannot connect"),
                           ({"ROSS_TOKEN": "wrong"}, "refused the credentials"),
                           ({"ROSS_TLS_KEY": str(base / "ca.pem")}, "cannot use the TLS files")):
            code, out, err = cli("ps", env=env)
            self.assertEqual(code, 125, (env, err))
            self.assertIn(words, err, env)
