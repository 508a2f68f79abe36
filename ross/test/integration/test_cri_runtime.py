"""
The Kubernetes CRI's listener and its runtime RPCs: cri.sock beside
ross.sock (or where --cri-listen says, or nowhere), Version, Status and
RuntimeConfig, UNIMPLEMENTED for what Ross does not serve.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

import ross
from ross.cri.v1 import api_pb2, api_pb2_grpc
from ross.tap import Options
from ross.testing.cri import CRITestCase
from ross.testing.daemon import Clients, InProcessDaemon
from ross.v1 import system_pb2


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_cri_listen(self) -> None:
        """
        By default the CRI listens beside the API's socket (None: decided
        by the exec root); none turns it off; the option repeats.
        """
        self.assertIsNone(self.parse()["cri-listeners"])
        self.assertEqual(self.parse("--cri-listen", "none")["cri-listeners"], [])
        options = self.parse("--cri-listen", "unix:///tmp/a.sock", "--cri-listen", "/tmp/b.sock")
        self.assertEqual([str(x) for x in options["cri-listeners"]], ["unix:///tmp/a.sock", "unix:///tmp/b.sock"])

    def test_cri_listen_refused(self) -> None:
        """
        TCP (the CRI has no authentication), none with other addresses and
        bad addresses are usage errors.
        """
        for argv, message in [
            (["--cri-listen", "tcp://127.0.0.1:10010"], "unix sockets only"),
            (["--cri-listen", "none", "--cri-listen", "unix:///tmp/c.sock"], "give no other address"),
            (["--cri-listen", "ftp://x"], "invalid address"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(e))

    def test_registry_mirror(self) -> None:
        """
        --registry-mirror REGISTRY=HOST:PORT repeats; other forms are
        usage errors.
        """
        options = self.parse("--registry-mirror", "registry.k8s.io=localhost:5000",
                             "--registry-mirror", "docker.io=mirror:5001")
        self.assertEqual(options["registry-mirror"], [("registry.k8s.io", "localhost:5000"),
                                                      ("docker.io", "mirror:5001")])
        for bad in ("registry.k8s.io", "=localhost:5000", "a=http://b/c"):
            self.assertRaises(usage.UsageError, self.parse, "--registry-mirror", bad)


class ListenerTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_turned_off(self) -> Any:
        """
        With no CRI listener the daemon makes no cri.sock.
        """
        daemon = InProcessDaemon(self, cri_listeners=[])
        yield daemon.start()
        self.assertTrue(os.path.exists(daemon.socket))
        self.assertFalse(os.path.exists(daemon.exec_root / "cri.sock"))

    @inlineCallbacks
    def test_apart_from_the_api(self) -> Any:
        """
        cri.sock serves the CRI alone, without the API's bearer token (a
        kubelet sends none); ross.sock serves ross.v1 alone, token required.
        """
        from ross.v1 import system_pb2_grpc

        daemon = InProcessDaemon(self, token="t0ken")
        yield daemon.start()
        cri = grpc.insecure_channel(f"unix:{daemon.exec_root / 'cri.sock'}")
        api = grpc.insecure_channel(f"unix:{daemon.socket}")
        self.addCleanup(cri.close)
        self.addCleanup(api.close)
        bearer = [("authorization", "Bearer t0ken")]

        def check() -> None:
            version = api_pb2_grpc.RuntimeServiceStub(cri).Version(api_pb2.VersionRequest(), timeout=10)
            self.assertEqual(version.runtime_name, "ross")
            for channel, metadata, code in ((cri, bearer, grpc.StatusCode.UNIMPLEMENTED),
                                            (api, None, grpc.StatusCode.UNAUTHENTICATED)):
                with self.assertRaises(grpc.RpcError) as caught:
                    system_pb2_grpc.SystemServiceStub(channel).Ping(system_pb2.PingRequest(), timeout=10,
                                                                     metadata=metadata)
                self.assertEqual(caught.exception.code(), code)
            with self.assertRaises(grpc.RpcError) as caught:
                api_pb2_grpc.RuntimeServiceStub(api).Version(api_pb2.VersionRequest(), timeout=10, metadata=bearer)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            system_pb2_grpc.SystemServiceStub(api).Ping(system_pb2.PingRequest(), timeout=10, metadata=bearer)

        yield deferToThread(check)


class RuntimeTests(CRITestCase):
    @inlineCallbacks
    def test_socket(self) -> Any:
        """
        cri.sock sits beside ross.sock with the same mode (root's and its
        group's only), and serves the CRI alone: ross.v1 is not there.
        """
        mode = stat.S_IMODE(os.stat(self.cri_socket).st_mode)
        self.assertEqual(mode, stat.S_IMODE(os.stat(self.daemon.socket).st_mode))
        self.assertEqual(mode & 0o007, 0)
        wrong = Clients(self.cri.channel)
        try:
            yield self.call(wrong.system.Ping, system_pb2.PingRequest())
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)
        else:
            self.fail("ross.v1 answered on the CRI's socket")

    @inlineCallbacks
    def test_version(self) -> Any:
        """
        Version names Ross and the CRI version it speaks.
        """
        version = yield self.call(self.cri.runtime.Version, api_pb2.VersionRequest(version="v1"))
        self.assertEqual((version.version, version.runtime_name, version.runtime_version, version.runtime_api_version),
                         ("0.1.0", "ross", ross.__version__, "v1"))

    @inlineCallbacks
    def test_status_and_config(self) -> Any:
        """
        The runtime and its network are ready; the cgroup driver is
        cgroupfs (what kubelet must be configured with).
        """
        status = yield self.call(self.cri.runtime.Status, api_pb2.StatusRequest())
        conditions = {c.type: c.status for c in status.status.conditions}
        self.assertEqual(conditions, {"RuntimeReady": True, "NetworkReady": True})
        config = yield self.call(self.cri.runtime.RuntimeConfig, api_pb2.RuntimeConfigRequest())
        self.assertEqual(config.linux.cgroup_driver, api_pb2.CGROUPFS)

    @inlineCallbacks
    def test_unimplemented(self) -> Any:
        """
        An RPC Ross does not serve yet answers UNIMPLEMENTED.
        """
        code = yield self.failure_code(self.cri.runtime.CheckpointContainer,
                                       api_pb2.CheckpointContainerRequest(container_id="x"))
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
