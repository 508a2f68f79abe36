"""
``ross cp`` for real: files into and out of running, paused and stopped
busybox containers, volumes and binds, through the CLI and the API, with
docker's path rules and errors, and what is refused (symlinks out of the
container, broken archives, read-only root filesystems) changing nothing.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any, Iterator

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.client.direct import DirectError, redeem_fd
from ross.engine.containers.cphelper import STAGING_PREFIX
from ross.engine.events import EventFilter
from ross.services import direct as direct_module
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import REPO, run_cli
from ross.testing.direct import open_pipe, write_and_close
from ross.testing.leaks import mounts_under, processes_mentioning
from ross.testing.terminal import Terminal
from ross.v1 import container_pb2


def _tar(files: dict[str, bytes], uid: int = 0) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), uid, uid, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _requests(container: str, path: str, data: bytes, chunk: int = 65536) -> Iterator[Any]:
    yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(container_id=container, path=path))
    for i in range(0, len(data), chunk):
        yield container_pb2.CopyToRequest(data=data[i:i + chunk])


class CopyTestCase(ContainerTestCase):
    #: C{ROSS_DIRECT} for the CLI: the archive on a direct channel ("1",
    #: a local client's default) or on the gRPC stream ("0", a remote one's).
    direct = "1"

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.host = Path(self.mktemp()).resolve()
        self.host.mkdir(parents=True)
        self.addCleanup(self.check_no_copies)

    def ross(self, *args: str, input: bytes | None = None) -> Any:
        return deferToThread(run_cli, self.daemon.address, *args, input=input, env={"ROSS_DIRECT": self.direct})

    @inlineCallbacks
    def check_no_copies(self) -> Any:
        """No helper left, nothing mounted under the daemon's directories."""
        copier = self.daemon.engine.containers.copier
        yield self.wait_for(lambda: not copier.running)
        self.assertEqual([p for p, _ in processes_mentioning(str(copier.workdir)) if p not in copier.spare_pids], [])
        self.assertEqual(mounts_under(self.daemon.base), [])
        self.assertEqual(os.listdir(copier.workdir) if copier.workdir.exists() else [], [])

    @inlineCallbacks
    def cli(self, *args: str, input: bytes | None = None, code: int = 0) -> Any:
        result = yield self.ross(*args, input=input)
        self.assertEqual(result.returncode, code, (args, result.stderr))
        return result

    @inlineCallbacks
    def sh(self, container: str, script: str) -> Any:
        result = yield self.cli("exec", container, "sh", "-c", script)
        return result.stdout.decode()

    @inlineCallbacks
    def running(self, name: str, *flags: str) -> Any:
        yield self.cli("run", "-d", "--name", name, *flags, "busybox", "sleep", "1000")

    @inlineCallbacks
    def stopped(self, name: str, *flags: str) -> Any:
        yield self.cli("create", "--name", name, *flags, "busybox", "sleep", "1000")

    def file(self, relative: str, data: bytes = b"hello\n") -> Path:
        path = self.host / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def api_error(self, call: Any, *args: Any) -> Any:
        def run() -> grpc.RpcError:
            try:
                result = call(*args)
                if hasattr(result, "__iter__"):
                    list(result)
            except grpc.RpcError as e:
                return e
            raise AssertionError("the call succeeded")

        return deferToThread(run)


