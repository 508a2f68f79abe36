"""
The CLI's own gRPC client (ross.client.unixgrpc) against a real daemon: on
a unix socket, commands that succeed never import grpcio, say the same as
through grpcio (C{ROSS_GRPCIO=1}), carry the bearer token, and fail with
the same messages.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess, run_cli
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
