"""
How fast can a keystroke echo be when it rides a grpcio bidirectional
stream, as SPEC 3 has every interactive byte do? The floor, next to
``docker exec -it``, taking turns key by key:

  - floor: a synchronous grpcio client in raw mode whose request thread
    reads the terminal itself (as ``ross exec -it``) sends each key on a
    bidi stream to a synchronous grpcio server (as the
    daemon's) whose handler threads write it straight into a PTY with
    ``cat`` behind it and stream the echo back. No engine, no reactor, no
    shim: only what the gRPC design itself costs;
  - ross: the real ``ross exec -it`` path;
  - docker.

    .venv/bin/python bench/interactive_floor.py

Measured on the 2-core VM (see issue 5): floor 1.2-1.33x docker's echo
(with grpc.aio on the client side: 1.37-1.46x). The floor has no shim:
Ross, like docker (containerd-shim), has one more process between the
daemon and the PTY; what Ross adds on top is that and the reactor
hand-offs.
"""

from __future__ import annotations

import os
import pty
import shutil
import statistics
import subprocess
import sys
import termios
import threading
import tty
from concurrent import futures
from pathlib import Path
from typing import Iterable, Iterator

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.containers import docker_available  # noqa: E402
from bench.interactive import ROSS, echo_latencies  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.terminal import Terminal  # noqa: E402

METHOD = "/floor.Floor/Echo"


def _same(data: bytes) -> bytes:
    return data


def serve(address: str) -> None:
    def echo(requests: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        master, slave = pty.openpty()
        cat = subprocess.Popen(["cat"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)

        def pump() -> None:
            try:
                for data in requests:
                    os.write(master, data)
            except (grpc.RpcError, OSError):
                pass  # the client left

        threading.Thread(target=pump, daemon=True).start()
        try:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                yield data
        finally:
            cat.kill()
            cat.wait()
            os.close(master)

    handler = grpc.method_handlers_generic_handler(
        "floor.Floor", {"Echo": grpc.stream_stream_rpc_method_handler(echo, _same, _same)})
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def client(address: str) -> None:
    mode = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        channel = grpc.insecure_channel(address)

        def keys() -> Iterator[bytes]:
            while True:
                data = os.read(0, 65536)
                if not data or b"\x03" in data:
                    return
                yield data

        os.write(1, b"# ")
        try:
            for data in channel.stream_stream(METHOD, _same, _same)(keys()):
                os.write(1, data)
        except grpc.RpcError:
            return
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, mode)


def main() -> None:
    base = short_tempdir("ross-floor-")
    address = f"unix://{base}/floor.sock"
    server = subprocess.Popen([sys.executable, __file__, "serve", address])
    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address, TERM="xterm")
    terms: list[Terminal] = []
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=("ross-floor-busybox:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        subprocess.run([ROSS, "run", "-d", "--name", "floor", "ross-floor-busybox", "sleep", "100000"],
                       env=env, check=True, capture_output=True)
        names = ["floor", "ross"]
        terms = [Terminal([sys.executable, __file__, "client", address], rows=40, cols=120),
                 Terminal([ROSS, "exec", "-it", "floor", "sh"], env=env, rows=40, cols=120)]
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
            subprocess.run(["docker", "run", "-d", "--name", "ross-floor", "ross-floor-busybox", "sleep", "100000"],
                           check=True, capture_output=True)
            names.append("docker")
            terms.append(Terminal(["docker", "exec", "-it", "ross-floor", "sh"], rows=40, cols=120))
        latencies = echo_latencies(terms)
        print(f"keystroke echo, median of {len(latencies[0])}, taking turns:")
        for name, found in zip(names, latencies):
            line = f"  {name:6s} {statistics.median(found) * 1e3:6.3f} ms"
            if docker:
                line += f"  ({statistics.median(found) / statistics.median(latencies[-1]):.2f} x docker)"
            print(line)
    finally:
        for term in terms:
            term.close()
        if docker:
            subprocess.run(["docker", "rm", "-f", "ross-floor"], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", "ross-floor-busybox"], capture_output=True)
        subprocess.run([ROSS, "rm", "-f", "floor"], env=env, capture_output=True)
        daemon.stop()
        daemon.cleanup()
        server.terminate()
        server.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "client":
        client(sys.argv[2])
    else:
        main()