class CopyInOutTests(CopyTestCase):
    @inlineCallbacks
    def test_running_in_and_out(self) -> Any:
        """
        A file copied into a running container is there for exec at once;
        copied back out, it is the same; nothing is printed without a
        terminal.
        """
        yield self.running("web1")
        source = self.file("in.txt", b"copied in\n")
        result = yield self.cli("cp", str(source), "web1:/tmp/")
        self.assertEqual((result.stdout, result.stderr), (b"", b""))
        self.assertEqual((yield self.sh("web1", "cat /tmp/in.txt; stat -c %u:%g:%a /tmp/in.txt")),
                         "copied in\n0:0:644\n")
        yield self.cli("cp", "web1:/tmp/in.txt", str(self.host / "back.txt"))
        self.assertEqual((self.host / "back.txt").read_bytes(), b"copied in\n")

    @inlineCallbacks
    def test_replaces_files(self) -> Any:
        """
        Files that exist are replaced, never written through: one in the
        container's own layer (its other hard link keeps the old content),
        one of the image (/etc/group); a symlink destination is resolved
        (docker's rule), so its target is replaced and it stays a link;
        running and stopped.
        """
        for name, stopped in (("r1", False), ("r2", True)):
            yield self.running(name)
            yield self.sh(name, "echo old > /tmp/f; ln /tmp/f /tmp/g; echo keep > /tmp/t; ln -s /tmp/t /tmp/l")
            if stopped:
                yield self.cli("stop", "-t", "0", name)
            staged = self.host / name
            for file in ("f", "l", "group"):
                self.file(f"{name}/{file}", f"new {file}\n".encode())
            yield self.cli("cp", str(staged / "f"), f"{name}:/tmp/f")
            yield self.cli("cp", str(staged / "l"), f"{name}:/tmp/l")
            yield self.cli("cp", str(staged / "group"), f"{name}:/etc/")
            if stopped:
                yield self.cli("start", name)
            seen = yield self.sh(name, "cat /tmp/f /tmp/g /tmp/t /tmp/l /etc/group; test -L /tmp/l && echo link")
            self.assertEqual(seen, "new f\nold\nnew l\nnew l\nnew group\nlink\n", name)

    @inlineCallbacks
    def test_events(self) -> Any:
        """docker's events: extract-to-dir and archive-path, none for a stat alone."""
        yield self.running("ev1")
        yield self.cli("cp", str(self.file("e")), "ev1:/tmp/")
        yield self.cli("cp", "ev1:/tmp/e", "-")
        events = self.daemon.engine.events.history(EventFilter(attributes={"container": "ev1"}), 0)
        actions = [e.action for e in events if e.action in ("extract-to-dir", "archive-path")]
        self.assertEqual(actions, ["extract-to-dir", "archive-path"])

    @inlineCallbacks
    def test_device_nodes(self) -> Any:
        """Device nodes and fifos in an archive are made, as root may (docker's cp as root)."""
        yield self.running("n1")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name, kind in (("null2", tarfile.CHRTYPE), ("fifo", tarfile.FIFOTYPE)):
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.devmajor, info.devminor = kind, 0o666, 1, 3
                tar.addfile(info)
        yield self.cli("cp", "-", "n1:/tmp", input=out.getvalue())
        self.assertEqual((yield self.sh("n1", "stat -c %F:%t:%T /tmp/null2 /tmp/fifo")).splitlines(),
                         ["character special file:1:3", "fifo:0:0"])
        result = yield self.cli("cp", "n1:/tmp/null2", "-")
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            member = tar.getmember("null2")
            self.assertEqual((member.ischr(), member.devmajor, member.devminor), (True, 1, 3))

    @inlineCallbacks
    def test_stopped_and_paused(self) -> Any:
        """
        Copies work on a created container (seen once it starts), a paused
        one and an exited one.
        """
        yield self.stopped("c1")
        yield self.cli("cp", str(self.file("a.txt", b"before start\n")), "c1:/a.txt")
        yield self.cli("start", "c1")
        self.assertEqual((yield self.sh("c1", "cat /a.txt")), "before start\n")
        yield self.cli("pause", "c1")
        yield self.cli("cp", str(self.file("b.txt", b"while paused\n")), "c1:/b.txt")
        yield self.cli("cp", "c1:/a.txt", str(self.host / "a-paused"))
        yield self.cli("unpause", "c1")
        self.assertEqual((yield self.sh("c1", "cat /b.txt")), "while paused\n")
        yield self.cli("kill", "c1")
        yield self.cli("wait", "c1")
        yield self.cli("cp", "c1:/b.txt", str(self.host / "b-exited"))
        yield self.cli("cp", str(self.file("c.txt", b"after exit\n")), "c1:/c.txt")
        yield self.cli("cp", "c1:/c.txt", str(self.host / "c-exited"))
        self.assertEqual((self.host / "a-paused").read_bytes(), b"before start\n")
        self.assertEqual((self.host / "b-exited").read_bytes(), b"while paused\n")
        self.assertEqual((self.host / "c-exited").read_bytes(), b"after exit\n")

    @inlineCallbacks
    def test_volume_and_bind(self) -> Any:
        """
        Into a named volume and a bind mount, of a stopped container (the
        helper mounts them) and a running one (it sees them).
        """
        bind = self.host / "bind"
        bind.mkdir()
        yield self.stopped("v1", "-v", "cpvol:/data", "-v", f"{bind}:/bind")
        yield self.cli("cp", str(self.file("x.txt", b"to volume\n")), "v1:/data/")
        yield self.cli("cp", str(self.file("y.txt", b"to bind\n")), "v1:/bind/y.txt")
        self.assertEqual((bind / "y.txt").read_bytes(), b"to bind\n")
        yield self.cli("start", "v1")
        self.assertEqual((yield self.sh("v1", "cat /data/x.txt")), "to volume\n")
        yield self.cli("cp", str(self.file("z.txt", b"running\n")), "v1:/bind/")
        self.assertEqual((bind / "z.txt").read_bytes(), b"running\n")
        yield self.cli("cp", "v1:/data/x.txt", str(self.host / "from-volume"))
        self.assertEqual((self.host / "from-volume").read_bytes(), b"to volume\n")

    @inlineCallbacks
    def test_directories_and_trailing_dot(self) -> Any:
        """
        docker's rules: a directory onto an existing directory goes inside
        it, onto a missing path takes its name; SRC/. copies the contents.
        """
        yield self.running("d1")
        self.file("tree/a", b"A")
        self.file("tree/sub/b", b"B")
        yield self.cli("cp", str(self.host / "tree"), "d1:/tmp/")
        yield self.cli("cp", str(self.host / "tree"), "d1:/renamed")
        yield self.cli("cp", str(self.host / "tree") + "/.", "d1:/tmp/")
        listing = yield self.sh("d1", "cd /tmp && find tree /renamed a sub | sort")
        self.assertEqual(listing.split(), sorted(
            ["tree", "tree/a", "tree/sub", "tree/sub/b", "/renamed", "/renamed/a", "/renamed/sub",
             "/renamed/sub/b", "a", "sub", "sub/b"]))
        yield self.cli("cp", "d1:/renamed/.", str(self.host / "contents"))
        yield self.cli("cp", "d1:/renamed", str(self.host / "contents"))
        self.assertEqual(sorted(os.listdir(self.host / "contents")), ["a", "renamed", "sub"])
        self.assertEqual((self.host / "contents" / "renamed" / "sub" / "b").read_bytes(), b"B")

    @inlineCallbacks
    def test_tar_stdin_stdout(self) -> Any:
        """`-` reads a tar from stdin into a directory and writes one to stdout."""
        yield self.running("t1")
        yield self.cli("cp", "-", "t1:/tmp", input=_tar({"one": b"1", "dir/two": b"22"}))
        self.assertEqual((yield self.sh("t1", "cat /tmp/one /tmp/dir/two")), "122")
        result = yield self.cli("cp", "t1:/tmp/dir", "-")
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            self.assertEqual(tar.getnames(), ["dir", "dir/two"])
            member = tar.extractfile("dir/two")
            assert member is not None
            self.assertEqual(member.read(), b"22")

    @inlineCallbacks
    def test_archive_keeps_owners(self) -> Any:
        """Without -a files belong to root (0:0); with -a they keep uid and gid."""
        yield self.running("o1")
        source = self.file("owned", b"x")
        os.chown(source, 1234, 5678)
        yield self.cli("cp", str(source), "o1:/plain")
        yield self.cli("cp", "-a", str(source), "o1:/kept")
        self.assertEqual((yield self.sh("o1", "stat -c %u:%g /plain /kept")), "0:0\n1234:5678\n")

    @inlineCallbacks
    def test_follow_link(self) -> Any:
        """A symlink is copied as a link; with -L its target, under the link's name."""
        yield self.running("l1")
        yield self.sh("l1", "echo target > /tmp/real; ln -s /tmp/real /tmp/link")
        yield self.cli("cp", "l1:/tmp/link", str(self.host / "as-link"))
        self.assertEqual(os.readlink(self.host / "as-link"), "/tmp/real")
        yield self.cli("cp", "-L", "l1:/tmp/link", str(self.host / "followed"))
        self.assertFalse((self.host / "followed").is_symlink())
        self.assertEqual((self.host / "followed").read_bytes(), b"target\n")
        result = yield self.cli("cp", "-L", "l1:/tmp/link", "-")
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            self.assertEqual(tar.getnames(), ["link"])
        # A link in the tree that leads out of the destination ends the
        # copy, as docker's (an absolute one is taken inside it).
        yield self.sh("l1", "mkdir -p /out/sub && ln -s ../../../../etc/shadow /out/sub/out && "
                            "ln -s /etc/shadow /out/abs")
        result = yield self.cli("cp", "l1:/out", str(self.host / "planted"), code=1)
        self.assertIn(b'invalid symlink "', result.stderr)
        self.assertFalse((self.host / "planted" / "sub" / "out").is_symlink())
        yield self.sh("l1", "rm /out/sub/out")
        yield self.cli("cp", "l1:/out", str(self.host / "fine"))
        self.assertEqual(os.readlink(self.host / "fine" / "abs"), "/etc/shadow")

    @inlineCallbacks
    def test_successfully_copied_on_a_terminal(self) -> Any:
        """On a terminal, docker's last line: the archive's size and the destination."""
        yield self.running("p1")
        source = self.file("three", b"abc")
        env = dict(os.environ, ROSS_HOST=self.daemon.address, PYTHONPATH=str(REPO), TERM="xterm")
        term = Terminal([sys.executable, "-m", "ross.cli.main", "cp", str(source), "p1:/tmp/"], env=env)
        self.addCleanup(term.close)
        yield deferToThread(term.expect, rb"Successfully copied 2\.05kB to p1:/tmp/")
        self.assertEqual((yield deferToThread(term.wait)), 0)
        quiet = Terminal([sys.executable, "-m", "ross.cli.main", "cp", "-q", "p1:/tmp/three",
                          str(self.host / "q")], env=env)
        self.addCleanup(quiet.close)
        self.assertEqual((yield deferToThread(quiet.wait)), 0)
        self.assertNotIn(b"Successfully", quiet.output)


