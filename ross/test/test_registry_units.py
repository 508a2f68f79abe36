# -*- test-case-name: ross.test.test_registry_units -*-
"""
The pure parts of the registry client: challenges, credentials, token
cache, server addresses, upload URLs, mount sources, resumed ranges and
the CLI's progress display.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from ross.cli.registry import _Display, bar, load_config, save_config
from ross.cli.registry import decode_auth, encode_auth
from ross.reference import parse_normalized
from ross.engine.registry.auth import (
    Challenge,
    Credentials,
    Token,
    TokenCache,
    parse_challenges,
)
from ross.engine.registry.client import registry_errors
from ross.engine.registry.push import mount_sources, with_query
from ross.engine.registry.transfer import _resumes_at
from ross.errors import InvalidArgument
from ross.reference import registry_domain
from ross.v1 import common_pb2, image_pb2


class ChallengeTests(SynchronousTestCase):
    def test_bearer(self) -> None:
        """Docker Hub's challenge: realm, service and scope, quoted."""
        [c] = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                'scope="repository:samalba/my-app:pull,push"'])
        self.assertEqual(c, Challenge("bearer", {"realm": "https://auth.docker.io/token",
                                                 "service": "registry.docker.io",
                                                 "scope": "repository:samalba/my-app:pull,push"}))

    def test_basic_and_escapes(self) -> None:
        """Schemes are case-insensitive; escaped quotes are unescaped; junk is skipped."""
        parsed = parse_challenges(['basic realm="a \\"b\\" c"', "", "  "])
        self.assertEqual(parsed, [Challenge("basic", {"realm": 'a "b" c'})])
        self.assertEqual(parse_challenges(["Bearer realm=unquoted , service=x"]),
                         [Challenge("bearer", {"realm": "unquoted", "service": "x"})])


class CredentialTests(SynchronousTestCase):
    def test_repr_hides_password(self) -> None:
        """Credentials never show their password (SPEC 10)."""
        text = repr(Credentials("alice", "s3cret"))
        self.assertNotIn("s3cret", text)
        self.assertIn("alice", text)

    def test_auth_round_trip(self) -> None:
        """config.json's auth is base64 of user:password; colons in the password survive."""
        self.assertEqual(decode_auth(encode_auth("alice", "a:b")), ("alice", "a:b"))
        self.assertRaises(InvalidArgument, decode_auth, "not base64!")
        self.assertRaises(InvalidArgument, decode_auth, "bm9jb2xvbg==")
        self.assertEqual(Credentials("u", "p").basic(), "Basic dTpw")
        self.assertNotEqual(Credentials("u", "p").fingerprint(), Credentials("u", "q").fingerprint())
        self.assertTrue(Credentials().empty)

    def test_token_cache_expires(self) -> None:
        """Tokens are reused until they expire, and forgotten per registry."""
        cache = TokenCache()
        key = ("realm", "svc", "repository:a:pull", "alice", "localhost:5000")
        cache.put(key, Token("t", 100.0))
        self.assertEqual(cache.get(key, 99.0), "t")
        self.assertIsNone(cache.get(key, 100.0))
        cache.put(key, Token("t", 100.0))
        cache.forget("localhost:5000")
        self.assertIsNone(cache.get(key, 0.0))


class ConfigFileTests(SynchronousTestCase):
    """
    The CLI's config.json holds registry passwords: its owner's alone.
    """

    def setUp(self) -> None:
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir()
        os.chmod(self.home, 0o755)
        self.patch(os, "environ", dict(os.environ, ROSS_CONFIG=str(self.home / "ross")))
        # No umask to hide behind: the modes are explicit.
        old = os.umask(0)
        self.addCleanup(os.umask, old)

    def test_new_config_private(self) -> None:
        """
        A first save makes the directory 0700 and the file 0600; the
        directory above is left as it was.
        """
        save_config({"auths": {"localhost:5000": {"auth": encode_auth("alice", "s3cret")}}})
        self.assertEqual(stat.S_IMODE(os.stat(self.home / "ross").st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.home / "ross" / "config.json").st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.home).st_mode), 0o755)
        self.assertEqual(load_config()["auths"]["localhost:5000"]["auth"], encode_auth("alice", "s3cret"))

    def test_readable_config_replaced_private(self) -> None:
        """
        A config.json another tool left readable is replaced by a private
        one; a directory that exists keeps its mode.
        """
        (self.home / "ross").mkdir(mode=0o755)
        (self.home / "ross" / "config.json").write_text("{}")
        os.chmod(self.home / "ross" / "config.json", 0o644)
        save_config({"auths": {}})
        self.assertEqual(stat.S_IMODE(os.stat(self.home / "ross" / "config.json").st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.home / "ross").st_mode), 0o755)
        self.assertEqual(os.listdir(self.home / "ross"), ["config.json"])


