"""
Tests for the API's transport security: socket permissions, refusing an
unprotected TCP listener, TLS, mutual TLS and bearer tokens.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import TestCase

from ross.address import Listener, parse_listen
from ross.errors import InvalidArgument
from ross.services.grpc_server import TLSFiles
from ross.tap import Options
from ross.testing import certs
from ross.testing.daemon import InProcessDaemon, run_cli, short_tempdir
from ross.v1 import system_pb2


class AddressTests(TestCase):
    def test_parse(self) -> None:
        """
        unix and tcp addresses parse; bare paths are unix sockets.
        """
        self.assertEqual(parse_listen("unix:///run/ross/ross.sock"), Listener("unix", path="/run/ross/ross.sock"))
        self.assertEqual(parse_listen("/tmp/x.sock"), Listener("unix", path="/tmp/x.sock"))
        self.assertEqual(parse_listen("tcp://0.0.0.0:2376"), Listener("tcp", host="0.0.0.0", port=2376))
        self.assertEqual(parse_listen("tcp://[::1]:2376").grpc_address, "[::1]:2376")

    def test_unix_as_urlsplit(self) -> None:
        """
        unix addresses parse (without urllib) as urlsplit reads them: a
        space is part of the path, a query or fragment is not, the scheme's
        case does not matter.
        """
        for given, path in [("unix:///a b/c.sock", "/a b/c.sock"), ("unix:///r/x.sock?v=1", "/r/x.sock"),
                            ("unix:///r/x.sock#f", "/r/x.sock"), ("UNIX:///r/x.sock", "/r/x.sock"),
                            ("unix:////double", "//double")]:
            self.assertEqual(parse_listen(given), Listener("unix", path=path), given)
        for bad in ("unix://", "unix:relative"):
            self.assertRaises(InvalidArgument, parse_listen, bad)

    def test_invalid(self) -> None:
        """
        Malformed addresses are refused with a message naming them.
        """
        for bad in ("http://x:1", "tcp://host", "unix://relative/path", "tcp://:80", "tcp://h:notaport"):
            e = self.assertRaises(InvalidArgument, parse_listen, bad)
            self.assertIn(repr(bad), str(e))

    def test_loopback(self) -> None:
        self.assertTrue(parse_listen("tcp://127.0.0.1:1").is_loopback)
        self.assertTrue(parse_listen("tcp://localhost:1").is_loopback)
        self.assertTrue(parse_listen("tcp://[::1]:1").is_loopback)
        self.assertFalse(parse_listen("tcp://0.0.0.0:1").is_loopback)
        self.assertFalse(parse_listen("tcp://10.1.2.3:1").is_loopback)


class OptionsTests(TestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_non_loopback_tcp_without_tls_refused(self) -> None:
        """
        A TCP listener anyone on the network could reach is refused without
        TLS.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--listen", "tcp://0.0.0.0:2376")
        self.assertIn("refusing to listen on tcp://0.0.0.0:2376 without TLS", str(e))

    def test_loopback_tcp_allowed(self) -> None:
        options = self.parse("--listen", "tcp://127.0.0.1:2376")
        self.assertEqual([str(x) for x in options["listeners"]], ["tcp://127.0.0.1:2376"])

    def test_non_loopback_with_tls(self) -> None:
        """
        With a certificate and key the same listener is accepted.
        """
        d = short_tempdir()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        ca = certs.authority()
        cert, key = ca.issue("server", server=True).write(d, "server")
        options = self.parse("--listen", "tcp://0.0.0.0:2376", "--tls-cert", cert, "--tls-key", key)
        self.assertIsNotNone(options["tls"])

    def test_default_listen_and_repeat(self) -> None:
        self.assertEqual([str(x) for x in self.parse()["listeners"]], ["unix:///run/ross/ross.sock"])
        options = self.parse("--listen", "unix:///tmp/a.sock", "--listen", "tcp://127.0.0.1:1")
        self.assertEqual(len(options["listeners"]), 2)

    def test_bad_options(self) -> None:
        """
        Half a TLS configuration, unreadable files, bad levels, empty token
        files, and a token or key other users can read are usage errors.
        """
        d = short_tempdir()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        empty = d / "token"
        empty.write_text("\n")
        empty.chmod(0o600)
        readable = d / "readable-token"
        readable.write_text("s3cret\n")
        readable.chmod(0o640)
        cert, key = certs.authority().issue("server", server=True).write(d, "server")
        os.chmod(key, 0o644)
        for argv, message in [
            (["--auth-token-file", str(readable)], f"--auth-token-file {readable} is open to other users (mode 0640)"),
            (["--tls-cert", cert, "--tls-key", key], f"--tls-key {key} is open to other users (mode 0644)"),
            (["--tls-cert", "/nonexistent"], "--tls-cert and --tls-key go together"),
            (["--tls-cert", "/nonexistent", "--tls-key", "/nonexistent"], "cannot read --tls-cert /nonexistent"),
            (["--tls-ca", "/x"], "--tls-ca needs --tls-cert"),
            (["--log-level", "loud"], "invalid --log-level"),
            (["--auth-token-file", str(empty)], "is empty"),
            (["--listen", "ftp://x"], "invalid address"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(e))


def ping(channel: grpc.Channel, metadata: Any = None) -> str:
    from ross.v1 import system_pb2_grpc

    return system_pb2_grpc.SystemServiceStub(channel).Ping(
        system_pb2.PingRequest(), timeout=5, metadata=metadata).api_version


class UnixSocketTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_permissions(self) -> Any:
        """
        The socket's directory is 0700 and the socket 0660: root-only.
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        self.assertEqual(stat.S_IMODE(os.stat(daemon.exec_root).st_mode), 0o700)
        mode = os.stat(daemon.socket).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o660)


class TLSTests(TestCase):
    """
    A daemon on tcp://127.0.0.1 with TLS, and clients with good and bad
    credentials.
    """

    timeout = 60

    @inlineCallbacks
    def serve(self, mutual: bool, token: str | None = None) -> Any:
        self.ca = certs.authority()
        server = self.ca.issue("ross-daemon", server=True)
        tls = TLSFiles(cert=server.cert, key=server.key, ca=self.ca.pem if mutual else None)
        self.daemon = InProcessDaemon(
            self, listeners=[parse_listen("tcp://127.0.0.1:0")], tls=tls, token=token)
        yield self.daemon.start()
        api = self.daemon.daemon.api
        self.address = api.address_of(api.listeners[0])

    def channel(self, root: bytes | None, client: certs.Pair | None = None) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=client.key if client else None,
            certificate_chain=client.cert if client else None,
        )
        channel = grpc.secure_channel(parse_listen(self.address).grpc_address, credentials)
        self.addCleanup(channel.close)
        return channel

    @inlineCallbacks
    def assertRefused(self, channel: grpc.Channel, metadata: Any = None) -> Any:
        e = yield self.assertFailure(self.daemon.call(ping, channel, metadata), grpc.RpcError)
        return e

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        A client that trusts the CA talks to the daemon; one that does not,
        cannot.
        """
        yield self.serve(mutual=False)
        self.assertEqual((yield self.daemon.call(ping, self.channel(self.ca.pem))), "v1")
        other = certs.authority("Somebody Else")
        e = yield self.assertRefused(self.channel(other.pem))
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)

    @inlineCallbacks
    def test_mutual_tls(self) -> Any:
        """
        With a CA configured, only clients with a valid certificate from it
        get through: none, one from another CA and an expired one are
        refused at the handshake.
        """
        yield self.serve(mutual=True)
        good = self.ca.issue("alice")
        self.assertEqual((yield self.daemon.call(ping, self.channel(self.ca.pem, good))), "v1")
        for client in (None, certs.authority("Mallory CA").issue("mallory"), self.ca.issue("old", expired=True)):
            e = yield self.assertRefused(self.channel(self.ca.pem, client))
            self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)

    @inlineCallbacks
    def test_expired_server_certificate(self) -> Any:
        """
        A client refuses a daemon whose certificate expired.
        """
        self.ca = certs.authority()
        server = self.ca.issue("ross-daemon", server=True, expired=True)
        self.daemon = InProcessDaemon(
            self, listeners=[parse_listen("tcp://127.0.0.1:0")], tls=TLSFiles(cert=server.cert, key=server.key))
        yield self.daemon.start()
        api = self.daemon.daemon.api
        self.address = api.address_of(api.listeners[0])
        e = yield self.assertRefused(self.channel(self.ca.pem))
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)

    @inlineCallbacks
    def test_cli_over_tls_with_token(self) -> Any:
        """
        ``ross version`` and ``ross info`` work over mutual TLS with a token,
        taking their settings from flags and from the environment.
        """
        yield self.serve(mutual=True, token="s3cret")
        d = short_tempdir()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        ca = d / "ca.pem"
        ca.write_bytes(self.ca.pem)
        cert, key = self.ca.issue("cli").write(d, "cli")
        env = {"ROSS_TLS_CA": str(ca), "ROSS_TLS_CERT": cert, "ROSS_TLS_KEY": key, "ROSS_TOKEN": "s3cret"}
        result = yield self.daemon.call(run_cli, self.address, "info", env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Storage Driver: overlayfs", result.stdout)
        result = yield self.daemon.call(
            run_cli, self.address, "--tls-ca", str(ca), "--tls-cert", cert, "--tls-key", key,
            "--token", "s3cret", "version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Server: Ross Engine", result.stdout)
        result = yield self.daemon.call(run_cli, self.address, "version", env=dict(env, ROSS_TOKEN="wrong"))
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"refused the credentials", result.stderr)


class TokenTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_every_call_needs_the_token(self) -> Any:
        """
        Without the bearer token, or with a wrong one, unary calls and
        streams alike get UNAUTHENTICATED; with it they work.
        """
        daemon = InProcessDaemon(self, token="tok-123")
        yield daemon.start()
        c = daemon.clients()
        for metadata in (None, [("authorization", "Bearer nope")], [("authorization", "tok-123")]):
            e = yield self.assertFailure(daemon.call(ping, c.channel, metadata), grpc.RpcError)
            self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
            e = yield self.assertFailure(
                daemon.call(lambda: next(c.system.Events(system_pb2.EventsRequest(), metadata=metadata))),
                grpc.RpcError)
            self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
        good = [("authorization", "Bearer tok-123")]
        self.assertEqual((yield daemon.call(ping, c.channel, good)), "v1")
        since = system_pb2.EventsRequest()
        since.since.FromSeconds(1)
        event = yield daemon.call(lambda: next(c.system.Events(since, metadata=good)))
        self.assertEqual((event.type, event.action), ("daemon", "start"))