class CopySafetyTests(CopyTestCase):
    def links(self) -> str:
        """
        A script making, in a container, links to / and out with "..", and
        links to host paths that exist in the container too (as decoys).
        """
        return (f"mkdir -p {self.host}/outside {self.host}/secret; echo container key > {self.host}/secret/key; "
                f"ln -s {self.host}/outside /outside; ln -s {self.host}/secret /secretlink; "
                "ln -s / /up; ln -s ../../../../../../../../tmp /rel")

    @inlineCallbacks
    def check_escapes(self, name: str) -> Any:
        secret = self.file("secret/key", b"host secret\n")
        outside = self.host / "outside"
        outside.mkdir()
        unique = f"payload-{os.getpid()}-{id(self)}"
        payload = str(self.file(unique, b"payload\n"))
        yield self.cli("cp", payload, f"{name}:/up/tmp/via-up")
        yield self.cli("cp", payload, f"{name}:/outside/")
        yield self.cli("cp", payload, f"{name}:/rel/")
        self.assertEqual(os.listdir(outside), [])
        self.assertFalse(os.path.exists(f"/tmp/{unique}"))
        yield self.cli("cp", f"{name}:/secretlink/key", str(self.host / "got"))
        yield self.cli("cp", "-L", f"{name}:/secretlink", str(self.host / "got-dir"))
        self.assertEqual((self.host / "got").read_bytes(), b"container key\n")
        self.assertEqual((self.host / "got-dir" / "key").read_bytes(), b"container key\n")
        self.assertEqual(secret.read_bytes(), b"host secret\n")
        for path in ("/tmp/via-up", f"{self.host}/outside/{unique}", f"/tmp/{unique}"):
            yield self.cli("cp", f"{name}:{path}", str(self.host / "check"))
            self.assertEqual((self.host / "check").read_bytes(), b"payload\n")
            (self.host / "check").unlink()

    @inlineCallbacks
    def test_symlinks_stay_inside_running(self) -> Any:
        """
        In a running container, symlinks to /, to host paths and climbing
        with .. resolve inside the container, both ways.
        """
        yield self.running("s1")
        yield self.sh("s1", self.links())
        yield self.check_escapes("s1")

    @inlineCallbacks
    def test_symlinks_stay_inside_stopped(self) -> Any:
        """The same for a stopped container, whose storage the helper mounts."""
        yield self.cli("run", "--name", "s2", "busybox", "sh", "-c", self.links())
        yield self.check_escapes("s2")

    @inlineCallbacks
    def test_tar_members_confined(self) -> Any:
        """Absolute and .. member names land inside the destination, never above it."""
        yield self.running("m1")
        yield self.sh("m1", "mkdir /dest")
        yield self.cli("cp", "-", "m1:/dest", input=_tar({"/abs": b"a", "../../up": b"u", "x/../../y": b"y"}))
        listing = yield self.sh("m1", "ls /dest; ls / | grep -c -e '^up$' -e '^abs$' -e '^y$' || true")
        self.assertEqual(listing.split(), ["abs", "up", "y", "0"])

    @inlineCallbacks
    def test_broken_archives_change_nothing(self) -> Any:
        """
        Garbage, a truncated archive and one that ends without its end
        marker: INVALID_ARGUMENT, the destination as it was, no staging
        directory left; for running and stopped containers.
        """
        yield self.running("b1")
        yield self.stopped("b2")
        whole = _tar({"keep/one": b"1" * 100_000, "keep/two": b"2" * 100_000})
        unended = whole.rstrip(b"\0")
        unended += bytes(-len(unended) % 512)
        cases = [b"this is not a tar" * 100, whole[:70_000], unended]
        for name in ("b1", "b2"):
            for data in cases:
                e = yield self.api_error(self.api.containers.CopyTo, _requests(name, "/tmp", data))
                self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
                self.assertIn("Error processing tar file", e.details())
            result = yield self.cli("cp", f"{name}:/tmp", "-")
            with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
                self.assertEqual(tar.getnames(), ["tmp"])
        result = yield self.cli("cp", "-", "b1:/tmp", input=b"garbage", code=1)
        self.assertTrue(result.stderr.startswith(b"Error: Error processing tar file"), result.stderr)

    @inlineCallbacks
    def test_conflicts_change_nothing(self) -> Any:
        """
        An archive that would put a file over a directory (or the reverse)
        is refused before anything moves, even entries that come first.
        """
        yield self.running("k1")
        yield self.sh("k1", "mkdir -p /dest/isdir; echo old > /dest/file")
        data = _tar({"first": b"new", "isdir": b"file over dir"})
        e = yield self.api_error(self.api.containers.CopyTo, iter([
            container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(
                container_id="k1", path="/dest", no_overwrite_dir_non_dir=True)),
            container_pb2.CopyToRequest(data=data)]))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn('cannot overwrite directory "/dest/isdir" with non-directory', e.details())
        self.assertEqual((yield self.sh("k1", "ls -A /dest")).split(), ["file", "isdir"])
        result = yield self.cli("cp", str(self.file("isdir", b"f")), "k1:/dest/", code=1)
        self.assertIn(b"cannot overwrite directory", result.stderr)

    @inlineCallbacks
    def test_trees_deeper_than_the_recursion_limit(self) -> Any:
        """
        A 1500-level tree copied in, again over itself (every directory
        merged, with and without the conflict check), and out. Before,
        the merge, the check and the copy out recursed once per level and
        failed.
        """
        yield self.running("k2")
        deep = "/".join(["a"] * 1500)
        data = _tar({deep + "/f": b"far"})
        for no_overwrite in (False, False, True):
            done = yield deferToThread(self.api.containers.CopyTo, iter([
                container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(
                    container_id="k2", path="/tmp", no_overwrite_dir_non_dir=no_overwrite)),
                container_pb2.CopyToRequest(data=data)]))
            self.assertIsInstance(done, container_pb2.CopyToResponse)
        self.assertEqual((yield self.sh("k2", f"cat /tmp/{deep}/f; echo; find /tmp/a | wc -l")), "far\n1501\n")
        result = yield self.cli("cp", "k2:/tmp/a", "-")
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            self.assertEqual(len(tar.getnames()), 1501)
            member = tar.extractfile(deep + "/f")
            assert member is not None
            self.assertEqual(member.read(), b"far")

    @inlineCallbacks
    def test_read_only_rootfs(self) -> Any:
        """
        --read-only: refused on the root filesystem (FAILED_PRECONDITION,
        docker's message), allowed into a volume, and into a tmpfs while
        running; a read-only volume is refused too.
        """
        yield self.running("r1", "--read-only", "-v", "rwvol:/data", "-v", "rovol:/ro:ro", "--tmpfs", "/scratch")
        source = str(self.file("f", b"f"))
        result = yield self.cli("cp", source, "r1:/", code=1)
        self.assertEqual(result.stderr, b"Error: container rootfs is marked read-only\n")
        result = yield self.cli("cp", source, "r1:/ro/", code=1)
        self.assertEqual(result.stderr, b"Error: mounted volume is marked read-only\n")
        yield self.cli("cp", source, "r1:/data/")
        yield self.cli("cp", source, "r1:/scratch/")
        self.assertEqual((yield self.sh("r1", "cat /data/f /scratch/f")), "ff")
        e = yield self.api_error(self.api.containers.CopyTo, _requests("r1", "/etc", _tar({"x": b"x"})))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        yield self.cli("stop", "-t", "0", "r1")
        result = yield self.cli("cp", source, "r1:/etc/", code=1)
        self.assertEqual(result.stderr, b"Error: container rootfs is marked read-only\n")
        yield self.cli("cp", source, "r1:/data/g")
        yield self.cli("start", "r1")
        self.assertEqual((yield self.sh("r1", "cat /data/g")), "f")


