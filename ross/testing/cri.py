"""
Tests of the Kubernetes CRI: a daemon with busybox, and CRI stubs (from
the same api.proto, as kubelet's) on its cri.sock, with helpers that make
pod and container configurations as kubelet does.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, TypeVar

import grpc
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.cri.v1 import api_pb2, api_pb2_grpc
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import bounded

T = TypeVar("T")


class CRIClients:
    """
    runtime.v1 stubs over one channel (every call bounded).
    """

    def __init__(self, socket: str) -> None:
        self.channel = bounded(grpc.insecure_channel(f"unix:{socket}"))
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def pod_config(name: str = "", log_directory: str = "", pid: api_pb2.NamespaceMode = api_pb2.CONTAINER,
               **fields: Any) -> api_pb2.PodSandboxConfig:
    """
    A pod's configuration as kubelet sends it: metadata with a fresh uid,
    each container with a PID namespace of its own unless C{pid} says
    otherwise (kubelet's default: shareProcessNamespace false), the given
    fields (hostname, dns_config, port_mappings, labels...).
    """
    name = name or f"pod-{uuid.uuid4().hex[:8]}"
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="default"),
        log_directory=log_directory, **fields)
    config.linux.security_context.namespace_options.pid = pid
    return config


def container_config(name: str, command: list[str], image: str = "busybox",
                     pid: api_pb2.NamespaceMode | None = None, **fields: Any) -> api_pb2.ContainerConfig:
    """
    A container's configuration as kubelet sends it: a PID namespace of its
    own (kubelet's unless the pod shares its process namespace) unless
    C{pid} or the given C{linux} fields say otherwise, and the given fields.
    """
    config = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=name),
                                     image=api_pb2.ImageSpec(image=image), command=command, **fields)
    if pid is not None:
        config.linux.security_context.namespace_options.pid = pid
    elif "linux" not in fields:
        config.linux.security_context.namespace_options.pid = api_pb2.CONTAINER
    return config


class CRITestCase(ContainerTestCase):
    """
    A daemon with busybox; C{self.cri} holds the CRI stubs on its socket.
    """

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.cri_socket = str(self.daemon.exec_root / "cri.sock")
        self.cri = CRIClients(self.cri_socket)
        self.addCleanup(self.cri.close)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        A blocking CRI call, in a thread.
        """
        return deferToThread(fn, *args, **kwargs)

    @inlineCallbacks
    def failure_code(self, fn: Callable[..., Any], request: Any) -> Any:
        """
        The status code C{fn(request)} fails with (the test fails if it
        succeeds).
        """
        try:
            yield self.call(fn, request)
        except grpc.RpcError as e:
            return e.code()
        self.fail(f"{request!r} succeeded")

    @inlineCallbacks
    def run_pod(self, config: api_pb2.PodSandboxConfig | None = None) -> Any:
        """
        Run a pod sandbox; fires with (its ID, its config).
        """
        config = config if config is not None else pod_config()
        response = yield self.call(self.cri.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config))
        return response.pod_sandbox_id, config

    @inlineCallbacks
    def start_container(self, pod_id: str, pod: api_pb2.PodSandboxConfig, config: api_pb2.ContainerConfig) -> Any:
        """
        Create and start a container in a pod; fires with its ID.
        """
        created = yield self.call(self.cri.runtime.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod))
        yield self.call(self.cri.runtime.StartContainer,
                        api_pb2.StartContainerRequest(container_id=created.container_id))
        return created.container_id

    @inlineCallbacks
    def exec_sync(self, container_id: str, *cmd: str, timeout: int = 30) -> Any:
        """
        ExecSync C{cmd}; fires with (exit code, stdout, stderr).
        """
        response = yield self.call(self.cri.runtime.ExecSync, api_pb2.ExecSyncRequest(
            container_id=container_id, cmd=list(cmd), timeout=timeout))
        return response.exit_code, response.stdout, response.stderr

    def log_directory(self) -> str:
        path = os.path.abspath(os.path.join(self.mktemp(), "pods"))
        os.makedirs(path)
        return path
