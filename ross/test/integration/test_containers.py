"""
Containers for real: the busybox image from the host's busybox-static,
run through the API and the CLI against an in-process daemon.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import grpc
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.errors import FailedPrecondition, NotFound
from ross.testing.containers import ContainerTestCase, catches, sleep
from ross.testing.leaks import mounts_under
from ross.testing.daemon import REPO, run_cli
from ross.v1 import container_pb2


class RunTests(ContainerTestCase):
    @inlineCallbacks
    def test_exit_codes(self) -> Any:
        """
        run exits with the container's code; 126 when the command cannot be
        invoked, 127 when it is not found, 125 when Ross fails.
        """
        cases = [
            (["true"], 0),
            (["sh", "-c", "exit 3"], 3),
            (["/etc/passwd"], 126),
            (["nosuchcommand"], 127),
        ]
        for command, code in cases:
            result = yield self.ross("run", "--rm", "busybox", *command)
            self.assertEqual(result.returncode, code, (command, result.stderr))
        result = yield self.ross("run", "--rm", "busybox", "nosuchcommand")
        self.assertIn(b'"nosuchcommand": executable file not found in $PATH', result.stderr)
        # (--pull never: without it the run would ask Docker Hub first, as
        # docker's does; the registry tests cover that.)
        result = yield self.ross("run", "--rm", "--pull", "never", "nosuchimage", "true")
        self.assertEqual((result.returncode, result.stderr), (125, b"Error: No such image: nosuchimage:latest\n"))
        # Detached too: a --rm container whose command cannot run is
        # removed by the daemon, as dockerd's start does.
        result = yield self.ross("run", "-d", "--rm", "busybox", "nosuchcommand")
        self.assertEqual(result.returncode, 127, result.stderr)
        self.assertIn(b'"nosuchcommand": executable file not found in $PATH', result.stderr)
        self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_streams_kept_apart(self) -> Any:
        """
        Attached run streams stdout and stderr separately and in order.
        """
        result = yield self.ross("run", "--rm", "busybox", "sh", "-c",
                                 "for i in 1 2 3; do echo out$i; echo err$i >&2; done")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"out1\nout2\nout3\n")
        self.assertEqual(result.stderr, b"err1\nerr2\nerr3\n")
        # -a: only the streams named (docker's), on both paths.
        for direct in ("1", "0"):
            for streams, expected in ((["-a", "stderr"], (b"", b"err\n")), (["-a", "STDOUT"], (b"out\n", b"")),
                                      (["-a", "stdout", "-a", "stderr"], (b"out\n", b"err\n"))):
                result = yield deferToThread(run_cli, self.daemon.address, "run", "--rm", *streams, "busybox", "sh",
                                             "-c", "echo out; echo err >&2; exit 3", env={"ROSS_DIRECT": direct})
                self.assertEqual((result.returncode, result.stdout, result.stderr), (3, *expected), streams)
        result = yield self.ross("run", "--rm", "-a", "nope", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"valid streams are STDIN, STDOUT and STDERR", result.stderr)

    @inlineCallbacks
    def test_pid1_and_isolation(self) -> Any:
        """
        PID 1 is the command; the container sees only its own processes.
        """
        result = yield self.ross("run", "--rm", "busybox", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'")
        self.assertEqual(result.returncode, 0, result.stderr)
        pid, count = result.stdout.split()
        self.assertEqual(pid, b"1")
        self.assertLessEqual(int(count), 3)
        result = yield self.ross("run", "--rm", "busybox", "kill", "-0", str(os.getpid()))
        self.assertNotEqual(result.returncode, 0)

    @inlineCallbacks
    def test_env_user_workdir_hostname(self) -> Any:
        result = yield self.ross(
            "run", "--rm", "-e", "GREETING=hi", "-u", "33:33", "-w", "/tmp", "-h", "box",
            "busybox", "sh", "-c", 'echo "$GREETING $(id -u):$(id -g) $(pwd) $(hostname)"')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"hi 33:33 /tmp box\n")

    @inlineCallbacks
    def test_entrypoint_override(self) -> Any:
        result = yield self.ross("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b")
        self.assertEqual(result.stdout, b"a b\n")

    @inlineCallbacks
    def test_rm_removes(self) -> Any:
        result = yield self.ross("run", "--rm", "--name", "gone", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("ps", "-a", "-q", "--filter", "name=gone")
        self.assertEqual(result.stdout, b"")
        # rm -f of what is not there: said, but no failure (docker's, for
        # cleanup scripts under set -e); without -f a failure.
        result = yield self.ross("rm", "-f", "gone")
        self.assertEqual((result.returncode, result.stderr), (0, b"Error: No such container: gone\n"))
        result = yield self.ross("rm", "gone")
        self.assertEqual(result.returncode, 1)


class MountTests(ContainerTestCase):
    @inlineCallbacks
    def test_volume_takes_the_images_content(self) -> Any:
        """
        An empty volume mounted where the image has a directory gets its
        content at create (docker's copy-up), owners, modes and links as
        they were; a volume with content, a nocopy one and a target the
        image lacks stay as they are. The container's /etc files go on top
        of a volume on /etc, but for one a mount of its own gives.
        """
        result = yield self.ross("run", "--name", "maker", "busybox", "sh", "-c",
                                 "mkdir -p /data/sub && echo hi > /data/f && chown 1000:1000 /data/f && "
                                 "chmod 640 /data/f && ln -s f /data/link && chmod 750 /data/sub && "
                                 "chown 1234:1235 /data && chmod 2751 /data")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("commit", "maker", "withdata")
        self.assertEqual(result.returncode, 0, result.stderr)
        show = "cd /data && stat -c '%n %u:%g %a' . f sub && readlink link && cat f"
        result = yield self.ross("run", "--rm", "-v", "filled:/data", "withdata", "sh", "-c", show)
        # The volume's own directory too, as the image's (docker's).
        self.assertEqual(result.stdout, b". 1234:1235 2751\nf 1000:1000 640\nsub 0:0 750\nf\nhi\n", result.stderr)
        # Not again once it has content: what a container wrote stays.
        yield self.ross("run", "--rm", "-v", "filled:/data", "withdata", "sh", "-c", "echo mine > /data/f")
        result = yield self.ross("run", "--rm", "-v", "filled:/data", "withdata", "cat", "/data/f")
        self.assertEqual(result.stdout, b"mine\n")
        for volume, expected in [("filled:/data:nocopy", b"f\nlink\nsub\n"), ("empty:/data:nocopy", b""),
                                 ("elsewhere:/nothing", b"")]:
            result = yield self.ross("run", "--rm", "-v", volume, "withdata", "ls", volume.split(":")[1])
            self.assertEqual((result.returncode, result.stdout), (0, expected), (volume, result.stderr))
        result = yield self.ross("run", "--rm", "--mount", "type=volume,source=mounted,target=/data,volume-nocopy",
                                 "withdata", "ls", "/data")
        self.assertEqual((result.returncode, result.stdout), (0, b""), result.stderr)
        result = yield self.ross("run", "--rm", "--mount", "type=volume,source=mounted2,target=/data",
                                 "withdata", "ls", "/data")
        self.assertEqual((result.returncode, result.stdout), (0, b"f\nlink\nsub\n"), result.stderr)
        # An anonymous volume (-v /data) takes it too; a volume on /tmp keeps
        # its sticky, world-writable mode.
        result = yield self.ross("run", "--rm", "-v", "/data", "-v", "tmp:/tmp", "withdata", "sh", "-c",
                                 "cat /data/f && stat -c '%u:%g %a' /data /tmp")
        self.assertEqual(result.stdout, b"hi\n1234:1235 2751\n0:0 1777\n", result.stderr)
        hosts = Path(self.mktemp()).absolute()
        hosts.write_text("10.1.2.3 mine\n")
        result = yield self.ross("run", "--rm", "-v", "etc:/etc", "-v", f"{hosts}:/etc/hosts:ro", "busybox",
                                 "sh", "-c", "ls /etc; cat /etc/hosts; test -s /etc/resolv.conf")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"group\nhostname\nhosts\npasswd\nresolv.conf\n10.1.2.3 mine\n")
        # A read-only volume is filled too; with no room for the /etc files
        # on it, the container keeps /etc as the volume has it.
        result = yield self.ross("run", "--rm", "-v", "etc-ro:/etc:ro", "-v", "data-ro:/data:ro", "withdata",
                                 "sh", "-c", "ls /etc /data")
        self.assertEqual((result.returncode, result.stdout), (0, b"/data:\nf\nlink\nsub\n\n/etc:\ngroup\npasswd\n"),
                         result.stderr)

    @inlineCallbacks
    def test_volume_with_a_device(self) -> Any:
        """
        A volume made with the local driver's options (type, device, o)
        has its device mounted while a container uses it, as docker's: a
        bind of a host directory the container writes into (filled from
        the image when empty), a tmpfs two running containers share and
        that is gone once none uses it. Removing the volume leaves the
        host directory's files; a device that cannot be mounted fails the
        start, and bad options the create.
        """
        host = Path(self.mktemp()).absolute()
        host.mkdir()
        (host / "seed").write_text("from the host\n")
        result = yield self.ross("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}",
                                 "bound")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("volume", "inspect", "-f", "{{json .Options}}", "bound")
        self.assertEqual(json.loads(result.stdout), {"type": "none", "o": "bind", "device": str(host)})
        # inspect finds volumes (and networks) too, as docker's.
        for args in (["bound"], ["--type", "volume", "bound"]):
            result = yield self.ross("inspect", "-f", "{{.Name}} {{.Driver}} {{.Options.type}}", *args)
            self.assertEqual(result.stdout, b"bound local none\n", result.stderr)
        result = yield self.ross("inspect", "-f", "{{.Name}}", "bridge", "bound")
        self.assertEqual(result.stdout, b"bridge\nbound\n", result.stderr)
        result = yield self.ross("inspect", "--type", "network", "bound")
        self.assertEqual(result.returncode, 1)
        result = yield self.ross("run", "--rm", "-v", "bound:/data", "busybox", "sh", "-c",
                                 "cat /data/seed && echo written > /data/new")
        self.assertEqual((result.returncode, result.stdout), (0, b"from the host\n"), result.stderr)
        self.assertEqual((host / "new").read_text(), "written\n")
        self.assertEqual(mounts_under(self.daemon.base), [])
        # Copied into while stopped: through the device too.
        result = yield self.ross("create", "--name", "idle", "-v", "bound:/data", "busybox")
        self.assertEqual(result.returncode, 0, result.stderr)
        source = Path(self.mktemp()).absolute()
        source.write_text("in\n")
        result = yield self.ross("cp", str(source), "idle:/data/copied")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((host / "copied").read_text(), "in\n")
        yield self.ross("rm", "idle")
        # o=bind,ro: read-only, as docker's (a bind's flags need a remount).
        yield self.ross("volume", "create", "-o", "type=none", "-o", "o=bind,ro", "-o", f"device={host}", "robind")
        result = yield self.ross("run", "--rm", "-v", "robind:/data", "busybox", "sh", "-c",
                                 "cat /data/seed && touch /data/nope")
        self.assertEqual(result.stdout, b"from the host\n")
        self.assertIn(b"Read-only file system", result.stderr)
        self.assertFalse((host / "nope").exists())
        yield self.ross("volume", "rm", "robind")
        # An empty host directory takes the image's content (copy-up).
        empty = Path(self.mktemp()).absolute()
        empty.mkdir()
        yield self.ross("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={empty}", "etc")
        result = yield self.ross("run", "--rm", "-v", "etc:/etc", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("passwd", os.listdir(empty))
        # Removing the volume keeps the host's files.
        result = yield self.ross("volume", "rm", "bound", "etc")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted(os.listdir(host)), ["copied", "new", "seed"])
        self.assertIn("passwd", os.listdir(empty))

        # A tmpfs: one instance while any container uses it.
        result = yield self.ross("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                                 "--opt", "o=size=1m,mode=1777", "shared")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "-d", "--name", "writer", "-v", "shared:/s", "busybox", "sh", "-c",
                                 "echo one > /s/f && exec sleep 1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        for _ in range(100):
            result = yield self.ross("run", "--rm", "-v", "shared:/s", "busybox", "sh", "-c",
                                     "cat /s/f && df -k /s | tail -1")
            if result.returncode == 0:
                break
            yield sleep(0.1)
        self.assertEqual(result.stdout.split(b"\n")[0], b"one")
        self.assertEqual(result.stdout.split()[2], b"1024", result.stdout)
        yield self.ross("rm", "-f", "writer")
        result = yield self.ross("run", "--rm", "-v", "shared:/s", "busybox", "ls", "/s")
        self.assertEqual((result.returncode, result.stdout), (0, b""), result.stderr)
        # Two started at once share the one mount (the second waits for
        # the first's mount, never binds the directory under it).
        started = yield gatherResults([
            self.ross("run", "-d", "--name", f"at-once-{n}", "-v", "shared:/s", "busybox", "sh", "-c",
                      f"touch /s/{n} && exec sleep 1000") for n in range(3)])
        self.assertEqual([r.returncode for r in started], [0, 0, 0], [r.stderr for r in started])
        for _ in range(100):
            result = yield self.ross("exec", "at-once-0", "ls", "/s")
            if result.stdout == b"0\n1\n2\n":
                break
            yield sleep(0.1)
        self.assertEqual(result.stdout, b"0\n1\n2\n")
        yield self.ross("rm", "-f", "at-once-0", "at-once-1", "at-once-2")

        # Made by a --mount, with its options and labels (volume-opt,
        # volume-label), as docker's; a bind takes none.
        result = yield self.ross("run", "--rm", "--mount", "type=volume,src=made,dst=/m,volume-opt=type=tmpfs,"
                                 "volume-opt=device=tmpfs,volume-opt=o=size=2m,volume-label=k=v",
                                 "busybox", "sh", "-c", "df -k /m | tail -1")
        self.assertEqual(result.stdout.split()[1:2], [b"2048"], result.stderr)
        result = yield self.ross("volume", "inspect", "-f", "{{json .Options}} {{json .Labels}}", "made")
        self.assertEqual(result.stdout, b'{"device":"tmpfs","o":"size=2m","type":"tmpfs"} {"k":"v"}\n')
        result = yield self.ross("run", "--rm", "--mount", f"type=bind,src={host},dst=/m,volume-opt=type=tmpfs",
                                 "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"cannot mix 'volume-*' options with mount type 'bind'", result.stderr)
        yield self.ross("volume", "rm", "made")

        # A device that is not there: the start fails, nothing mounted.
        yield self.ross("volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
                        f"device={host}/missing", "gone")
        result = yield self.ross("run", "--name", "nodevice", "-v", "gone:/x", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"error while mounting volume", result.stderr)
        self.assertIn(b"no such file or directory", result.stderr)
        self.assertEqual(mounts_under(self.daemon.base), [])
        result = yield self.ross("inspect", "-f", "{{.State.Status}}", "nodevice")
        self.assertEqual(result.stdout, b"created\n", result.stderr)
        yield self.ross("rm", "nodevice")
        for options, said in [(["-o", "size=1g"], b'invalid option: "size"'),
                              (["-o", "type=tmpfs"], b'missing required option: "device"'),
                              (["-o", "o=bind", "-o", "type=none"], b'missing required option: "device"'),
                              (["-o", "type=none", "-o", "o=bind", "-o", "device=relative"], b"absolute path"),
                              (["-o", "novalue"], b"expected key=value")]:
            result = yield self.ross("volume", "create", *options, "refused")
            self.assertEqual(result.returncode, 125, options)
            self.assertIn(said, result.stderr, options)
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout.split(), [b"gone", b"shared"])

    @inlineCallbacks
    def test_bind_mounts(self) -> Any:
        """
        Bind mounts show the host's files; :ro refuses writes; rw writes land
        on the host.
        """
        host = Path(self.mktemp()).absolute()
        host.mkdir()
        (host / "hello").write_text("from host\n")
        result = yield self.ross("run", "--rm", "-v", f"{host}:/mnt:ro", "busybox", "sh", "-c",
                                 "cat /mnt/hello; echo x > /mnt/new")
        self.assertEqual(result.stdout, b"from host\n")
        self.assertNotEqual(result.returncode, 0)
        self.assertFalse((host / "new").exists())
        result = yield self.ross("run", "--rm", "--mount", f"type=bind,source={host},target=/mnt",
                                 "busybox", "sh", "-c", "echo written > /mnt/new")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((host / "new").read_text(), "written\n")
        # A path from here, as docker's CLI takes it (the daemon wants it
        # absolute).
        here = os.path.relpath(host)
        self.assertFalse(here.startswith("."), here)
        result = yield self.ross("run", "--rm", "-v", f"./{here}:/mnt:ro", "busybox", "cat", "/mnt/hello")
        self.assertEqual((result.returncode, result.stdout), (0, b"from host\n"), result.stderr)
        # inspect's Mounts as docker's: a read-only bind's mode is "ro".
        result = yield self.ross("create", "--name", "bound", "-v", f"{host}:/ro:ro", "-v", f"{host}:/rw",
                                 "busybox")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("inspect", "-f", "{{range .Mounts}}{{.Destination}}={{.Mode}},{{.RW}} {{end}}",
                                 "bound")
        self.assertEqual(sorted(result.stdout.split()), [b"/ro=ro,false", b"/rw=,true"])

    @inlineCallbacks
    def test_mount_on_the_wrong_kind(self) -> Any:
        """
        A volume or tmpfs where the image has a file, a file bound where it
        has a directory: refused at start, naming both.
        """
        host_file = Path(self.mktemp()).absolute()
        host_file.write_text("x\n")
        for flags, message in [(["-v", "onfile:/bin/busybox"], "cannot mount bind source"),
                               (["--tmpfs", "/bin/busybox"], "cannot mount a tmpfs (a directory) on /bin/busybox"),
                               (["-v", f"{host_file}:/bin"], f"cannot mount bind source {host_file} (a file) on /bin")]:
            result = yield self.ross("run", "--rm", *flags, "busybox", "true")
            self.assertEqual(result.returncode, 125, flags)
            self.assertIn(message.encode(), result.stderr, flags)
        self.assertEqual((yield self.ross("ps", "-aq")).stdout, b"")

    @inlineCallbacks
    def test_bind_submounts(self) -> Any:
        """
        A bind brings the mounts below its source with it, unless asked not
        to (docker's bind-nonrecursive, bind-recursive=disabled, the Docker
        API's NonRecursive); --mount's booleans take docker's values only.
        """
        host = Path(self.mktemp()).absolute()
        (host / "sub").mkdir(parents=True)
        (host / "top").write_text("top\n")
        subprocess.run(["mount", "-t", "tmpfs", "submount", str(host / "sub")], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["umount", "-l", str(host / "sub")], check=True, timeout=30)
        (host / "sub" / "below").write_text("below\n")
        show = "cat /m/top; ls /m/sub"
        for options, expected in [("", b"top\nbelow\n"), (",bind-nonrecursive", b"top\n"),
                                  (",bind-nonrecursive=false", b"top\nbelow\n"),
                                  (",bind-recursive=disabled", b"top\n"), (",readonly,bind-nonrecursive", b"top\n")]:
            result = yield self.ross("run", "--rm", "--mount", f"type=bind,src={host},dst=/m{options}", "busybox",
                                     "sh", "-c", show)
            self.assertEqual((result.returncode, result.stdout), (0, expected), (options, result.stderr))
        for options in (",readonly=maybe", ",bind-recursive=sometimes", ",bind-nonrecursive=2"):
            result = yield self.ross("run", "--rm", "--mount", f"type=bind,src={host},dst=/m{options}", "busybox",
                                     "true")
            self.assertEqual(result.returncode, 125, options)
            self.assertIn(b"invalid value for", result.stderr, options)
        result = yield self.ross("run", "--rm", "--mount", "type=volume,dst=/m,bind-nonrecursive", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"a non-recursive bind applies to bind mounts", result.stderr)

    @inlineCallbacks
    def test_volumes_from(self) -> Any:
        """
        --volumes-from mounts another container's volumes and binds where
        it has them (docker's backup recipe): ":ro" makes them read-only,
        the container's own mounts win, and ``rm -v`` of the borrower
        leaves the lender's anonymous volume.
        """
        host = Path(self.mktemp()).absolute()
        host.mkdir()
        (host / "conf").write_text("bound\n")
        result = yield self.ross("create", "--name", "lender", "-v", "/dbdata", "-v", f"{host}:/etc/app",
                                 "busybox", "sh", "-c", "echo rows > /dbdata/table")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.ross("start", "-a", "lender")
        backup = Path(self.mktemp()).absolute()
        backup.mkdir()
        result = yield self.ross("run", "--rm", "--volumes-from", "lender", "-v", f"{backup}:/backup", "busybox",
                                 "sh", "-c", "cat /etc/app/conf; tar cf /backup/b.tar -C /dbdata table")
        self.assertEqual((result.returncode, result.stdout), (0, b"bound\n"), result.stderr)
        self.assertGreater((backup / "b.tar").stat().st_size, 0)
        result = yield self.ross("run", "--name", "borrower", "--volumes-from", "lender:ro", "-v", f"{backup}:/etc/app",
                                 "busybox", "sh", "-c", "cat /dbdata/table; ls /etc/app; echo x > /dbdata/new")
        self.assertEqual(result.stdout.split(), [b"rows", b"b.tar"])
        self.assertIn(b"Read-only file system", result.stderr)
        inspected = yield self.ross("inspect", "-f", "{{json .HostConfig.VolumesFrom}}", "borrower")
        self.assertEqual(json.loads(inspected.stdout), ["lender:ro"])
        volumes = yield self.ross("volume", "ls", "-q")
        yield self.ross("rm", "-v", "borrower")
        after = yield self.ross("volume", "ls", "-q")
        self.assertEqual((len(volumes.stdout.split()), after.stdout), (1, volumes.stdout))
        result = yield self.ross("run", "--rm", "--volumes-from", "nosuch", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"No such container: nosuch", result.stderr)
        result = yield self.ross("run", "--rm", "--volumes-from", "lender:rx", "busybox", "true")
        self.assertIn(b"invalid volumes-from 'lender:rx'", result.stderr)

    @inlineCallbacks
    def test_named_volume_outlives_container(self) -> Any:
        result = yield self.ross("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f")
        self.assertEqual(result.stdout, b"kept\n")
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"data\n")
        result = yield self.ross("volume", "inspect", "data", "nosuch")
        self.assertEqual(result.returncode, 1)
        self.assertEqual([v["Name"] for v in json.loads(result.stdout)], ["data"])
        self.assertIn(b"nosuch", result.stderr)
        result = yield self.ross("volume", "inspect", "-f", "{{.Name}}", "data")
        self.assertEqual(result.stdout, b"data\n")
        result = yield self.ross("volume", "ls", "--format", "table {{.Name}}\\t{{.Driver}}")
        self.assertEqual(result.stdout, b"VOLUME NAME   DRIVER\ndata          local\n", result.stderr)
        result = yield self.ross("network", "ls", "--format", "{{if eq .Name \"bridge\"}}{{.Driver}}{{end}}")
        self.assertEqual(result.stdout.split(), [b"bridge"], result.stderr)
        result = yield self.ross("volume", "rm", "data")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_volume_in_use_refused(self) -> Any:
        result = yield self.ross("create", "--name", "holder", "-v", "busy:/data", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("volume", "rm", "busy")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"volume is in use", result.stderr)
        result = yield self.ross("rm", "holder")
        result = yield self.ross("volume", "rm", "busy")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_volume_rm_racing(self) -> Any:
        """
        A volume taken by a container still being created is in use (rm
        refused, naming it), and free again once the create ends; of two
        rm at once, the second finds no such volume; a create right after
        an rm makes a new, empty volume.
        """
        volumes = self.daemon.engine.volumes
        creating = volumes.create("taken", claim="c" * 64)
        # Claimed at once, before its directory is made.
        yield self.assertFailure(volumes.remove("taken"), FailedPrecondition)
        volume = yield creating
        yield self.assertFailure(volumes.remove("taken"), FailedPrecondition)
        volumes.release("c" * 64)
        path = os.path.join(volume.mountpoint, "old")
        with open(path, "w") as f:
            f.write("old")
        first = volumes.remove("taken")
        second = volumes.remove("taken")
        again = volumes.create("taken")
        yield self.assertFailure(second, NotFound)
        yield first
        made = yield again
        self.assertEqual(os.listdir(made.mountpoint), [])
        result = yield self.ross("volume", "rm", "taken")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_tmpfs(self) -> Any:
        """
        --tmpfs mounts a tmpfs with its options, noexec (and nosuid, nodev)
        unless it says exec, as docker's.
        """
        result = yield self.ross("run", "--rm", "--tmpfs", "/scratch:size=1m", "busybox", "sh", "-c",
                                 "grep ' /scratch ' /proc/mounts; cp /bin/busybox /scratch/; /scratch/busybox true")
        self.assertEqual(result.returncode, 126, result.stderr)
        self.assertIn(b"tmpfs /scratch tmpfs", result.stdout)
        self.assertIn(b"size=1024k", result.stdout)
        self.assertIn(b"rw,nosuid,nodev,noexec,", result.stdout)
        result = yield self.ross("run", "--rm", "--tmpfs", "/scratch:exec", "busybox", "sh", "-c",
                                 "grep ' /scratch ' /proc/mounts; cp /bin/busybox /scratch/; /scratch/busybox true")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"rw,nosuid,nodev,", result.stdout)
        self.assertNotIn(b"noexec", result.stdout)
        # The kernel's own options, as docker passes them: owner, inodes,
        # access times.
        result = yield self.ross("run", "--rm", "--tmpfs", "/scratch:uid=1234,gid=55,nr_inodes=100,noatime",
                                 "busybox", "sh", "-c", "grep ' /scratch ' /proc/mounts; stat -c '%u:%g' /scratch")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"noatime", result.stdout)
        self.assertIn(b"nr_inodes=100", result.stdout)
        self.assertTrue(result.stdout.endswith(b"\n1234:55\n"), result.stdout)
        for options in ("uid=root", "noatime=1", "nr_inodes", "mpol=default"):
            result = yield self.ross("run", "--rm", "--tmpfs", f"/scratch:{options}", "busybox", "true")
            self.assertEqual(result.returncode, 125, options)
            self.assertIn(b"invalid tmpfs option", result.stderr, options)


class LifecycleTests(ContainerTestCase):
    @inlineCallbacks
    def assertRefused(self, argv: list[str], message: bytes) -> Any:
        """
        C{ross *argv} fails with 125 and C{message}, and makes no container.
        """
        before = yield self.ross("ps", "-aq")
        result = yield self.ross(*argv)
        self.assertEqual(result.returncode, 125, argv)
        self.assertIn(message, result.stderr, argv)
        after = yield self.ross("ps", "-aq")
        self.assertEqual(after.stdout, before.stdout, argv)

    @inlineCallbacks
    def test_detached_stop_timeout(self) -> Any:
        """
        A container that ignores SIGTERM is killed at the stop timeout.
        """
        result = yield self.ross("run", "-d", "--name", "stubborn", "busybox", "sh", "-c",
                                 "trap '' TERM; while true; do echo tick; sleep 0.1; done")
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.strip().decode()
        self.assertEqual(len(cid), 64)
        yield self.wait_for(lambda: self.record(cid).state.status == "running")
        started = time.monotonic()
        result = yield self.ross("stop", "-t", "1", "stubborn")
        elapsed = time.monotonic() - started
        self.assertEqual(result.stdout, b"stubborn\n")
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertEqual(self.record(cid).state.exit_code, 137)
        result = yield self.ross("logs", "stubborn")
        self.assertIn(b"tick\n", result.stdout)

    @inlineCallbacks
    def test_stop_signal_honoured(self) -> Any:
        """
        A container that handles SIGTERM stops at once with its own code.
        """
        result = yield self.ross("run", "-d", "busybox", "sh", "-c",
                                 "trap 'exit 42' TERM; while true; do sleep 0.1; done")
        cid = result.stdout.strip().decode()
        yield self.wait_for(lambda: self.record(cid).state.status == "running")
        yield self.wait_for(lambda: catches(self.record(cid).state.pid, signal.SIGTERM))
        result = yield self.ross("stop", cid[:12])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.record(cid).state.exit_code, 42)

    @inlineCallbacks
    def test_kill_and_wait(self) -> Any:
        # PID 1 ignores signals it has no handler for; --init forwards them.
        result = yield self.ross("run", "-d", "--init", "--name", "killme", "busybox", "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        waiter = self.ross("wait", "killme")
        result = yield self.ross("kill", "-s", "USR1", "killme")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield waiter
        self.assertEqual(result.stdout, b"138\n")

    @inlineCallbacks
    def test_init_reaps_and_forwards(self) -> Any:
        """
        With --init, PID 1 is a reaper and SIGTERM reaches the command.
        ps shows it as docker's init ("ross-init -- COMMAND"), not as the
        shim it was forked from, whose command line names host paths.
        """
        result = yield self.ross("run", "-d", "--init", "busybox", "sleep", "100")
        cid = result.stdout.strip().decode()
        yield self.wait_for(lambda: self.record(cid).state.status == "running")
        result = yield self.ross("exec", cid, "sh", "-c", "cat /proc/1/cmdline /proc/1/comm")
        self.assertEqual(result.stdout.rstrip(b"\0\n").split(b"\0\0")[0].split(b"\0"),
                         [b"ross-init", b"--", b"sleep", b"100"], result.stdout)
        self.assertTrue(result.stdout.endswith(b"\0ross-init\n"), result.stdout)
        self.assertNotIn(str(REPO).encode(), result.stdout)
        started = time.monotonic()
        result = yield self.ross("stop", "-t", "20", cid)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(self.record(cid).state.exit_code, 143)

    @inlineCallbacks
    def test_cpuset(self) -> Any:
        """
        --cpuset-cpus confines the container's processes to those CPUs,
        and update moves a running container's.
        """
        allowed = "grep Cpus_allowed_list /proc/self/status"
        result = yield self.ross("run", "--rm", "--cpuset-cpus", "0", "busybox", "sh", "-c", allowed)
        self.assertEqual(result.stdout.split(), [b"Cpus_allowed_list:", b"0"], result.stderr)
        if (os.cpu_count() or 1) < 2:
            return
        result = yield self.ross("run", "-d", "--cpuset-cpus", "1", "--cpuset-mems", "0", "busybox", "sleep", "100")
        cid = result.stdout.strip().decode()
        result = yield self.ross("exec", cid, "grep", "Cpus_allowed_list", "/proc/1/status")
        self.assertEqual(result.stdout.split()[-1], b"1")
        result = yield self.ross("update", "--cpuset-cpus", "0-1", cid)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("exec", cid, "grep", "Cpus_allowed_list", "/proc/1/status")
        self.assertEqual(result.stdout.split()[-1], b"0-1")
        result = yield self.ross("inspect", "--format", "json", cid)
        self.assertIn(b'"CpusetCpus":"0-1"', result.stdout)

    @inlineCallbacks
    def test_oom_score_adj(self) -> Any:
        """
        --oom-score-adj is the container's processes' (an exec's too), and
        inspect shows it.
        """
        result = yield self.ross("run", "-d", "--oom-score-adj", "345", "busybox", "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.strip().decode()
        result = yield self.ross("exec", cid, "cat", "/proc/1/oom_score_adj", "/proc/self/oom_score_adj")
        self.assertEqual(result.stdout.split(), [b"345", b"345"])
        result = yield self.ross("inspect", "--format", "json", cid)
        self.assertIn(b'"OomScoreAdj":345', result.stdout)
        result = yield self.ross("run", "--rm", "busybox", "cat", "/proc/self/oom_score_adj")
        self.assertEqual(result.stdout, open("/proc/self/oom_score_adj", "rb").read())

    @inlineCallbacks
    def test_shm_size_and_ulimits(self) -> Any:
        """
        --shm-size sizes /dev/shm (64 MiB by default); --ulimit sets the
        command's limits and its execs'. Bad values are refused before
        anything runs, and a hard limit the daemon cannot raise says so.
        """
        result = yield self.ross("run", "--rm", "--shm-size", "1m", "busybox", "df", "-k", "/dev/shm")
        self.assertEqual(result.stdout.decode().splitlines()[-1].split()[1], "1024", result.stderr)
        result = yield self.ross("run", "--rm", "busybox", "df", "-k", "/dev/shm")
        self.assertEqual(result.stdout.decode().splitlines()[-1].split()[1], "65536", result.stderr)
        result = yield self.ross("run", "-d", "--name", "limited", "--ulimit", "nofile=512:1024", "--ulimit", "core=0",
                                 "busybox", "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        for argv in (["exec", "limited"], ["run", "--rm", "--ulimit", "nofile=512:1024", "--ulimit", "core=0", "busybox"]):
            result = yield self.ross(*argv, "sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -c")
            self.assertEqual(result.stdout.split(), [b"512", b"1024", b"0"], (argv, result.stderr))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        for flags, message in [
            (["--ulimit", "bogus=1"], b"invalid ulimit type: bogus"),
            (["--ulimit", "nofile=5:2"], b"ulimit soft limit must be less than or equal to hard limit: 5 > 2"),
            (["--ulimit", "nofile"], b'invalid argument "nofile" for "--ulimit" flag'),
            (["--ulimit", "nofile=1", "--ulimit", "nofile=2"], b"ulimit nofile given twice"),
            (["--shm-size", "-1"], b"invalid size"),
            (["--ulimit", f"nofile={hard + 1}"], b"cannot set ulimit nofile="),
        ]:
            yield self.assertRefused(["run", "--rm", *flags, "busybox", "true"], message)

    @inlineCallbacks
    def test_cpu_quota_and_period(self) -> Any:
        """
        --cpu-quota and --cpu-period give the container that share of a
        CPU (as --cpus would), refused with --cpus and out of docker's
        ranges.
        """
        result = yield self.ross("run", "--name", "quota", "--cpu-quota", "50000", "--cpu-period", "200000",
                                 "busybox", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                                 "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        self.assertEqual(result.stdout.split(), [b"25000", b"100000"], result.stderr)
        inspected = yield self.ross("inspect", "-f", "{{.HostConfig.NanoCpus}}", "quota")
        self.assertEqual(inspected.stdout.strip(), b"250000000")
        for flags, message in [
            (["--cpus", "1", "--cpu-quota", "50000"], b"Conflicting options: Nano CPUs and CPU Quota"),
            (["--cpus", "1", "--cpu-period", "50000"], b"Conflicting options: Nano CPUs and CPU Period"),
            (["--cpu-period", "999"], b"CPU cfs period can not be less than 1ms"),
            (["--cpu-quota", "10"], b"CPU cfs quota can not be less than 1ms"),
        ]:
            yield self.assertRefused(["run", "--rm", *flags, "busybox", "true"], message)

    @inlineCallbacks
    def test_devices(self) -> Any:
        """
        --device makes the host's node in the container, where asked, and
        the container's cgroup allows only what it says; a directory gives
        every device under it. A path that is no device is refused at
        create, nothing made.
        """
        result = yield self.ross("run", "--rm", "--device", "/dev/zero:/dev/myzero", "busybox", "sh", "-c",
                                 "head -c 5 /dev/myzero | wc -c; stat -c '%t,%T %F' /dev/myzero")
        self.assertEqual(result.stdout.split(b"\n")[:2], [b"5", b"1,5 character special file"], result.stderr)
        # /dev/fuse is not among the devices every container may open.
        # Read only: opening it to write is refused by the devices cgroup.
        result = yield self.ross("run", "--rm", "--device", "/dev/fuse:/opt/dev/fuse1:r", "busybox", "sh", "-c",
                                 "(exec 3</opt/dev/fuse1) && echo read; (exec 3>/opt/dev/fuse1) || echo refused")
        self.assertEqual(result.stdout.split(), [b"read", b"refused"], result.stderr)
        # Without --device, the same node made by hand may not be opened.
        result = yield self.ross("run", "--rm", "busybox", "sh", "-c",
                                 "mknod /tmp/f c 10 229 && (exec 3</tmp/f) || echo refused")
        self.assertEqual(result.stdout.split(), [b"refused"], result.stderr)
        result = yield self.ross("run", "--rm", "--device", "/dev/net", "busybox", "ls", "/dev/net")
        self.assertEqual(result.stdout.split(), [b"tun"], result.stderr)
        result = yield self.ross("run", "-d", "--name", "devices", "--device", "/dev/zero:/dev/z:rw", "busybox",
                                 "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        inspected = yield self.ross("inspect", "devices")
        self.assertEqual(json.loads(inspected.stdout)[0]["HostConfig"]["Devices"],
                         [{"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "rw"}])
        result = yield self.ross("exec", "devices", "head", "-c", "3", "/dev/z")
        self.assertEqual(result.stdout, b"\0\0\0", result.stderr)
        # --privileged gives every host device, as docker's, but its terminals.
        result = yield self.ross("run", "--rm", "--privileged", "busybox", "sh", "-c",
                                 "stat -c '%t,%T %F' /dev/loop-control; ls /dev/pts")
        self.assertEqual(result.stdout.split(b"\n")[:2], [b"a,ed character special file", b"ptmx"], result.stderr)
        result = yield self.ross("run", "--rm", "busybox", "ls", "/dev/loop-control")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        for flags, message in [
            (["--device", "/dev/nope"], b"error gathering device information while adding custom device '/dev/nope'"),
            (["--device", "/etc/hostname"], b"not a device node"),
            (["--device", "dev/zero"], b"is not an absolute path"),
            (["--device", "/dev/zero:/dev/z:rwx"], b"invalid device mode"),
            (["--device", "/dev/zero:/dev/z:r:w"], b"invalid device specification"),
        ]:
            yield self.assertRefused(["run", "--rm", *flags, "busybox", "true"], message)

    @inlineCallbacks
    def test_namespace_modes_and_sysctls(self) -> Any:
        """
        --ipc host, --uts host, --pid container:NAME and --sysctl as
        docker's: the host's IPC and UTS namespaces (and its hostname),
        another container's processes, and kernel parameters of the
        namespaces the container owns only.
        """
        result = yield self.ross("run", "--rm", "--ipc", "host", "busybox", "readlink", "/proc/self/ns/ipc")
        self.assertEqual(result.stdout.strip(), os.readlink("/proc/self/ns/ipc").encode(), result.stderr)
        # The host's /dev/shm too (docker's: what --ipc=host is used for),
        # both ways; none has no /dev/shm; shareable and private their own.
        probe = Path("/dev/shm") / f"ross-test-{os.getpid()}"
        probe.write_text("host\n")
        for made in (probe, probe.with_suffix(".back")):
            self.addCleanup(made.unlink, missing_ok=True)
        result = yield self.ross("run", "--rm", "--ipc", "host", "busybox", "sh", "-c",
                                 f"cat {probe} && echo container > {probe}.back")
        self.assertEqual((result.returncode, result.stdout), (0, b"host\n"), result.stderr)
        self.assertEqual(probe.with_suffix(".back").read_text(), "container\n")
        result = yield self.ross("run", "--rm", "--ipc", "none", "busybox", "ls", "/dev/shm")
        self.assertNotEqual(result.returncode, 0)
        for mode in ("shareable", "private"):
            result = yield self.ross("run", "--rm", "--ipc", mode, "busybox", "sh", "-c",
                                     f"ls {probe}; df -k /dev/shm | tail -1")
            self.assertIn(b"No such file", result.stderr, mode)
            self.assertEqual(result.stdout.split()[1], b"65536", mode)
        result = yield self.ross("run", "--name", "uts", "--uts", "host", "busybox", "sh", "-c",
                                 "readlink /proc/self/ns/uts; hostname; echo $HOSTNAME")
        self.assertEqual(result.stdout.split(), [os.readlink("/proc/self/ns/uts").encode()]
                         + [socket.gethostname().encode()] * 2, result.stderr)
        inspected = yield self.ross("inspect", "-f", "{{.Config.Hostname}} {{.HostConfig.UTSMode}}", "uts")
        self.assertEqual(inspected.stdout.split(), [socket.gethostname().encode(), b"host"])
        result = yield self.ross("run", "-d", "--name", "peer", "busybox", "sleep", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "--pid", "container:peer", "busybox", "ps", "-o", "pid,args")
        self.assertIn(b"1 sleep 100", b" ".join(result.stdout.split()), result.stderr)
        result = yield self.ross("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=1000000",
                                 "busybox", "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmax")
        self.assertEqual(result.stdout.split(), [b"1", b"1000000"], result.stderr)
        for flags, message in [
            (["--sysctl", "kernel.hostname=x"], b"not a namespaced kernel parameter"),
            (["--ipc", "host", "--sysctl", "kernel.shmmax=1"], b"does not own its IPC namespace"),
            (["--sysctl", "nothing"], b'invalid argument "nothing" for "--sysctl" flag'),
            (["--ipc", "bogus"], b"invalid IPC mode: 'bogus'"),
            (["--uts", "bogus"], b"invalid UTS mode: 'bogus'"),
            (["--uts", "host", "--hostname", "h1"], b"Conflicting options: hostname and the UTS mode"),
            (["--pid", "container:nosuch"], b"No such container: nosuch"),
        ]:
            yield self.assertRefused(["run", "--rm", *flags, "busybox", "true"], message)

    @inlineCallbacks
    def test_create_start_restart_rename_ps(self) -> Any:
        result = yield self.ross("create", "--name", "web", "busybox", "sleep", "100")
        cid = result.stdout.strip().decode()
        result = yield self.ross("ps", "-a", "--format", "json")
        # docker's: a row's fields as one JSON document a line.
        listed = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([(c["ID"], c["State"], c["Names"]) for c in listed], [(cid[:12], "created", "web")])
        result = yield self.ross("start", "web")
        self.assertEqual(result.stdout, b"web\n")
        result = yield self.ross("ps")
        self.assertIn(b" web\n", result.stdout)
        self.assertIn(b"Up ", result.stdout)
        pid = self.record(cid).state.pid
        result = yield self.ross("restart", "-t", "0", "web")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotEqual(self.record(cid).state.pid, pid)
        result = yield self.ross("rename", "web", "web2")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("rename", "web2", "")
        self.assertIn(b"Neither old nor new names may be empty", result.stderr)
        result = yield self.ross("update", "--restart", "on-failure:-1", "web2")
        self.assertIn(b"maximum retry count cannot be negative", result.stderr)
        result = yield self.ross("stats", "--no-stream", "--format", "{{.Container}} {{.Name}}", "web2")
        self.assertEqual(result.stdout, b"web2 web2\n", result.stderr)
        result = yield self.ross("inspect", "-f", "{{.Name}} {{.State.Status}} {{.Config.Cmd}}", "web2")
        self.assertEqual(result.stdout, b'/web2 running [sleep 100]\n')
        # ps through docker's templates: a line a container, or a table.
        result = yield self.ross("ps", "--format", "{{.Names}} {{.State}} {{.ID}} {{.Command}}")
        self.assertEqual(result.stdout, f'web2 running {cid[:12]} "sleep 100"\n'.encode(), result.stderr)
        result = yield self.ross("ps", "--format", "table {{.ID}}\\t{{.Names}}\\t{{.Label \"nope\"}}")
        self.assertEqual(result.stdout.decode().splitlines(),
                         ["CONTAINER ID   NAMES   LABEL", f"{cid[:12]}   web2"])
        result = yield self.ross("ps", "--format", "{{.Nope.Deeper}}")
        self.assertEqual((result.returncode, result.stderr), (125, b"Error: template: can't evaluate field Nope\n"))
        result = yield self.ross("ps", "--format", "{{json .}}")
        self.assertEqual(json.loads(result.stdout)["Names"], "web2", result.stderr)
        # images and history take tables too, with docker's headers.
        result = yield self.ross("images", "--format", "table {{.Repository}}\t{{.ID}}\t{{.CreatedSince}}")
        self.assertRegex(result.stdout.decode().splitlines()[0], r"^REPOSITORY +IMAGE ID +CREATED$")
        self.assertTrue(result.stdout.decode().splitlines()[1].startswith("busybox "), result.stdout)
        result = yield self.ross("history", "--format", "table {{.ID}}\t{{.CreatedBy}}", "busybox")
        self.assertEqual(result.stdout.decode().splitlines()[0].split(), ["IMAGE", "CREATED", "BY"])
        result = yield self.ross("rm", "web2")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"container is running", result.stderr)
        result = yield self.ross("rm", "-f", "web2")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_env_file_labels_stop_signal(self) -> Any:
        """
        --env-file entries reach the process, labels (--label-file's too,
        -l over them) filter ps, --stop-signal is what stop sends, and
        --cidfile holds the ID (a file already there is refused).
        """
        env_file = Path(self.mktemp()).absolute()
        env_file.write_text("# comment\n  FROM_FILE=yes\nSHARED=file\n")
        label_file = Path(self.mktemp()).absolute()
        label_file.write_text("# labels\ntier=db\nteam=core\nbare\n")
        cidfile = Path(self.mktemp()).absolute()
        result = yield self.ross("run", "-d", "--name", "labelled", "--env-file", str(env_file), "-e", "SHARED=flag",
                                 "--label-file", str(label_file), "-l", "tier=web", "--cidfile", str(cidfile),
                                 "--stop-signal", "USR1", "busybox", "sh", "-c",
                                 "trap 'echo got-usr1; exit 9' USR1; echo $FROM_FILE $SHARED; "
                                 "while true; do sleep 0.05; done")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.record("labelled").state.status == "running")
        result = yield self.ross("ps", "-q", "--filter", "label=tier=web")
        self.assertEqual(result.stdout.strip().decode(), self.record("labelled").id[:12])
        result = yield self.ross("ps", "-q", "--filter", "label=tier=db")
        self.assertEqual(result.stdout, b"")
        result = yield self.ross("ps", "-q", "--filter", "label=team=core")
        self.assertEqual(result.stdout.strip().decode(), self.record("labelled").id[:12])
        self.assertEqual(cidfile.read_text(), self.record("labelled").id)
        for argv in (["run", "--rm"], ["create"]):
            yield self.assertRefused([*argv, "--cidfile", str(cidfile), "busybox", "true"],
                                     f"Error: Container ID file found, make sure the other container isn't running "
                                     f"or delete {cidfile}\n".encode())
        attached = Path(self.mktemp()).absolute()
        result = yield self.ross("run", "--rm", "--cidfile", str(attached), "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(attached.read_text()), 64)
        # docker's reading of the files: a name with blanks is refused, a
        # value keeps its trailing blanks; an empty -e is refused.
        spaced = Path(self.mktemp()).absolute()
        spaced.write_text("C = spaced\n")
        yield self.assertRefused(["run", "--rm", "--env-file", str(spaced), "busybox", "true"],
                                 b"variable 'C ' contains whitespaces")
        yield self.assertRefused(["run", "--rm", "-e", "", "busybox", "true"], b"invalid environment variable")
        spaced.write_text("B=two  \n")
        result = yield self.ross("run", "--rm", "--env-file", str(spaced), "busybox", "sh", "-c", 'echo "[$B]"')
        self.assertEqual(result.stdout, b"[two  ]\n", result.stderr)
        result = yield self.ross("inspect", "-f", "{{json .Config.Labels}}", "labelled")
        self.assertNotIn(b"bare", result.stdout)
        # One that cannot be made: refused before any container is.
        nowhere = Path(self.mktemp()).absolute() / "nodir" / "cid"
        result = yield self.ross("run", "-d", "--name", "nocid", "--cidfile", str(nowhere), "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"failed to create the container ID file", result.stderr)
        self.assertNotIn("nocid", [r.name for r in self.daemon.engine.containers.records.values()])
        result = yield self.ross("stop", "labelled")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.record("labelled").state.exit_code, 9)
        result = yield self.ross("logs", "labelled")
        self.assertEqual(result.stdout, b"yes flag\ngot-usr1\n")

    @inlineCallbacks
    def test_pause_unpause(self) -> Any:
        result = yield self.ross("run", "-d", "--name", "pausing", "busybox", "sh", "-c",
                                 "while true; do date +%s%N > /tmp/t; sleep 0.05; done")
        result = yield self.ross("pause", "pausing")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("ps", "--filter", "status=paused", "-q")
        self.assertEqual(len(result.stdout.split()), 1)
        first = yield self.ross("exec", "pausing", "cat", "/tmp/t")
        self.assertNotEqual(first.returncode, 0)
        result = yield self.ross("unpause", "pausing")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("ps", "--filter", "status=running", "-q")
        self.assertEqual(len(result.stdout.split()), 1)


class InspectionTests(ContainerTestCase):
    @inlineCallbacks
    def test_top_and_stats(self) -> Any:
        """
        top lists the container's processes (and only them) from the host's
        ps; stats shows its memory against its limit and its process count.
        """
        result = yield self.ross("run", "-d", "--name", "watched", "--memory", "64m", "busybox", "sh", "-c",
                                 "sleep 1000 & sleep 2000")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.record("watched").state.status == "running")
        result = yield self.ross("top", "watched")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0].split()[:3], ["UID", "PID", "PPID"])
        commands = sorted(line.split(None, 7)[7] for line in lines[1:])
        # The shell execs its last command: PID 1 becomes "sleep 2000".
        self.assertEqual(commands, ["sleep 1000", "sleep 2000"])
        result = yield self.ross("top", "watched", "-o", "pid,args")
        self.assertEqual(result.stdout.decode().splitlines()[0].split(), ["PID", "COMMAND"])
        result = yield self.ross("stats", "--no-stream", "watched")
        self.assertEqual(result.returncode, 0, result.stderr)
        header, row = result.stdout.decode().splitlines()
        self.assertTrue(header.startswith("CONTAINER ID   NAME"))
        self.assertIn(" / 64MiB ", row)
        self.assertEqual(row.split()[-1], "2")
        result = yield self.ross("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}", "watched")
        self.assertRegex(result.stdout.decode(), r"^watched 2 \S+ / 64MiB\n$")
        yield self.ross("kill", "watched")
        # kill only sends the signal (as docker's); wait until it is gone.
        yield self.wait_for(lambda: self.record("watched").state.status == "exited")
        result = yield self.ross("top", "watched")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"is not running", result.stderr)


class DiffTests(ContainerTestCase):
    @inlineCallbacks
    def test_diff(self) -> Any:
        """
        diff lists what the container added, changed and deleted, as docker;
        export gives the merged filesystem, without what it deleted.
        """
        result = yield self.ross("run", "--name", "changer", "busybox", "sh", "-c",
                                 "mkdir -p /srv/new && echo x > /srv/new/f && rm /bin/vi && echo u >> /etc/passwd")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("diff", "changer")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        for line in ("A /srv", "A /srv/new", "A /srv/new/f", "D /bin/vi", "C /etc", "C /etc/passwd", "C /bin"):
            self.assertIn(line, lines)
        # The files the runtime mounts over are not the container's changes.
        self.assertFalse({"A /etc/hosts", "A /etc/hostname", "A /etc/resolv.conf"} & set(lines))
        # docker's /.dockerenv is there (empty), and is no change either.
        result = yield self.ross("run", "--name", "idle", "busybox", "stat", "-c", "%s %F", "/.dockerenv")
        self.assertEqual((result.returncode, result.stdout), (0, b"0 regular empty file\n"), result.stderr)
        result = yield self.ross("diff", "idle")
        self.assertEqual((result.returncode, result.stdout), (0, b""), result.stderr)
        out = Path(self.mktemp()).absolute()
        result = yield self.ross("export", "-o", str(out), "changer")
        self.assertEqual(result.returncode, 0, result.stderr)
        import tarfile

        with tarfile.open(out) as tar:
            names = set(tar.getnames())
            passwd = tar.extractfile("etc/passwd")
            assert passwd is not None
            self.assertTrue(passwd.read().endswith(b"u\n"))
        self.assertTrue({"srv/new/f", "bin/busybox", "bin/sh", "etc/group"} <= names)
        self.assertNotIn("bin/vi", names)
        result = yield self.ross("port", "changer", "80")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"No public port '80/tcp' published for changer", result.stderr)


class PruneTests(ContainerTestCase):
    @inlineCallbacks
    def test_container_and_volume_prune(self) -> Any:
        """
        container prune removes stopped containers only; volume prune then
        removes the anonymous volumes nobody uses, keeping named ones.
        """
        result = yield self.ross("run", "--name", "done", "-v", "/anon", "-v", "named:/named", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "-d", "--name", "alive", "busybox", "sleep", "100")
        alive = result.stdout.strip().decode()
        done = self.record("done").id
        result = yield self.ross("container", "prune", "-f")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"Deleted Containers:\n{done}\n".encode(), result.stdout)
        self.assertEqual(list(self.daemon.engine.containers.records), [alive])
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(len(result.stdout.split()), 2)
        result = yield self.ross("volume", "prune", "-f")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"named\n")
        result = yield self.ross("volume", "rm", "named")
        self.assertEqual(result.returncode, 0, result.stderr)


class SystemTests(ContainerTestCase):
    @inlineCallbacks
    def test_df_and_prune(self) -> Any:
        """
        system df counts images, containers (their writable layers) and
        volumes, active and reclaimable; system prune removes what nothing
        uses and keeps what a running container needs.
        """
        yield self.ross("run", "--name", "writer", "-v", "/anon", "busybox", "sh", "-c",
                        "head -c 300000 /dev/zero > /big; echo x > /anon/f")
        yield self.ross("run", "-d", "--name", "alive", "busybox", "sleep", "100")
        result = yield self.ross("system", "df", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        usage = {row["Type"]: row for row in map(json.loads, result.stdout.splitlines())}
        self.assertEqual((usage["Images"]["TotalCount"], usage["Images"]["Active"]), ("1", "1"))
        self.assertEqual((usage["Containers"]["TotalCount"], usage["Containers"]["Active"]), ("2", "1"))
        # The stopped writer's 300 kB are reclaimable; the running one
        # wrote nothing (the runtime's files are not its: docker's SizeRw).
        self.assertEqual((usage["Containers"]["Reclaimable"], usage["Containers"]["Size"]), ("300kB (100%)", "300kB"))
        self.assertEqual((usage["Local Volumes"]["TotalCount"], usage["Local Volumes"]["Active"]), ("1", "1"))
        result = yield self.ross("system", "df")
        self.assertTrue(result.stdout.startswith(b"TYPE            TOTAL   ACTIVE   SIZE"), result.stdout)
        result = yield self.ross("inspect", "-s", "-f", "{{.SizeRw}}", "writer")
        self.assertGreaterEqual(int(result.stdout), 300000)
        result = yield self.ross("ps", "-a", "--format", "{{.Names}} {{.Size}}")
        self.assertEqual(sorted(result.stdout.splitlines()), [b"alive 0B", b"writer 300kB"])
        writer = self.record("writer").id
        result = yield self.ross("network", "create", "unused")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("system", "prune", "-f", "--volumes")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"Deleted Containers:\n{writer}\n\nDeleted Networks:\nunused\n".encode(), result.stdout)
        self.assertEqual([n.name for n in self.daemon.engine.network.networks.values()], ["bridge"])
        self.assertIn(b"Deleted Volumes:\n", result.stdout)
        self.assertEqual([r.name for r in self.daemon.engine.containers.records.values()], ["alive"])
        result = yield self.ross("images", "-q")
        self.assertEqual(len(result.stdout.split()), 1)
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"")


class RestartPolicyTests(ContainerTestCase):
    @inlineCallbacks
    def test_on_failure_gives_up(self) -> Any:
        """
        on-failure:2 restarts twice, then gives up; a start by hand begins
        the count anew (docker's), so two more restarts follow it.
        """
        result = yield self.ross("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 5")
        cid = result.stdout.strip().decode()

        def gave_up() -> bool:
            return self.record(cid).state.restart_count == 2 and self.record(cid).state.status == "exited"

        yield self.wait_for(gave_up, timeout=30)
        yield sleep(1)
        self.assertEqual((self.record(cid).state.restart_count, self.record(cid).state.exit_code), (2, 5))
        result = yield self.ross("start", cid)
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(gave_up, timeout=30)
        yield sleep(1)
        self.assertEqual(self.record(cid).state.status, "exited")
        result = yield self.ross("logs", cid)
        self.assertEqual(result.stdout, b"run\n" * 6)

    @inlineCallbacks
    def test_always_and_manual_stop(self) -> Any:
        result = yield self.ross("run", "-d", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2")
        cid = result.stdout.strip().decode()
        yield self.wait_for(lambda: self.record(cid).state.restart_count >= 2, timeout=30)
        result = yield self.ross("stop", "-t", "0", cid)
        yield sleep(1)
        self.assertIn(self.record(cid).state.status, ("exited",))


    @inlineCallbacks
    def test_kill_ends_the_policy(self) -> Any:
        """
        A kill ends the restart policy until the next start, as docker's:
        with SIGKILL, with the stop signal, and with any signal when that
        is the default; a kill with another signal than a custom stop
        signal leaves it.
        """
        for policy, kill, stop_signal, restarts in [("always", [], [], False),
                                                    ("unless-stopped", ["-s", "USR1"], [], False),
                                                    ("on-failure", ["-s", "INT"], ["--stop-signal", "INT"], False),
                                                    ("always", ["-s", "USR1"], ["--stop-signal", "INT"], True)]:
            # (A process 1 without a handler ignores what is not SIGKILL.)
            result = yield self.ross("run", "-d", "--restart", policy, *stop_signal, "busybox", "sh", "-c",
                                     "trap 'exit 3' USR1 INT; while true; do sleep 0.1; done")
            self.assertEqual(result.returncode, 0, result.stderr)
            cid = result.stdout.strip().decode()
            result = yield self.ross("kill", *kill, cid)
            self.assertEqual(result.returncode, 0, result.stderr)
            yield self.wait_for(lambda: self.record(cid).state.restart_count > 0
                                or self.record(cid).state.status == "exited", timeout=30)
            yield sleep(1.5)
            state = self.record(cid).state
            self.assertEqual((state.restart_count > 0, state.status == "running"), (restarts, restarts),
                             (policy, kill, stop_signal))
            yield self.ross("rm", "-f", cid)


class UpdateTests(ContainerTestCase):
    @inlineCallbacks
    def test_memory_reservation_and_oom_kill_disable(self) -> Any:
        """
        --memory-reservation is the memory cgroup's soft limit (update
        changes it), --oom-kill-disable its OOM control, inspect shows
        both; a reservation above the limit is refused (docker's).
        """
        result = yield self.ross("run", "-d", "--name", "soft", "-m", "64m", "--memory-reservation", "32m",
                                 "--oom-kill-disable", "busybox", "sleep", "60")
        self.assertEqual(result.returncode, 0, result.stderr)
        pid = self.record("soft").state.pid
        cgroup = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
        memory = Path("/sys/fs/cgroup/memory") / cgroup["memory"].lstrip("/")
        self.assertEqual((memory / "memory.soft_limit_in_bytes").read_text().strip(), str(32 << 20))
        self.assertIn("oom_kill_disable 1", (memory / "memory.oom_control").read_text())
        result = yield self.ross("update", "--memory-reservation", "16m", "soft")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((memory / "memory.soft_limit_in_bytes").read_text().strip(), str(16 << 20))
        result = yield self.ross("inspect", "-f", "{{.HostConfig.MemoryReservation}} {{.HostConfig.OomKillDisable}}",
                                 "soft")
        self.assertEqual(result.stdout, f"{16 << 20} true\n".encode())
        result = yield self.ross("run", "--rm", "-m", "16m", "--memory-reservation", "32m", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"can not be less than memory reservation limit", result.stderr)

    @inlineCallbacks
    def test_update_running(self) -> Any:
        """
        ross update changes the limits it is given in the running
        container's cgroup and record, keeps the others, and a refused
        limit, an unknown container or no flag at all change nothing.
        """
        result = yield self.ross("run", "-d", "--name", "limited", "--memory", "64m", "--pids-limit", "50",
                                 "busybox", "sleep", "60")
        self.assertEqual(result.returncode, 0, result.stderr)
        cid = result.stdout.strip().decode()
        result = yield self.ross("update", "--memory", "128m", "--cpu-shares", "512", "--restart", "on-failure:3",
                                 "limited")
        self.assertEqual((result.returncode, result.stdout), (0, b"limited\n"), result.stderr)
        host = self.record(cid).host
        self.assertEqual((host.resources.memory, host.resources.cpu_shares, host.resources.pids_limit),
                         (128 * 1024 * 1024, 512, 50))
        self.assertEqual((host.restart_policy.name, host.restart_policy.maximum_retry_count), ("on-failure", 3))
        pid = self.record(cid).state.pid
        cgroup = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
        memory = Path("/sys/fs/cgroup/memory") / cgroup["memory"].lstrip("/")
        self.assertEqual((memory / "memory.limit_in_bytes").read_text().strip(), str(128 * 1024 * 1024))
        pids = Path("/sys/fs/cgroup/pids") / cgroup["pids"].lstrip("/")
        self.assertEqual((pids / "pids.max").read_text().strip(), "50")
        # docker's -1 lifts the limit.
        result = yield self.ross("update", "--pids-limit", "-1", "limited")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((pids / "pids.max").read_text().strip(), "max")
        self.assertEqual(self.record(cid).host.resources.pids_limit, -1)
        result = yield self.ross("update", "--memory", "1m", "limited")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Minimum memory limit allowed is 6MB", result.stderr)
        self.assertEqual((memory / "memory.limit_in_bytes").read_text().strip(), str(128 * 1024 * 1024))
        self.assertEqual(self.record(cid).host.resources.memory, 128 * 1024 * 1024)
        result = yield self.ross("update", "--cpus", "1", "nosuch")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"No such container: nosuch", result.stderr)
        result = yield self.ross("update", "limited")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"you must provide one or more flags", result.stderr)
        yield self.ross("rm", "-f", "limited")


class BadInputTests(ContainerTestCase):
    @inlineCallbacks
    def test_unknown_container(self) -> Any:
        for call, request in [
            (self.api.containers.StopContainer, container_pb2.StopContainerRequest(container_id="nosuch")),
            (self.api.containers.KillContainer, container_pb2.KillContainerRequest(container_id="nosuch")),
            (self.api.containers.RemoveContainer, container_pb2.RemoveContainerRequest(container_id="nosuch")),
            (self.api.containers.InspectContainer, container_pb2.InspectContainerRequest(container_id="nosuch")),
            (self.api.containers.StartContainer, container_pb2.StartContainerRequest(container_id="nosuch")),
        ]:
            e = yield self.assertFailure(deferToThread(call, request), grpc.RpcError)
            self.assertEqual((e.code(), e.details()), (grpc.StatusCode.NOT_FOUND, "No such container: nosuch"))
        e = yield self.assertFailure(
            deferToThread(lambda: list(self.api.containers.GetLogs(container_pb2.GetLogsRequest(container_id="x")))),
            grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)

    @inlineCallbacks
    def test_names(self) -> Any:
        result = yield self.ross("create", "--name", "bad name!", "busybox", "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"Invalid container name", result.stderr)
        result = yield self.ross("create", "--name", "dup", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        e = yield self.assertFailure(deferToThread(
            self.api.containers.CreateContainer,
            container_pb2.CreateContainerRequest(name="dup", config=container_pb2.ContainerConfig(image="busybox"))),
            grpc.RpcError)
        self.assertEqual(e.code(), grpc.StatusCode.ALREADY_EXISTS)
        self.assertIn('The container name "/dup" is already in use', e.details())
        self.assertEqual(len(self.daemon.engine.containers.records), 1)

    @inlineCallbacks
    def test_stop_stopped(self) -> Any:
        """
        Stopping a container that is not running succeeds and changes
        nothing, as docker's; so does the second of two stops at once.
        """
        result = yield self.ross("create", "--name", "idle", "busybox", "true")
        yield deferToThread(self.api.containers.StopContainer, container_pb2.StopContainerRequest(container_id="idle"))
        result = yield self.ross("stop", "idle")
        self.assertEqual((result.returncode, result.stdout), (0, b"idle\n"), result.stderr)
        record = self.record("idle")
        self.assertEqual((record.state.status, record.state.manually_stopped), ("created", False))
        yield self.ross("run", "-d", "--name", "twice", "busybox", "sleep", "600")
        both = yield gatherResults([self.ross("stop", "-t", "1", "twice"), self.ross("stop", "-t", "1", "twice")])
        self.assertEqual([r.returncode for r in both], [0, 0], [r.stderr for r in both])
        self.assertEqual(self.record("twice").state.status, "exited")

    @inlineCallbacks
    def test_bad_create_leaves_nothing(self) -> Any:
        """
        Refused creates leave no record, snapshot or volume behind.
        """
        snapshots_before = yield self.daemon.engine.snapshotter.list()
        for args in (
            ["--restart", "sometimes", "busybox"],
            ["--memory", "1k", "busybox"],
            ["-v", "anon_vol:/x", "--mount", "type=bind,source=/nonexistent/path,target=/y", "busybox"],
            ["--cap-add", "FLY", "busybox"],
            ["nosuchimage:1"],
        ):
            result = yield self.ross("create", *args)
            self.assertEqual(result.returncode, 125, (args, result.stdout))
        self.assertEqual(list(self.daemon.engine.containers.records), [])
        snapshots_after = yield self.daemon.engine.snapshotter.list()
        self.assertEqual(len(snapshots_after), len(snapshots_before))
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"")


class HostileInputTests(ContainerTestCase):
    """
    What a QA pass found: each is refused with the right status, changes
    nothing, and leaves the daemon and other containers healthy.
    """

    def call_fails(self, fn: Any, *args: Any) -> Any:
        return self.assertFailure(deferToThread(fn, *args), grpc.RpcError)

    @inlineCallbacks
    def test_create_refusals_leave_nothing(self) -> Any:
        """
        Requests that could never start are refused at create, with
        INVALID_ARGUMENT, and create nothing (even with --rm).
        """
        cases = [
            ["-w", "relative"],
            ["--mount", "type=bind,source=/tmp,target=/x,bind-propagation=weird"],
            ["-v", "/proc/nonexistent/dir:/x"],
            ["-v", "/etc/passwd/sub:/x"],
            ["-h", "h" * 65],
            ["--dns", "notanip"],
            ["--add-host", "db:notanip"],
            ["-p", "99999:80"],
            ["--security-opt", "seccomp=/nonexistent.json"],
            ["--memory", "64m", "--memory-swap", "32m"],
            ["--memory-swap", "128m"],
            ["-v", ":/x"],
            ["--oom-score-adj", "1001"],
            ["--cpuset-cpus", "4096"],
            ["--cpuset-cpus", "1-0"],
            ["--cpuset-mems", "zero"],
        ]
        for args in cases:
            result = yield self.ross("run", "--rm", *args, "busybox", "true")
            self.assertEqual(result.returncode, 125, (args, result.stderr))
            self.assertTrue(result.stderr.startswith(b"Error: "), (args, result.stderr))
        for config in (container_pb2.ContainerConfig(image="busybox", env=["A=b\x00c"]),
                       container_pb2.ContainerConfig(image="busybox", labels={"big": "x" * (300 * 1024)})):
            create = container_pb2.CreateContainerRequest(config=config)
            e = yield self.call_fails(self.api.containers.CreateContainer, create)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(list(self.daemon.engine.containers.records), [])
        result = yield self.ross("volume", "ls", "-q")
        self.assertEqual(result.stdout, b"")
        result = yield self.ross("run", "--rm", "busybox", "true")
        self.assertEqual(result.returncode, 0, result.stderr)

    @inlineCallbacks
    def test_bad_frames_in_sessions(self) -> Any:
        """
        A terminal size no terminal can have ends the stream with
        INVALID_ARGUMENT and harms nothing; a resize of a session without a
        terminal is ignored; a second start frame is refused.
        """
        result = yield self.ross("run", "-d", "-t", "--name", "tty", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        from ross.v1 import common_pb2

        frames = [container_pb2.AttachInput(start=container_pb2.AttachStart(container_id="tty", attach_stdin=True)),
                  container_pb2.AttachInput(resize=common_pb2.WindowSize(rows=65536, cols=80))]
        e = yield self.call_fails(lambda: list(self.api.containers.Attach(iter(frames))))
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.INVALID_ARGUMENT, "invalid terminal size 65536x80"))
        start = container_pb2.ExecConfig(container_id="tty", cmd=["true"], tty=True,
                                         window=common_pb2.WindowSize(rows=70000, cols=1))
        e = yield self.call_fails(lambda: list(self.api.containers.Exec(iter([container_pb2.ExecInput(start=start)]))))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        result = yield self.ross("exec", "tty", "echo", "alive")
        self.assertEqual(result.stdout, b"alive\n")
        self.assertEqual(self.record("tty").state.status, "running")

        # An input name the session could not keep, on any start frame.
        for bad in ("../x", "x" * 65, "a b", "é"):
            start = container_pb2.ExecConfig(container_id="tty", cmd=["touch", "/made"], input_id=bad)
            e = yield self.call_fails(lambda: list(self.api.containers.Exec(iter([container_pb2.ExecInput(start=start)]))))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("invalid input_id", e.details())
            attach = container_pb2.AttachStart(container_id="tty", input_id=bad)
            e = yield self.call_fails(lambda: list(self.api.containers.Attach(iter([container_pb2.AttachInput(start=attach)]))))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        result = yield self.ross("exec", "tty", "ls", "/made")
        self.assertNotEqual(result.returncode, 0)

        start = container_pb2.ExecConfig(container_id="tty", cmd=["cat"], attach_stdin=True, input_id="in-1")
        frames2 = [container_pb2.ExecInput(start=start),
                   container_pb2.ExecInput(resize=common_pb2.WindowSize(rows=10, cols=10)),
                   container_pb2.ExecInput(stdin=b"through\n"),
                   container_pb2.ExecInput(close_stdin=True)]
        outputs = yield deferToThread(lambda: list(self.api.containers.Exec(iter(frames2), timeout=30)))
        self.assertEqual(b"".join(o.data.data for o in outputs if o.WhichOneof("output") == "data"), b"through\n")
        self.assertEqual(outputs[-1].exit.status_code, 0)
        # A named input's count starts at nothing taken in.
        self.assertTrue(outputs[0].started.HasField("input_offset"))
        self.assertEqual(outputs[0].started.input_offset, 0)

        frames3 = [container_pb2.ExecInput(start=start), container_pb2.ExecInput(start=start)]
        e = yield self.call_fails(lambda: list(self.api.containers.Exec(iter(frames3), timeout=30)))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)

    @inlineCallbacks
    def test_bad_values_through_the_api(self) -> Any:
        """
        Out-of-range times, unknown wait conditions and event types, NUL
        bytes in exec arguments: INVALID_ARGUMENT, never INTERNAL.
        """
        result = yield self.ross("run", "-d", "--name", "box", "busybox", "sleep", "1000")
        from google.protobuf.timestamp_pb2 import Timestamp

        from ross.v1 import system_pb2

        request = container_pb2.GetLogsRequest(container_id="box", since=Timestamp(seconds=-10**12))
        e = yield self.call_fails(lambda: list(self.api.containers.GetLogs(request)))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        e = yield self.call_fails(lambda: list(self.api.containers.Wait(
            container_pb2.WaitContainerRequest(container_id="box", condition=cast(Any, 99)))))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        e = yield self.call_fails(lambda: next(self.api.system.Events(system_pb2.EventsRequest(types=["bogus"]))))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        start = container_pb2.ExecConfig(container_id="box", cmd=["echo", "a\x00b"])
        e = yield self.call_fails(lambda: list(self.api.containers.Exec(iter([container_pb2.ExecInput(start=start)]))))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        e = yield self.call_fails(self.api.containers.InspectContainer,
                                  container_pb2.InspectContainerRequest(container_id="x" * 100_000))
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)

    @inlineCallbacks
    def test_cli_bad_arguments(self) -> Any:
        """
        Bad arguments end with one Error line and 125, not a traceback.
        """
        env_file = Path(self.mktemp()).absolute()
        env_file.write_bytes(b"A=\xff\xfe\n")
        for args in (["run", "--memory", "999999999999999999999", "busybox", "true"],
                     ["run", "--env-file", str(env_file), "busybox", "true"],
                     ["events", "--filter", "bogus=1"],
                     ["inspect", "--type", "nonsense", "box"]):
            result = yield self.ross(*args)
            self.assertEqual(result.returncode, 125, (args, result.stderr))
            self.assertTrue(result.stderr.startswith(b"Error: "), (args, result.stderr))
            self.assertNotIn(b"Traceback", result.stderr)
        result = yield deferToThread(lambda: subprocess.run(
            [sys.executable, "-m", "ross.cli.main", "inspect", b"\xff"],
            capture_output=True, env=dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO)),
            timeout=60))
        self.assertEqual(result.returncode, 125, result.stderr)
        self.assertIn(b"not UTF-8", result.stderr)


class ReviewTests(ContainerTestCase):
    """
    What a code review found: waiters that outlived their client, a
    start -a that could hang, a name race.
    """

    @inlineCallbacks
    def test_waits_end_with_their_client_and_with_removal(self) -> Any:
        """
        A Wait whose client leaves leaves no waiter behind; a Wait on a
        container that is removed before it ever ran answers.
        """
        manager = self.daemon.engine.containers
        result = yield self.ross("run", "-d", "--name", "up", "busybox", "sleep", "1000")
        cid = self.record("up").id
        call = self.api.containers.Wait(container_pb2.WaitContainerRequest(container_id="up"))
        first = yield deferToThread(next, call)
        self.assertTrue(first.waiting)
        self.assertEqual(len(manager._exit_waiters.get(cid, [])), 1)
        call.cancel()
        yield self.wait_for(lambda: not manager._exit_waiters.get(cid))
        result = yield self.ross("create", "--name", "never", "busybox", "true")
        waiter = deferToThread(lambda: list(self.api.containers.Wait(container_pb2.WaitContainerRequest(
            container_id="never", condition=container_pb2.WAIT_CONDITION_NEXT_EXIT), timeout=30)))
        yield self.wait_for(lambda: manager._exit_waiters.get(self.record("never").id))
        result = yield self.ross("rm", "never")
        frames = yield waiter
        self.assertEqual([f.WhichOneof("output") for f in frames], ["waiting", "exit"])

    @inlineCallbacks
    def test_start_attach_of_a_command_that_does_not_exist(self) -> Any:
        """
        start -a of a container whose command is missing ends with the
        start's error, instead of waiting forever for output.
        """
        result = yield self.ross("create", "--name", "broken", "busybox", "nosuchcommand")
        result = yield self.ross("start", "-a", "broken")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b'"nosuchcommand": executable file not found', result.stderr)
        self.assertEqual(self.daemon.engine.containers.sessions._pending_attach.get(self.record("broken").id, []), [])

    @inlineCallbacks
    def test_name_race(self) -> Any:
        """
        Of two creates racing for one name, one wins; the loser's rollback
        leaves the winner's name alone.
        """
        from twisted.internet.defer import Deferred, gatherResults

        images = self.daemon.engine.images
        resolve = images.resolve
        gate: Deferred[None] = Deferred()

        async def slow_resolve(name: str) -> Any:
            await gate
            return await resolve(name)

        self.patch(images, "resolve", slow_resolve)
        request = container_pb2.CreateContainerRequest(name="contested",
                                                       config=container_pb2.ContainerConfig(image="busybox"))
        calls = [deferToThread(self.api.containers.CreateContainer, request) for _ in range(2)]
        yield sleep(0.3)
        gate.callback(None)
        outcomes = yield gatherResults([c.addErrback(lambda f: f.value) for c in calls])
        winners = [o for o in outcomes if not isinstance(o, grpc.RpcError)]
        losers = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        self.assertEqual((len(winners), len(losers)), (1, 1))
        self.assertEqual(losers[0].code(), grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(self.record("contested").id, winners[0].id)

    @inlineCallbacks
    def test_ancestor_filter(self) -> Any:
        """
        ancestor= takes the image in docker's spellings, its ID or a prefix
        of it.
        """
        yield self.ross("create", "--name", "child", "busybox", "true")
        image_id = self.record("child").image_id
        for value, names in (("busybox", ["child"]), ("busybox:latest", ["child"]),
                             ("docker.io/library/busybox", ["child"]), (image_id, ["child"]),
                             (image_id[7:19], ["child"]), ("busybox:other", []), ("nosuch", [])):
            result = yield self.ross("ps", "-a", "--filter", f"ancestor={value}", "--format", "{{.Names}}")
            self.assertEqual(result.stdout.decode().split(), names, value)

    @inlineCallbacks
    def test_name_filter_is_not_a_regex(self) -> Any:
        yield self.ross("create", "--name", "web-1", "busybox", "true")
        yield self.ross("create", "--name", "api-web", "busybox", "true")
        for value, names in (("web", {"web-1", "api-web"}), ("^web", {"web-1"}), ("web$", {"api-web"}),
                             ("^api-web$", {"api-web"}), ("(a+)+b", set()),
                             # docker's names have a leading slash.
                             ("^/web-1$", {"web-1"}), ("/web", {"web-1"}), ("^/a", {"api-web"})):
            result = yield self.ross("ps", "-a", "--filter", f"name={value}", "--format", "json")
            self.assertEqual({json.loads(line)["Names"] for line in result.stdout.splitlines()}, names, value)


class LogTests(ContainerTestCase):
    @inlineCallbacks
    def test_rotation_and_tail(self) -> Any:
        """
        With max-size and max-file the log rotates; logs shows what is kept,
        newest last, and --tail the last lines.
        """
        result = yield self.ross("run", "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "--name", "chatty",
                                 "busybox", "sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done")
        self.assertEqual(result.returncode, 0, result.stderr)
        path = self.daemon.engine.containers.log_path(self.record("chatty").id)
        self.assertTrue(os.path.exists(path + ".1"))
        self.assertTrue(os.path.exists(path + ".2"))
        self.assertFalse(os.path.exists(path + ".3"))
        result = yield self.ross("logs", "chatty")
        lines = result.stdout.decode().split()
        self.assertEqual(lines[-1], "line299")
        self.assertEqual(lines, [f"line{i}" for i in range(300 - len(lines), 300)])
        result = yield self.ross("logs", "--tail", "3", "-t", "chatty")
        self.assertRegex(result.stdout.decode(), r"^(\S+Z line29[789]\n){3}$")
        # A time logs -t printed names its own line, to the nanosecond, for
        # --since and --until alike (docker's); a tail that is no number
        # is all of it; --details is taken.
        result = yield self.ross("logs", "--tail", "abc", "--details", "chatty")
        self.assertEqual(result.stdout.decode().split(), lines)
        result = yield self.ross("run", "--name", "paced", "busybox", "sh", "-c",
                                 "echo one; sleep 0.2; echo two; sleep 0.2; echo three")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("logs", "-t", "paced")
        stamps = result.stdout.decode().split()[0::2]
        result = yield self.ross("logs", "--since", stamps[1], "--until", stamps[1], "paced")
        self.assertEqual(result.stdout, b"two\n", result.stderr)

    @inlineCallbacks
    def test_grep_in_the_daemon(self) -> Any:
        """
        ``logs --grep`` gets only the matching lines and their context from
        the daemon, across the rotated files, with grep's "--" between
        groups; the API marks context and gaps; a bad pattern is refused.
        """
        script = ("i=0; while [ $i -lt 300 ]; do if [ $((i % 100)) = 50 ]; then echo match$i; "
                  "else echo line$i; fi; i=$((i+1)); done")
        result = yield self.ross("run", "--log-opt", "max-size=10k", "--log-opt", "max-file=3", "--name", "grepped",
                                 "busybox", "sh", "-c", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        path = self.daemon.engine.containers.log_path(self.record("grepped").id)
        self.assertTrue(os.path.exists(path + ".1"))
        result = yield self.ross("logs", "--grep", "match[0-9]+", "-C", "1", "grepped")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode().split(), ["line49", "match50", "line51", "--", "line149", "match150",
                                                          "line151", "--", "line249", "match250", "line251"])
        stub = self.daemon.clients().containers
        request = container_pb2.GetLogsRequest(container_id="grepped", filter=container_pb2.LogFilter(
            pattern="MATCH2", ignore_case=True, before=2))
        found = yield deferToThread(lambda: [e for batch in stub.GetLogs(request) for e in batch.entries])
        self.assertEqual([(e.line, e.context, e.gap) for e in found],
                         [(b"line248\n", True, False), (b"line249\n", True, False), (b"match250\n", False, False)])
        result = yield self.ross("logs", "--grep", "(", "grepped")
        self.assertEqual(result.returncode, 125)
        self.assertIn("invalid log filter pattern", result.stderr.decode())

    @inlineCallbacks
    def test_followers_share_one_watch(self) -> Any:
        """
        Two followers of one log share one inotify instance, which goes away
        with the last of them.
        """
        from twisted.internet.defer import gatherResults

        result = yield self.ross("run", "-d", "--name", "pair", "busybox", "sh", "-c",
                                 "sleep 1; echo one; sleep 0.5; echo two")
        watcher = self.daemon.engine.containers._log_watcher
        directory = os.path.dirname(self.daemon.engine.containers.log_path(self.record("pair").id))
        followers = [self.ross("logs", "-f", "pair") for _ in range(2)]
        yield self.wait_for(lambda: len(watcher._callbacks.get(directory, [])) == 2)
        results = yield gatherResults(followers)
        self.assertEqual([r.stdout for r in results], [b"one\ntwo\n"] * 2)
        self.assertIsNone(watcher._notifier)

    @inlineCallbacks
    def test_follow_across_rotation_until_exit(self) -> Any:
        result = yield self.ross("run", "-d", "--log-opt", "max-size=1k", "--log-opt", "max-file=5", "--name", "follow",
                                 "busybox", "sh", "-c",
                                 "sleep 0.5; i=0; while [ $i -lt 100 ]; do echo l$i; i=$((i+1)); sleep 0.01; done")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("logs", "-f", "follow")
        self.assertEqual(result.stdout.decode().split(), [f"l{i}" for i in range(100)])