class CopyErrorTests(CopyTestCase):
    @inlineCallbacks
    def test_api_errors(self) -> Any:
        """Each refusal has its status code and names the object."""
        yield self.running("e1")
        e = yield self.api_error(self.api.containers.CopyFrom,
                                 container_pb2.CopyFromRequest(container_id="nope", path="/etc"))
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.NOT_FOUND, "No such container: nope"))
        e = yield self.api_error(self.api.containers.CopyTo, _requests("nope", "/", b""))
        self.assertEqual((e.code(), e.details()), (grpc.StatusCode.NOT_FOUND, "No such container: nope"))
        e = yield self.api_error(self.api.containers.CopyFrom,
                                 container_pb2.CopyFromRequest(container_id="e1", path="/missing/x"))
        self.assertEqual((e.code(), e.details()),
                         (grpc.StatusCode.NOT_FOUND, "Could not find the file /missing/x in container e1"))
        e = yield self.api_error(self.api.containers.CopyTo, _requests("e1", "/missing", _tar({"a": b""})))
        self.assertEqual((e.code(), e.details()),
                         (grpc.StatusCode.NOT_FOUND, "Could not find the file /missing in container e1"))
        e = yield self.api_error(self.api.containers.CopyTo, _requests("e1", "/etc/passwd", _tar({"a": b""})))
        self.assertEqual((e.code(), e.details()),
                         (grpc.StatusCode.INVALID_ARGUMENT, "extraction point is not a directory"))
        e = yield self.api_error(self.api.containers.CopyTo, iter([container_pb2.CopyToRequest(data=b"x")]))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)

    @inlineCallbacks
    def test_stat(self) -> Any:
        """stat_only describes the path, a symlink's target resolved inside the container."""
        yield self.running("e2")
        yield self.sh("e2", "ln -s ../etc /tmp/etclink")
        messages = yield deferToThread(lambda: list(self.api.containers.CopyFrom(
            container_pb2.CopyFromRequest(container_id="e2", path="/tmp/etclink", stat_only=True))))
        self.assertEqual(len(messages), 1)
        st = messages[0].stat
        self.assertEqual((st.name, st.link_target), ("etclink", "/etc"))
        self.assertTrue(stat.S_ISLNK(st.mode))

    @inlineCallbacks
    def test_cli_errors(self) -> Any:
        """docker's messages, one line, exit 1."""
        yield self.running("e3")
        local = str(self.file("f", b"f"))
        self.file("dir/x", b"x")
        cases = [
            (["nope:/x", str(self.host / "o")], "No such container: nope"),
            (["e3:/nonexist", str(self.host / "o")], "Could not find the file /nonexist in container e3"),
            ([local, "e3:/nodir/"], "no such directory"),
            ([local, "e3:/nodir/x"], "Could not find the file /nodir in container e3"),
            ([str(self.host / "dir"), "e3:/etc/passwd"], "cannot copy directory"),
            ([local, "e3:/etc/passwd/x"], "extraction point is not a directory"),
            (["-", "e3:/etc/passwd"], 'destination "e3:/etc/passwd" must be a directory'),
            (["e3:/etc", local], "cannot copy directory"),
            (["e3:/etc/passwd", str(self.host / "missing") + "/"], "no such directory"),
            (["e3:/etc/passwd", "/dev/null"],
             'invalid output path: "/dev/null" must be a directory or a regular file: got a device'),
            (["e3:/a", "e3:/b"], "copying between containers is not supported"),
            ([local, str(self.host / "z")], "must specify at least one container source"),
            ([str(self.host / "absent"), "e3:/tmp"], f"lstat {self.host}/absent: no such file or directory"),
        ]
        for argv, message in cases:
            result = yield self.cli("cp", *argv, input=b"", code=1)
            self.assertEqual(result.stderr.decode(), f"Error: {message}\n", argv)
        result = yield self.cli("cp", "-q", code=125)
        self.assertIn(b"the following arguments are required", result.stderr)


