# -*- test-case-name: ross.test.test_snapshot_filters -*-
"""
containerd-style snapshot filters (pure logic).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.snapshots.filters import apply_filters
from ross.engine.snapshots.records import IN_USE_LABEL, Kind, SnapshotInfo
from ross.errors import InvalidArgument

INFOS = [
    SnapshotInfo("base", "", Kind.COMMITTED, {"layer": "1"}),
    SnapshotInfo("web-1", "base", Kind.ACTIVE, {IN_USE_LABEL: "c1", "a,b": "x=y"}),
    SnapshotInfo("web-2", "base", Kind.ACTIVE, {}),
    SnapshotInfo("peek", "base", Kind.VIEW, {}),
]


def names(*filters: str) -> list[str]:
    return [i.name for i in apply_filters(INFOS, filters)]


class FilterTests(SynchronousTestCase):
    def test_fields(self) -> None:
        """
        kind, parent, name and labels compare with ==, != and ~=.
        """
        self.assertEqual(names("kind==committed"), ["base"])
        self.assertEqual(names("kind!=active"), ["base", "peek"])
        self.assertEqual(names("parent==base"), ["web-1", "web-2", "peek"])
        self.assertEqual(names("name~=^web-[0-9]$"), ["web-1", "web-2"])
        self.assertEqual(names("labels.layer==1"), ["base"])

    def test_presence_and_quotes(self) -> None:
        """
        A bare field tests presence; quoted keys and values may hold dots,
        commas and operators.
        """
        self.assertEqual(names(f'labels."{IN_USE_LABEL}"'), ["web-1"])
        self.assertEqual(names('labels."a,b"=="x=y"'), ["web-1"])
        self.assertEqual(names("parent"), ["web-1", "web-2", "peek"])

    def test_all_must_match(self) -> None:
        """
        Terms joined by commas and separate filters must all match.
        """
        self.assertEqual(names("kind==active,name~=2"), ["web-2"])
        self.assertEqual(names("kind==active", "name~=1"), ["web-1"])
        self.assertEqual(names(), ["base", "web-1", "web-2", "peek"])

    def test_bad_filters(self) -> None:
        """
        Unknown fields, bad kinds, bad regular expressions, empty terms and
        unbalanced quotes are InvalidArgument naming the filter.
        """
        for bad, message in (
            ("size==3", "unknown field 'size'"),
            ("kind==big", "kind is one of"),
            ("name~=(", "bad regular expression"),
            ("kind==active,", "empty term"),
            ('labels."a==b', "unbalanced quotes"),
            ("labels.==x", "empty label key"),
        ):
            e = self.assertRaises(InvalidArgument, names, bad)
            self.assertIn(message, str(e))
            self.assertIn(repr(bad), str(e))
