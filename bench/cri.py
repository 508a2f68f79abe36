"""
Kubernetes' start path through Ross's CRI: a pod as kubelet starts one
(RunPodSandbox, then CreateContainer and StartContainer of one busybox
container in it), timed per pod for 20 pods one after another, next to
docker's ``run -d busybox sleep`` (docker has no CRI here: its run is the
nearest thing it does). The calls go over cri.sock with stubs from the
same api.proto kubelet's are made from.

    .venv/bin/python bench/cri.py [--pods 20]

Also a group of ``./dev bench`` (``./dev bench cri``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from ross.cri.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from ross.testing.benchreport import percentile  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

#: Every call's deadline: a stuck daemon fails the bench, never hangs it.
DEADLINE = 60


def pod_walls(socket: str, image: str, pods: int, logs: Path) -> list[float]:
    """
    Seconds from RunPodSandbox to StartContainer's answer for each of
    C{pods} pods started one after another (their logs under C{logs});
    every pod is gone again at the end, whatever happens.
    """
    channel = grpc.insecure_channel(f"unix:{socket}")
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    made: list[str] = []
    walls = []
    try:
        for n in range(pods):
            pod = api_pb2.PodSandboxConfig(
                metadata=api_pb2.PodSandboxMetadata(name=f"bench-{n}", uid=str(uuid.uuid4()), namespace="bench"),
                log_directory=str(logs / f"pod{n}"))
            container = api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="main"), image=api_pb2.ImageSpec(image=image),
                command=["sleep", "100000"], log_path="main.log")
            start = time.perf_counter()
            pod_id = runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod), timeout=DEADLINE).pod_sandbox_id
            made.append(pod_id)
            created = runtime.CreateContainer(api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=container, sandbox_config=pod), timeout=DEADLINE)
            runtime.StartContainer(api_pb2.StartContainerRequest(container_id=created.container_id),
                                   timeout=DEADLINE)
            walls.append(time.perf_counter() - start)
    finally:
        for pod_id in made:
            try:
                runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=DEADLINE)
                runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=DEADLINE)
            except grpc.RpcError as e:
                print(f"cleaning pod {pod_id[:12]} up failed: {e.details()}", file=sys.stderr)
        channel.close()
    return walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ross-bench-cri-") as work:
        archive = Path(work) / "busybox.tar"
        docker_archive(archive, tags=["busybox:latest"])
        daemon = DaemonProcess(short_tempdir("ross-bench-"), own_session=True)
        daemon.start()
        try:
            daemon.ross("load", "-i", str(archive))
            walls = pod_walls(str(daemon.exec_root / "cri.sock"), "busybox", args.pods, Path(work) / "pods")
        finally:
            daemon.stop()
            daemon.cleanup()
    ms = [w * 1e3 for w in walls]
    print(f"RunPodSandbox + CreateContainer + StartContainer, {len(ms)} pods: "
          f"p50 {statistics.median(ms):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
