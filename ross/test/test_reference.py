# -*- test-case-name: ross.test.test_reference -*-
"""
References parse like docker's (github.com/distribution/reference): the
cases below come from its normalize and reference tests.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.errors import InvalidArgument
from ross.reference import is_id_prefix, is_image_id, parse_normalized, parse_tag

HEX = "a" * 64

# input -> (full string, familiar string)
VALID = [
    ("busybox", "docker.io/library/busybox", "busybox"),
    ("busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox", "busybox"),
    ("index.docker.io/busybox", "docker.io/library/busybox", "busybox"),
    ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox", "busybox"),
    ("library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar"),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp", "dmcgowan/myapp"),
    ("dmcgowan/myapp/sub", "docker.io/dmcgowan/myapp/sub", "dmcgowan/myapp/sub"),
    ("localhost/foo", "localhost/foo", "localhost/foo"),
    ("localhost:5000/foo/bar:tag", "localhost:5000/foo/bar:tag", "localhost:5000/foo/bar:tag"),
    ("example.com/foo", "example.com/foo", "example.com/foo"),
    ("Example.com/foo", "Example.com/foo", "Example.com/foo"),
    ("EXAMPLE/foo", "EXAMPLE/foo", "EXAMPLE/foo"),
    ("127.0.0.1:5000/foo:v1.0", "127.0.0.1:5000/foo:v1.0", "127.0.0.1:5000/foo:v1.0"),
    ("[::1]:5000/foo", "[::1]:5000/foo", "[::1]:5000/foo"),
    ("foo-bar.com:8080/x", "foo-bar.com:8080/x", "foo-bar.com:8080/x"),
    ("a__b/c--d/e.f", "docker.io/a__b/c--d/e.f", "a__b/c--d/e.f"),
    ("busybox@sha256:" + HEX, "docker.io/library/busybox@sha256:" + HEX, "busybox@sha256:" + HEX),
    ("busybox:1@sha256:" + HEX, "docker.io/library/busybox:1@sha256:" + HEX, "busybox:1@sha256:" + HEX),
    ("foo:" + "t" * 128, "docker.io/library/foo:" + "t" * 128, "foo:" + "t" * 128),
    ("foo:_under.score-", "docker.io/library/foo:_under.score-", "foo:_under.score-"),
]

# input -> docker's error message
INVALID = [
    ("", "invalid reference format"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("docker.io/Foo/bar", "invalid reference format: repository name (Foo/bar) must be lowercase"),
    ("localhost:5000/Foo", "invalid reference format: repository name (Foo) must be lowercase"),
    (HEX, f"invalid repository name ({HEX}), cannot specify 64-byte hexadecimal strings"),
    ("foo:", "invalid reference format"),
    (":tag", "invalid reference format"),
    ("foo::bar", "invalid reference format"),
    ("foo bar", "invalid reference format"),
    ("-foo", "invalid reference format"),
    ("foo-/bar", "invalid reference format"),
    ("foo/", "invalid reference format"),
    ("foo//bar", "invalid reference format"),
    ("foo:-tag", "invalid reference format"),
    ("foo:" + "t" * 129, "invalid reference format"),
    ("foo@sha256:abc", "invalid reference format"),
    ("foo@sha256:" + "A" * 64, "invalid checksum digest format"),
    ("foo@sha512:" + "a" * 128, "unsupported digest algorithm"),
    ("foo@sha256:" + "a" * 65, "invalid checksum digest length"),
    ("a" * 256, "repository name must not be more than 255 characters"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("[fe80::1%eth0]:5000/foo", "invalid reference format"),
]


class ParseNormalizedTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        Each valid input normalises and familiarises as docker does.
        """
        for text, full, familiar in VALID:
            ref = parse_normalized(text)
            self.assertEqual((str(ref), ref.familiar()), (full, familiar), text)

    def test_invalid(self) -> None:
        """
        Each invalid input fails with InvalidArgument and docker's message.
        """
        for text, message in INVALID:
            e = self.assertRaises(InvalidArgument, parse_normalized, text)
            self.assertEqual(str(e), message, repr(text))

    def test_default_tag(self) -> None:
        """
        A bare name gets ":latest"; a digest reference does not.
        """
        self.assertEqual(str(parse_normalized("busybox").with_default_tag()), "docker.io/library/busybox:latest")
        digested = parse_normalized("busybox@sha256:" + HEX)
        self.assertEqual(digested.with_default_tag(), digested)

    def test_parts(self) -> None:
        """
        Domain, path, tag and digest come apart as docker's accessors say.
        """
        ref = parse_normalized("localhost:5000/a/b:c@sha256:" + HEX)
        self.assertEqual((ref.domain, ref.path, ref.tag, ref.digest), ("localhost:5000", "a/b", "c", "sha256:" + HEX))
        self.assertEqual(ref.familiar_name, "localhost:5000/a/b")


class TagTests(SynchronousTestCase):
    def test_tag_refuses_digest(self) -> None:
        """
        A tag target cannot carry a digest, as docker says.
        """
        e = self.assertRaises(InvalidArgument, parse_tag, "busybox@sha256:" + HEX)
        self.assertEqual(str(e), "refusing to create a tag with a digest reference")

    def test_tag_defaults_latest(self) -> None:
        self.assertEqual(str(parse_tag("foo/bar")), "docker.io/foo/bar:latest")


class IdentifierTests(SynchronousTestCase):
    def test_ids(self) -> None:
        """
        Full IDs with or without "sha256:", and hex prefixes, are told apart
        from names.
        """
        self.assertTrue(is_image_id(HEX))
        self.assertTrue(is_image_id("sha256:" + HEX))
        self.assertFalse(is_image_id("sha256:abc"))
        self.assertTrue(is_id_prefix("abc123"))
        self.assertTrue(is_id_prefix("sha256:abc"))
        self.assertFalse(is_id_prefix("busybox"))