class CopyCancelTests(CopyTestCase):
    @inlineCallbacks
    def cancel_copy_to(self, name: str) -> Any:
        """Half an archive sent, then the client goes away."""
        sent = threading.Event()
        release = threading.Event()
        whole = _tar({"big": os.urandom(4 << 20)})

        def requests() -> Iterator[Any]:
            yield container_pb2.CopyToRequest(options=container_pb2.CopyToOptions(container_id=name, path="/tmp"))
            yield container_pb2.CopyToRequest(data=whole[: 2 << 20])
            sent.set()
            release.wait(30)

        future = self.api.containers.CopyTo.future(requests())
        copier = self.daemon.engine.containers.copier
        yield deferToThread(sent.wait, 30)
        yield self.wait_for(lambda: copier.running)
        helpers = list(copier.running)
        self.assertTrue(helpers)
        future.cancel()
        release.set()
        yield self.wait_for(lambda: not copier.running)
        self.assertEqual([p for p in helpers if os.path.exists(f"/proc/{p}")], [])
        result = yield self.cli("cp", f"{name}:/tmp", "-")
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            names = tar.getnames()
        self.assertEqual(names, ["tmp"], "a staging directory or a partial file was left")
        self.assertFalse(any(STAGING_PREFIX in n for n in names))

    def test_cancel_copy_to_running(self) -> Any:
        """A client gone mid-archive: the helper ends, the staging directory goes."""
        return self.running("x1").addCallback(lambda _: self.cancel_copy_to("x1"))

    def test_cancel_copy_to_stopped(self) -> Any:
        """The same in a stopped container: its private mounts go with the helper."""
        return self.stopped("x2").addCallback(lambda _: self.cancel_copy_to("x2"))

    @inlineCallbacks
    def test_cancel_copy_from(self) -> Any:
        """A reader gone after the first chunk of a large archive stops the helper."""
        yield self.running("x3")
        yield self.sh("x3", "head -c 40000000 /dev/zero > /tmp/big")
        stream = self.api.containers.CopyFrom(container_pb2.CopyFromRequest(container_id="x3", path="/tmp/big"))
        first = yield deferToThread(lambda: [next(stream), next(stream)])
        self.assertEqual(first[0].stat.size, 40_000_000)
        copier = self.daemon.engine.containers.copier
        stream.cancel()
        yield self.wait_for(lambda: not copier.running)