class AddressTests(SynchronousTestCase):
    def test_registry_domain(self) -> None:
        """Login addresses as docker writes them name registries."""
        self.assertEqual(registry_domain(""), "docker.io")
        self.assertEqual(registry_domain("https://index.docker.io/v1/"), "docker.io")
        self.assertEqual(registry_domain("http://localhost:5000/v2/"), "localhost:5000")
        self.assertEqual(registry_domain("Registry.Example.com:443"), "registry.example.com:443")

    def test_with_query(self) -> None:
        """Upload locations keep their own query (the registry's state) when the digest is added."""
        self.assertEqual(with_query("http://h/v2/r/blobs/uploads/u?_state=x", digest="sha256:ab"),
                         "http://h/v2/r/blobs/uploads/u?_state=x&digest=sha256%3Aab")
        self.assertEqual(with_query("/v2/r/blobs/uploads/", mount="sha256:ab", **{"from": "o/p"}),
                         "/v2/r/blobs/uploads/?mount=sha256%3Aab&from=o%2Fp")

    def test_mount_sources(self) -> None:
        """Only other repositories of the same registry are mount sources."""
        ref = parse_normalized("localhost:5000/a:1")
        names = ["localhost:5000/a:2", "localhost:5000/b:1", "localhost:5000/b@sha256:" + "0" * 64,
                 "localhost:5001/c:1", "docker.io/library/busybox:latest"]
        self.assertEqual(mount_sources(ref, names), ["b"])

    def test_registry_errors(self) -> None:
        """Registry error bodies give (code, message); anything else none."""
        body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}'
        self.assertEqual(registry_errors(body), [("MANIFEST_UNKNOWN", "manifest unknown")])
        self.assertEqual(registry_errors(b"<html>"), [])
        self.assertEqual(registry_errors(b'{"errors": 3}'), [])


class _Response:
    def __init__(self, code: int, content_range: str | None) -> None:
        self.code = code
        self.headers = Headers({"Content-Range": [content_range]} if content_range else {})


class ResumeTests(SynchronousTestCase):
    def test_resumes_only_at_the_offset(self) -> None:
        """A resumed download continues only from a 206 starting where it stopped."""
        self.assertTrue(_resumes_at(_Response(206, "bytes 100-199/200"), 100))  # type: ignore[arg-type]
        self.assertFalse(_resumes_at(_Response(206, "bytes 0-199/200"), 100))  # type: ignore[arg-type]
        self.assertFalse(_resumes_at(_Response(200, None), 100))  # type: ignore[arg-type]
        self.assertFalse(_resumes_at(_Response(206, None), 100))  # type: ignore[arg-type]


class _Tty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def progress(status: str, id: str = "", current: int = 0, total: int = 0) -> image_pb2.PullImageProgress:
    return image_pb2.PullImageProgress(status=status, id=id,
                                       progress_detail=common_pb2.ProgressDetail(current=current, total=total))


class DisplayTests(SynchronousTestCase):
    def test_piped(self) -> None:
        """Piped, each status change is one line and transfer updates are left out."""
        out = _Tty(False)
        display = _Display(out)
        for m in [progress("latest: Pulling from x"), progress("Pulling fs layer", "abc"),
                  progress("Downloading", "abc", 5, 10), progress("Download complete", "abc")]:
            display.show(m)
        self.assertEqual(out.getvalue(), "latest: Pulling from x\nabc: Pulling fs layer\nabc: Download complete\n")

    def test_terminal(self) -> None:
        """On a terminal a layer's line is rewritten in place with a bar."""
        out = _Tty(True)
        display = _Display(out)
        display.show(progress("Pulling fs layer", "abc"))
        display.show(progress("Pulling fs layer", "def"))
        display.show(progress("Downloading", "abc", 5, 10))
        self.assertEqual(out.getvalue(), "abc: Pulling fs layer\ndef: Pulling fs layer\n"
                         f"\x1b[2A\r\x1b[2Kabc: Downloading {bar(5, 10)}\x1b[2B\r")
        self.assertTrue(bar(5, 10).startswith("[" + "=" * 24 + ">"))
