# -*- test-case-name: ross.test.integration.test_layers -*-
"""
Layer extraction and diff, for real: hand-made tarballs (malicious ones
included) applied as root, whiteouts checked through real overlay mounts,
and the round trip extract(diff(s)) == s.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any, Generator, Iterable

import zstandard
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from ross.engine.layers import apply_layer
from ross.errors import InvalidArgument
from ross.test.integration.test_overlay_snapshotter import _snapshotter
from ross.test.snapshotter_suite import SnapshotterFixture
from ross.testing.busybox import build_rootfs


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.mtime = fields.pop("mtime", 1_600_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(members: Iterable[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def tree(root: str, xattrs: bool = True) -> dict[str, tuple[Any, ...]]:
    """
    Everything under C{root} that a layer carries: type and mode, owner,
    content or link target or device, and the xattrs that matter.
    """
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    what: Any = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = st.st_rdev
            else:
                what = None
            attrs: tuple[Any, ...] = ()
            if xattrs and not stat.S_ISLNK(st.st_mode):
                attrs = tuple(sorted((n, os.getxattr(path, n)) for n in os.listxattr(path) if not n.startswith("trusted.overlay.")))
            result[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, what, attrs)
    return result


class MaliciousLayerTests(TestCase):
    """
    Layers that try to write outside their root are neutralised: nothing
    outside the target changes, whatever the entry does.
    """

    def setUp(self) -> None:
        self.sandbox = Path(self.mktemp()).absolute()
        self.root = self.sandbox / "root"
        self.outside = self.sandbox / "outside"
        self.root.mkdir(parents=True)
        self.outside.mkdir()
        (self.outside / "victim").write_bytes(b"safe")
        (self.outside / "dir").mkdir()
        self.before = tree(str(self.outside))

    def apply(self, members: list[tuple[tarfile.TarInfo, bytes]]) -> Any:
        return apply_layer(io.BytesIO(make_tar(members)), self.root)

    def assertOutsideUnchanged(self) -> None:
        self.assertEqual(tree(str(self.outside)), self.before)
        self.assertEqual(os.lstat(self.outside / "victim").st_nlink, 1)
        self.assertEqual(sorted(os.listdir(self.sandbox)), ["outside", "root"])

    def test_absolute_path(self) -> None:
        """
        An absolute name is taken relative to the root.
        """
        self.apply([member(f"{self.outside}/victim", data=b"pwned")])
        self.assertOutsideUnchanged()
        self.assertEqual((self.root / str(self.outside).lstrip("/") / "victim").read_bytes(), b"pwned")

    def test_dotdot_components(self) -> None:
        """
        C{..} components cannot climb above the root.
        """
        self.apply([
            member("../outside/victim", data=b"pwned"),
            member("a/../../../outside/new", data=b"pwned"),
        ])
        self.assertOutsideUnchanged()
        self.assertEqual((self.root / "outside" / "victim").read_bytes(), b"pwned")
        self.assertEqual((self.root / "outside" / "new").read_bytes(), b"pwned")

    def test_relative_symlink_parent(self) -> None:
        """
        A symlink pointing up and out is followed only within the root.
        """
        self.apply([
            member("evil", tarfile.SYMTYPE, linkname="../outside"),
            member("evil/victim", data=b"pwned"),
        ])
        self.assertOutsideUnchanged()
        self.assertEqual(os.readlink(self.root / "evil"), "../outside")
        self.assertEqual((self.root / "outside" / "victim").read_bytes(), b"pwned")

    def test_absolute_symlink_parent(self) -> None:
        """
        A symlink to an absolute host path resolves from the root.
        """
        self.apply([
            member("evil", tarfile.SYMTYPE, linkname=str(self.outside)),
            member("evil/dir/victim", data=b"pwned"),
        ])
        self.assertOutsideUnchanged()
        self.assertEqual((self.root / str(self.outside).lstrip("/") / "dir" / "victim").read_bytes(), b"pwned")

    def test_symlink_chain(self) -> None:
        """
        Chains of symlinks (one to another, then out) stay inside too.
        """
        self.apply([
            member("a", tarfile.SYMTYPE, linkname="b/../../.."),
            member("b", tarfile.SYMTYPE, linkname=str(self.sandbox)),
            member("a/outside/victim", data=b"pwned"),
        ])
        self.assertOutsideUnchanged()
        written = [os.path.join(d, f) for d, _, files in os.walk(self.root) for f in files]
        self.assertEqual(len(written), 1)
        self.assertTrue(written[0].startswith(str(self.root) + "/"))

    def test_symlink_loop(self) -> None:
        """
        A symlink loop in a parent path is refused.
        """
        with self.assertRaises(InvalidArgument):
            self.apply([
                member("x", tarfile.SYMTYPE, linkname="y"),
                member("y", tarfile.SYMTYPE, linkname="x"),
                member("x/file", data=b"pwned"),
            ])
        self.assertOutsideUnchanged()

    def test_file_over_symlink(self) -> None:
        """
        A file whose name is an existing symlink replaces the link; it is
        not written through it.
        """
        self.apply([
            member("victim", tarfile.SYMTYPE, linkname=str(self.outside / "victim")),
            member("victim", data=b"pwned"),
        ])
        self.assertOutsideUnchanged()
        self.assertEqual((self.root / "victim").read_bytes(), b"pwned")

    def test_hardlink_outside_dotdot(self) -> None:
        """
        A hard link to C{../outside/victim} is refused: the target resolves
        inside the root, where it does not exist.
        """
        for target in ("../outside/victim", f"{self.outside}/victim"):
            with self.assertRaises(InvalidArgument):
                self.apply([member("link", tarfile.LNKTYPE, linkname=target)])
            self.assertOutsideUnchanged()
            self.assertFalse(os.path.lexists(self.root / "link"))

    def test_hardlink_through_symlink(self) -> None:
        """
        A hard link whose target goes through a symlink pointing out is
        refused; the host file gains no link.
        """
        with self.assertRaises(InvalidArgument):
            self.apply([
                member("evil", tarfile.SYMTYPE, linkname=str(self.outside)),
                member("link", tarfile.LNKTYPE, linkname="evil/victim"),
            ])
        self.assertOutsideUnchanged()

    def test_hardlink_then_write(self) -> None:
        """
        Rewriting a name that is a hard link of another file replaces the
        name, not the shared inode.
        """
        self.apply([
            member("orig", data=b"original"),
            member("link", tarfile.LNKTYPE, linkname="orig"),
            member("link", data=b"new"),
        ])
        self.assertEqual((self.root / "orig").read_bytes(), b"original")
        self.assertEqual((self.root / "link").read_bytes(), b"new")

    def test_whiteout_and_opaque_through_symlink(self) -> None:
        """
        Whiteouts and opaque markers under a symlink that points out land
        inside the root.
        """
        self.apply([
            member("evil", tarfile.SYMTYPE, linkname=str(self.outside)),
            member("evil/.wh.victim"),
            member("evil/dir/.wh..wh..opq"),
            member("../.wh.victim"),
        ])
        self.assertOutsideUnchanged()
        self.assertEqual(os.listxattr(self.outside / "dir"), [])
        inner = self.root / str(self.outside).lstrip("/")
        self.assertEqual(os.lstat(inner / "victim").st_rdev, 0)
        self.assertTrue(stat.S_ISCHR(os.lstat(self.root / "victim").st_mode))

    def test_whiteout_without_a_name(self) -> None:
        """
        A whiteout naming nothing (".wh." alone, or ".wh.." for the parent)
        removes nothing and is logged as ignored.
        """
        from twisted.logger import ILogObserver, globalLogPublisher
        from zope.interface import provider

        seen: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            seen.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.apply([member("dir", tarfile.DIRTYPE), member("dir/kept"), member("dir/.wh."), member("dir/.wh..")])
        self.assertOutsideUnchanged()
        self.assertEqual(sorted(os.listdir(self.root / "dir")), ["kept"])
        ignored = [e for e in seen if "ignoring layer whiteout" in e.get("log_format", "")]
        self.assertEqual(sorted(e["name"] for e in ignored), ["dir/.wh.", "dir/.wh.."])
        self.assertEqual({e["log_namespace"] for e in ignored}, {"ross.engine.layers.apply"})

    def test_overlay_xattrs_dropped(self) -> None:
        """
        An archive cannot set overlay's own trusted.overlay.* xattrs.
        """
        info, data = member("d", tarfile.DIRTYPE)
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/outside", "SCHILY.xattr.user.ok": "1"}
        self.apply([(info, data)])
        self.assertEqual(os.listxattr(self.root / "d"), ["user.ok"])


class ApplyTests(TestCase):
    """
    What a layer carries arrives: formats, metadata, links, devices, times.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()

    def rich_tar(self) -> bytes:
        cap = member("bin/ping", data=b"\x7fELF", mode=0o4755, uid=0, gid=0)
        cap[0].pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12}
        return make_tar([
            member("bin", tarfile.DIRTYPE, mtime=1_500_000_000),
            cap,
            member("home/user/notes", data=b"hi", uid=1000, gid=1001, mode=0o600),
            member("home/user/hard", tarfile.LNKTYPE, linkname="home/user/notes"),
            member("bin/sh", tarfile.SYMTYPE, linkname="busybox"),
            member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            member("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
            member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
            member("tmp", tarfile.DIRTYPE, mode=0o1777),
        ])

    def test_formats_detected(self) -> None:
        """
        Plain, gzip and zstd forms of one tar give the same diff ID (the
        tar's sha256) and the same tree, whatever the compression.
        """
        raw = self.rich_tar()
        trees = []
        for blob, compression in (
            (raw, "none"),
            (gzip.compress(raw), "gzip"),
            (zstandard.ZstdCompressor().compress(raw), "zstd"),
        ):
            root = self.root / compression
            root.mkdir()
            result = apply_layer(io.BytesIO(blob), root)
            self.assertEqual(result.compression, compression)
            self.assertEqual(result.diff_id, "sha256:" + hashlib.sha256(raw).hexdigest())
            self.assertEqual(result.size, len(raw))
            trees.append(tree(str(root)))
        self.assertEqual(trees[0], trees[1])
        self.assertEqual(trees[0], trees[2])

    def test_metadata(self) -> None:
        """
        Owners, modes with setuid and sticky bits, capabilities xattrs, hard
        links, symlinks, device nodes, fifos and times are restored; a
        directory's mtime is the archive's although files were made in it.
        """
        apply_layer(io.BytesIO(self.rich_tar()), self.root)
        ping = os.lstat(self.root / "bin/ping")
        self.assertEqual(stat.S_IMODE(ping.st_mode), 0o4755)
        self.assertEqual(os.getxattr(self.root / "bin/ping", "security.capability")[:4], b"\x01\x00\x00\x02")
        notes = os.lstat(self.root / "home/user/notes")
        self.assertEqual((notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode), notes.st_nlink), (1000, 1001, 0o600, 2))
        self.assertEqual(os.lstat(self.root / "home/user/hard").st_ino, notes.st_ino)
        self.assertEqual(os.readlink(self.root / "bin/sh"), "busybox")
        null = os.lstat(self.root / "dev/null")
        self.assertTrue(stat.S_ISCHR(null.st_mode))
        self.assertEqual((os.major(null.st_rdev), os.minor(null.st_rdev)), (1, 3))
        self.assertTrue(stat.S_ISBLK(os.lstat(self.root / "dev/loop0").st_mode))
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.root / "run/fifo").st_mode))
        self.assertEqual(stat.S_IMODE(os.lstat(self.root / "tmp").st_mode), 0o1777)
        self.assertEqual(os.lstat(self.root / "bin").st_mtime, 1_500_000_000)
        self.assertEqual(notes.st_mtime, 1_600_000_000)

    def test_implied_directories_under_umask(self) -> None:
        """
        Directories a layer implies without listing them are 0755 under the
        daemon's umask (077) too, as is one made again over its own
        whiteout: image content keeps docker's modes.
        """
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        layer = make_tar([member("opt/app/tool", data=b"x"), member("usr/.wh.lib"), member("usr/lib/libc", data=b"y")])
        apply_layer(io.BytesIO(layer), self.root)
        for path in ("opt", "opt/app", "usr", "usr/lib"):
            self.assertEqual(stat.S_IMODE(os.lstat(self.root / path).st_mode), 0o755, path)
        self.assertEqual(stat.S_IMODE(os.lstat(self.root / "opt/app/tool").st_mode), 0o644)

    def test_bad_input(self) -> None:
        """
        Empty, garbage, truncated and unsupported archives fail with
        InvalidArgument naming the problem.
        """
        raw = self.rich_tar()
        cases = {
            b"": "empty",
            b"garbage" * 200: "not a tar",
            raw[: len(raw) // 2]: "Truncated",
            raw[:700]: "Truncated",
            gzip.compress(raw)[:-20]: "Truncated gzip",
            b"BZh91AY&SY" + b"\x00" * 100: "bzip2",
            gzip.compress(b"x" * 2000): "not a tar",
            # Names the kernel refuses: a component past 255 bytes, a link
            # target past PATH_MAX, a path past it (all INTERNAL before).
            make_tar([member("x" * 300, data=b"x")]): "a name in it is too long",
            make_tar([member("l", tarfile.SYMTYPE, linkname="y" * 5000)]): "a name in it is too long",
            make_tar([member("/".join(["d" * 200] * 25) + "/f", data=b"x")]): "is too deep to unpack here",
        }
        for blob, message in cases.items():
            with self.assertRaises(InvalidArgument) as caught:
                apply_layer(io.BytesIO(blob), self.root)
            self.assertIn(message, str(caught.exception))


class OverlayLayerTests(SnapshotterFixture, TestCase):
    """
    Layers applied to overlay snapshots: whiteouts work in the merged
    view, and diff round-trips.
    """

    def make_snapshotter(self) -> Deferred[Any]:
        return _snapshotter(self)

    def blob(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    @inlineCallbacks
    def layer(self, name: str, parent: str, data: bytes) -> Generator[Any, Any, Any]:
        yield self.snapshotter.prepare(f"{name}-x", parent)
        result = yield self.snapshotter.apply_layer(f"{name}-x", self.blob(data))
        yield self.snapshotter.commit(name, f"{name}-x")
        return result

    @inlineCallbacks
    def test_whiteouts_in_merged_view(self) -> Generator[Any, Any, None]:
        """
        A whiteout hides the lower file, an opaque directory hides the lower
        directory's contents but keeps its own, and a directory deleted and
        made again in one layer shows only its new contents.
        """
        yield self.layer("l1", "", make_tar([
            member("etc/gone", data=b"x"),
            member("etc/kept", data=b"y"),
            member("opq/old", data=b"o"),
            member("again/old", data=b"o"),
        ]))
        yield self.layer("l2", "l1", make_tar([
            member("etc/.wh.gone"),
            member("opq", tarfile.DIRTYPE),
            member("opq/.wh..wh..opq"),
            member("opq/new", data=b"n"),
            member(".wh.again"),
            member("again", tarfile.DIRTYPE),
            member("again/new", data=b"n"),
        ]))
        view = self.mounted((yield self.snapshotter.view("v", "l2")))
        self.assertEqual(sorted(os.listdir(os.path.join(view, "etc"))), ["kept"])
        self.assertEqual(sorted(os.listdir(os.path.join(view, "opq"))), ["new"])
        self.assertEqual(sorted(os.listdir(os.path.join(view, "again"))), ["new"])

    @inlineCallbacks
    def test_parents_resolve_as_merged(self) -> Generator[Any, Any, None]:
        """
        Entries whose parent directories the layer does not carry resolve
        as in the mounted snapshot: a parent only a lower layer has keeps
        that layer's owner, mode and xattrs, and a lower symlink (usr-merge's
        bin -> usr/bin) is followed, not shadowed by a new directory.
        """
        etc = member("etc", tarfile.DIRTYPE, mode=0o710, uid=5, gid=6, mtime=1_400_000_000)
        etc[0].pax_headers = {"SCHILY.xattr.user.tag": "lower"}
        yield self.layer("l1", "", make_tar([
            member("usr/bin", tarfile.DIRTYPE),
            member("bin", tarfile.SYMTYPE, linkname="usr/bin"),
            etc,
            member("etc/old", data=b"o"),
            member("etc/keep", data=b"k"),
        ]))
        yield self.layer("l2", "l1", make_tar([
            member("bin/tool", data=b"t", mode=0o755),
            member("etc/.wh.old"),
        ]))
        view = Path(self.mounted((yield self.snapshotter.view("v", "l2"))))
        self.assertEqual(os.readlink(view / "bin"), "usr/bin")
        self.assertEqual((view / "usr/bin/tool").read_bytes(), b"t")
        st = os.lstat(view / "etc")
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime), (0o710, 5, 6, 1_400_000_000))
        self.assertEqual(os.getxattr(view / "etc", "user.tag"), b"lower")
        self.assertEqual(sorted(os.listdir(view / "etc")), ["keep"])

    @inlineCallbacks
    def test_lower_symlink_out_stays_inside(self) -> Generator[Any, Any, None]:
        """
        A symlink in a lower layer pointing at a host directory is followed
        within the snapshot only: nothing on the host changes.
        """
        outside = Path(self.mktemp()).absolute()
        outside.mkdir()
        yield self.layer("l1", "", make_tar([member("evil", tarfile.SYMTYPE, linkname=str(outside))]))
        yield self.layer("l2", "l1", make_tar([member("evil/pwned", data=b"x"), member("evil/.wh..wh..opq")]))
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(os.listxattr(outside), [])
        view = Path(self.mounted((yield self.snapshotter.view("v", "l2"))))
        self.assertEqual((view / str(outside).lstrip("/") / "pwned").read_bytes(), b"x")

    @inlineCallbacks
    def test_round_trip(self) -> Generator[Any, Any, None]:
        """
        extract(diff(s)) on s's parent equals s: changes made through an
        overlay mount (new, changed, deleted files, a replaced directory,
        setuid, owners, xattrs, hard links, symlinks, devices, fifos) come
        back identical; the diff is deterministic.
        """
        rootfs = Path(self.mktemp()).absolute()
        build_rootfs(rootfs)
        base = io.BytesIO()
        with tarfile.open(fileobj=base, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(rootfs, arcname=".")
        yield self.layer("base", "", base.getvalue())

        target = self.mounted((yield self.snapshotter.prepare("work", "base")), "work")
        t = Path(target)
        (t / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        os.unlink(t / "bin/ls")
        os.rmdir(t / "var/www")
        (t / "srv/data").mkdir(parents=True)
        (t / "srv/data/big").write_bytes(os.urandom(300_000))
        os.link(t / "srv/data/big", t / "srv/data/big2")
        os.chown(t / "srv/data", 1000, 1000)
        os.chmod(t / "srv/data/big", 0o4750)
        os.setxattr(t / "srv/data/big", "user.origin", b"\xffbinary")
        os.symlink("/srv/data/big", t / "srv/link")
        os.mknod(t / "srv/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
        os.mkfifo(t / "srv/fifo")
        # Replace a lower directory by a new one: overlay makes it opaque.
        for name in os.listdir(t / "sbin"):
            os.unlink(t / "sbin" / name)
        os.rmdir(t / "sbin")
        (t / "sbin").mkdir()
        (t / "sbin/init").write_bytes(b"#!/bin/sh\n")
        self._unmount(target)

        first, second = io.BytesIO(), io.BytesIO()
        diff = yield self.snapshotter.diff("work", first, "gzip")
        again = yield self.snapshotter.diff("work", second, "gzip")
        self.assertEqual(first.getvalue(), second.getvalue())
        self.assertEqual((diff.size, diff.diff_id), (len(first.getvalue()), again.diff_id))
        self.assertEqual(diff.diff_id, "sha256:" + hashlib.sha256(gzip.decompress(first.getvalue())).hexdigest())
        names = tarfile.open(fileobj=io.BytesIO(first.getvalue())).getnames()
        self.assertIn("bin/.wh.ls", names)
        self.assertIn("sbin/.wh..wh..opq", names)

        applied = yield self.layer("copy", "base", first.getvalue())
        self.assertEqual(applied.diff_id, diff.diff_id)
        yield self.snapshotter.commit("orig", "work")
        original = tree(self.mounted((yield self.snapshotter.view("v-orig", "orig")), "v-orig"))
        copied = tree(self.mounted((yield self.snapshotter.view("v-copy", "copy")), "v-copy"))
        self.assertEqual(copied, original)
        self.assertNotIn("bin/ls", copied)
        self.assertEqual([n for n in copied if n.startswith("sbin/")], ["sbin/init"])

    @inlineCallbacks
    def test_failed_extract_leaves_snapshot_empty(self) -> Generator[Any, Any, None]:
        """
        A layer that breaks half-way leaves the (empty) snapshot as it was.
        """
        yield self.snapshotter.prepare("x")
        raw = make_tar([member("a", data=b"1" * 5000), member("b", data=b"2" * 5000)])
        yield self.assertFailure(self.snapshotter.apply_layer("x", self.blob(raw[:7000])), InvalidArgument)
        fs = self.snapshotter.fs_path(1)
        self.assertEqual(os.listdir(fs), [])
