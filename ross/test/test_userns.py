"""
Tests for the daemon's side of user namespaces
(L{ross.engine.runtime.userns}): subordinate id files, maps, and the
C{--userns-remap} setting. Pure logic: no root needed.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.records import Mount
from ross.engine.runtime import spec as rs
from ross.engine.runtime.userns import (
    IdRange, RemapError, check_map, free_range, host_id, id_map, map_text, parse_subordinate, resolve_remap,
)
from ross.errors import InvalidArgument


class SubordinateFileTests(SynchronousTestCase):
    def test_docker_format(self) -> None:
        """
        OWNER:START:COUNT lines, owners by name or number; comments and
        blank lines skipped.
        """
        text = "# ranges\n\ndockremap:165536:65536\n1000:231072:65536\n  alice:100000:10  \n"
        self.assertEqual(parse_subordinate(text, "/etc/subuid"),
                         [("dockremap", 165536, 65536), ("1000", 231072, 65536), ("alice", 100000, 10)])

    def test_malformed_line(self) -> None:
        """
        A malformed line is an error naming the file and the line.
        """
        for bad in ("alice:100000", "alice:x:10", ":1:2", "alice:1:2:3", "alice:-1:5"):
            e = self.assertRaises(RemapError, parse_subordinate, f"ok:1:2\n{bad}\n", "/etc/subuid")
            self.assertIn("/etc/subuid, line 2", str(e))

    def test_ranges_map_from_zero(self) -> None:
        """
        Several ranges of one owner map container ids from 0, lowest host
        range first, one after the other (docker's order).
        """
        self.assertEqual(id_map([(300000, 10), (100000, 65536)]),
                         (IdRange(0, 100000, 65536), IdRange(65536, 300000, 10)))

    def test_free_range(self) -> None:
        """
        The first 65536 ids at or after 100000 no entry overlaps.
        """
        self.assertEqual(free_range([]), 100000)
        self.assertEqual(free_range([("a", 1000, 10)]), 100000)
        self.assertEqual(free_range([("a", 100000, 65536), ("b", 165536, 65536)]), 231072)
        self.assertEqual(free_range([("a", 150000, 10)]), 150010)
        self.assertEqual(free_range([("a", 400000, 65536), ("b", 100000, 65536)]), 165536)


class MapTests(SynchronousTestCase):
    def test_host_id(self) -> None:
        idmap = (IdRange(0, 100000, 1000), IdRange(1000, 500000, 10))
        self.assertEqual([host_id(idmap, i) for i in (0, 999, 1000, 1009)], [100000, 100999, 500000, 500009])
        self.assertRaises(ValueError, host_id, idmap, 1010)

    def test_map_text(self) -> None:
        self.assertEqual(map_text((IdRange(0, 100000, 65536), IdRange(65536, 7, 1))), "0 100000 65536\n65536 7 1\n")

    def test_check(self) -> None:
        """
        A map must map container root, must not map host root, and its
        ranges may not be empty or overlap.
        """
        check_map((IdRange(0, 100000, 65536),), "uid")
        for bad in ((), (IdRange(1, 100000, 10),), (IdRange(0, 0, 65536),), (IdRange(0, 100000, 0),),
                    (IdRange(0, 100000, 100), IdRange(50, 200000, 10)),
                    (IdRange(0, 100000, 100), IdRange(100, 100050, 10)),
                    (IdRange(0, 2**32 - 10, 100),)):
            self.assertRaises(ValueError, check_map, bad, "uid")

    def test_spec_validation(self) -> None:
        """
        The runtime refuses a remapped spec that is privileged, shares the
        host's network, or has an unusable map.
        """
        remap = rs.UserNamespace(uid_map=(IdRange(0, 100000, 65536),), gid_map=(IdRange(0, 100000, 65536),))
        base = rs.ContainerSpec(id="c1", rootfs=(Mount("bind", "/x", "", ("rbind",)),),
                                process=rs.Process(args=("true",)), userns=remap)
        rs.validate(base)
        for changed, message in (({"privileged": True}, "privileged mode is incompatible"),
                                 ({"network": "host"}, "cannot share the host's network"),
                                 ({"userns": rs.UserNamespace(uid_map=(IdRange(0, 0, 1),), gid_map=remap.gid_map)},
                                  "host root")):
            e = self.assertRaises(InvalidArgument, rs.validate, attrs.evolve(base, **changed))
            self.assertIn(message, str(e))

    def test_wire(self) -> None:
        """
        The maps reach the shim as lists of [container, host, size].
        """
        remap = rs.UserNamespace(uid_map=(IdRange(0, 100000, 65536),), gid_map=(IdRange(0, 200000, 10),))
        spec = rs.ContainerSpec(id="c1", rootfs=(Mount("bind", "/x", "", ("rbind",)),),
                                process=rs.Process(args=("true",)), userns=remap)
        self.assertEqual(rs.to_wire(spec)["userns"], {"uid_map": [[0, 100000, 65536]], "gid_map": [[0, 200000, 10]],
                                                      "join": ""})
        self.assertIsNone(rs.to_wire(attrs.evolve(spec, userns=None))["userns"])


class ResolveTests(SynchronousTestCase):
    """
    --userns-remap against subordinate id files of the test's own (the
    user and group "daemon", uid and gid 1, exist on every Debian system).
    """

    def files(self, subuid: str, subgid: str) -> tuple[str, str]:
        base = Path(self.mktemp())
        base.mkdir()
        (base / "subuid").write_text(subuid)
        (base / "subgid").write_text(subgid)
        return str(base / "subuid"), str(base / "subgid")

    def test_user(self) -> None:
        """
        A user name: its uid ranges, and the ranges of the group of the
        same name; entries match names or numbers.
        """
        remap = resolve_remap("daemon", *self.files("daemon:100000:65536\n", "1:300000:65536\n"))
        assert remap is not None
        self.assertEqual((remap.user, remap.group), ("daemon", "daemon"))
        self.assertEqual(remap.uid_map, (IdRange(0, 100000, 65536),))
        self.assertEqual(remap.gid_map, (IdRange(0, 300000, 65536),))

    def test_numbers_and_group(self) -> None:
        """
        USER:GROUP, both as numbers: names are looked up for the record.
        """
        remap = resolve_remap("1:1", *self.files("1:100000:65536\n", "daemon:300000:65536\n"))
        assert remap is not None
        self.assertEqual((remap.user, remap.group), ("daemon", "daemon"))

    def test_root_remaps_nothing(self) -> None:
        """
        Root maps to itself: no user namespace (docker turns it off too).
        """
        self.assertIsNone(resolve_remap("root", *self.files("", "")))
        self.assertIsNone(resolve_remap("0:0", *self.files("", "")))

    def test_errors(self) -> None:
        """
        Unknown users or groups, missing ranges and bad values are errors
        that say which.
        """
        subuid, subgid = self.files("daemon:100000:65536\nother:0:65536\n", "")
        cases = [
            ("nosuchuser-ross", "User nosuchuser-ross has no entry in /etc/passwd"),
            ("4000000000", "Uid 4000000000 has no entry in /etc/passwd"),
            ("daemon:nosuchgroup-ross", "Group nosuchgroup-ross has no entry in /etc/group"),
            ("daemon", f"no subgid ranges found for 'daemon' in {subgid}"),
            ("a:b:c", "invalid user/group specification"),
            ("daemon:", "invalid user/group specification"),
        ]
        for value, message in cases:
            e = self.assertRaises(RemapError, resolve_remap, value, subuid, subgid)
            self.assertIn(message, str(e))
        e = self.assertRaises(RemapError, resolve_remap, "bin", *self.files("bin:0:65536\n", "bin:100000:10\n"))
        self.assertIn("host root", str(e))
        e = self.assertRaises(RemapError, resolve_remap, "daemon", *self.files("", "daemon:1:1\n"))
        self.assertIn("no subuid ranges found for 'daemon'", str(e))
