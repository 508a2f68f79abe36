"""
Tests for L{ross.protocols.attach}: docker's detach-key syntax and finding
the sequence in input that arrives in pieces.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.errors import InvalidArgument
from ross.protocols.attach import DetachScanner, parse_detach_keys


class DetachKeysTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_detach_keys(""), b"\x10\x11")
        self.assertEqual(parse_detach_keys("ctrl-a,x"), b"\x01x")
        self.assertEqual(parse_detach_keys("ctrl-@,ctrl-[,ctrl-_"), b"\x00\x1b\x1f")
        self.assertEqual(parse_detach_keys("none"), b"")
        for bad in ("ctrl-", "ctrl-1", "alt-x", "ab", "ctrl-pp"):
            e = self.assertRaises(InvalidArgument, parse_detach_keys, bad)
            self.assertEqual(str(e), f"Invalid detach keys ({bad}) provided")

    def test_whole_sequence(self) -> None:
        scanner = DetachScanner(b"\x10\x11")
        self.assertEqual(scanner.feed(b"ls\r"), (b"ls\r", False))
        self.assertEqual(scanner.feed(b"abc\x10\x11rest"), (b"abc", True))

    def test_sequence_split_across_reads(self) -> None:
        """
        A prefix of the sequence is held back until the next read decides.
        """
        scanner = DetachScanner(b"\x10\x11")
        self.assertEqual(scanner.feed(b"ab\x10"), (b"ab", False))
        self.assertEqual(scanner.feed(b"\x11"), (b"", True))
        scanner = DetachScanner(b"\x10\x11")
        self.assertEqual(scanner.feed(b"\x10"), (b"", False))
        self.assertEqual(scanner.feed(b"x"), (b"\x10x", False))
        self.assertEqual(scanner.feed(b"\x10"), (b"", False))
        self.assertEqual(scanner.flush(), b"\x10")

    def test_disabled(self) -> None:
        scanner = DetachScanner(b"")
        self.assertEqual(scanner.feed(b"\x10\x11"), (b"\x10\x11", False))