class GrpcPathCopyInOutTests(CopyInOutTests):
    """CopyInOutTests with the archive on the gRPC stream (a remote client's path)."""

    direct = "0"


class GrpcPathCopyErrorTests(CopyErrorTests):
    """CopyErrorTests with the archive on the gRPC stream."""

    direct = "0"


class DirectChannelTests(CopyTestCase):
    """
    The archive's pipe handed to a local client (CopyToDirect, CopyFrom with
    C{direct}): what a client that misbehaves or goes away leaves.
    """

    def copy_to(self, name: str, path: str = "/tmp") -> Any:
        # bounded: the call's deadline ends every wait on its stream.
        return self.api.containers.CopyToDirect(container_pb2.CopyToOptions(container_id=name, path=path), timeout=30)

    def open_copy_to(self, name: str) -> tuple[Any, int, Any]:
        """(blocking) A CopyToDirect call, its pipe redeemed, and its ticket."""
        stream = self.copy_to(name)
        return (stream, *open_pipe(stream))

    def listing(self, name: str) -> Any:
        return self.sh(name, "ls -a /tmp")

    @inlineCallbacks
    def check_unchanged(self, name: str, before: str) -> Any:
        copier = self.daemon.engine.containers.copier
        yield self.wait_for(lambda: not copier.running)
        self.assertEqual((yield self.listing(name)), before)

    @inlineCallbacks
    def test_cut_short(self) -> Any:
        """
        A client that closes the pipe before the end of the archive (it
        went away): INVALID_ARGUMENT, nothing changed, no helper left.
        """
        yield self.running("d1")
        before = yield self.listing("d1")
        whole = _tar({"big": os.urandom(3 << 20), "small": b"s"})

        def run() -> Any:
            stream, fd, _ = self.open_copy_to("d1")
            return write_and_close(stream, fd, whole[: 2 << 20])[1]

        error = yield deferToThread(run)
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("Truncated archive", error.details())
        yield self.check_unchanged("d1", before)

    @inlineCallbacks
    def test_whole_archive(self) -> Any:
        """The same archive whole: extracted, and the stream's last message says so."""
        yield self.running("d2")

        def run() -> Any:
            stream, fd, _ = self.open_copy_to("d2")
            rest, error = write_and_close(stream, fd, _tar({"one": b"1\n", "two": b"2\n"}))
            self.assertIsNone(error)
            return rest

        rest = yield deferToThread(run)
        self.assertEqual([m.WhichOneof("response") for m in rest], ["done"])
        self.assertEqual((yield self.sh("d2", "cat /tmp/one /tmp/two")), "1\n2\n")

    @inlineCallbacks
    def test_call_cancelled_pipe_held(self) -> Any:
        """
        A client that cancels its call while it still holds the pipe, half
        written: the helper ends, the staging directory goes.
        """
        yield self.running("d3")
        before = yield self.listing("d3")
        copier = self.daemon.engine.containers.copier

        def start() -> Any:
            stream, fd, _ = self.open_copy_to("d3")
            os.write(fd, _tar({"big": os.urandom(2 << 20)})[: 1 << 20])
            return stream, fd

        stream, fd = yield deferToThread(start)
        try:
            yield self.wait_for(lambda: copier.running)
            stream.cancel()
            yield self.wait_for(lambda: not copier.running)
        finally:
            os.close(fd)
        yield self.check_unchanged("d3", before)

    @inlineCallbacks
    def test_ticket_once(self) -> Any:
        """A ticket redeemed twice: the second is refused, the copy goes on."""
        yield self.running("d4")

        def run() -> Any:
            stream, fd, ticket = self.open_copy_to("d4")
            try:
                with self.assertRaises(DirectError) as refused:
                    redeem_fd(ticket.direct_socket, ticket.ticket)
                with self.assertRaises(DirectError):
                    redeem_fd(ticket.direct_socket, "0" * 64)
                os.write(fd, _tar({"once": b"ok"}))
            finally:
                os.close(fd)
            list(stream)
            return str(refused.exception)

        refused = yield deferToThread(run)
        self.assertIn("unknown, used or expired ticket", refused)
        self.assertEqual((yield self.sh("d4", "cat /tmp/once")), "ok")

    @inlineCallbacks
    def test_ticket_never_redeemed(self) -> Any:
        """
        A ticket nobody redeems expires: the copy fails (nothing came),
        nothing changed, no helper left.
        """
        self.patch(direct_module, "TICKET_TTL", 0.5)
        yield self.running("d5")
        before = yield self.listing("d5")

        def run() -> Any:
            stream = self.copy_to("d5")
            next(stream)
            try:
                list(stream)
            except grpc.RpcError as e:
                return e
            return None

        error = yield deferToThread(run)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        yield self.check_unchanged("d5", before)

    @inlineCallbacks
    def test_copy_from_reader_gone(self) -> Any:
        """
        CopyFrom on a direct channel: the tar on the pipe; a reader that
        closes it after the first chunk and cancels ends the helper.
        """
        yield self.running("d6")
        yield self.sh("d6", "head -c 40000000 /dev/zero > /tmp/big")
        copier = self.daemon.engine.containers.copier

        def run() -> Any:
            stream = self.api.containers.CopyFrom(
                container_pb2.CopyFromRequest(container_id="d6", path="/tmp/big", direct=True), timeout=30)
            stat_message, ticket = next(stream), next(stream)
            fd = redeem_fd(ticket.ticket.direct_socket, ticket.ticket.ticket)
            try:
                head = os.read(fd, 512)
            finally:
                os.close(fd)
            stream.cancel()
            return stat_message.stat.size, ticket.WhichOneof("response"), tarfile.TarInfo.frombuf(
                head, "utf-8", "surrogateescape").name

        size, kind, name = yield deferToThread(run)
        self.assertEqual((size, kind, name), (40_000_000, "ticket", "big"))
        yield self.wait_for(lambda: not copier.running)
