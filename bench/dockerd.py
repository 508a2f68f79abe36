"""
The private dockerd every comparison in bench/ runs against: its own data
root, exec root, socket and pidfile under a temporary directory, and its own
bridge, so that nothing of the host's docker changes.

Never ``--bridge=none``: a dockerd started that way deletes the host's
``docker0``, and the host's own docker then cannot start a container on its
default network until it is restarted. Without C{networking} the bridge is
one made here (a random name and a /22 nothing else routes: room for the
scale row's 500 containers), with no
firewall rules; with it, dockerd manages its default bridge and iptables as
on a docker host, which is only for a private network namespace (see
bench/network.py --private-host).

Everything it made goes on every way out (an exception, Ctrl-C): its
containers, the daemon, its mounts, its cgroups, the bridge, the directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.leaks import mounts_under  # noqa: E402

# Where private bridges take their /22 (above the 10.88/13 of Ross's own
# defaults and below docker's 172.17/16).
PRIVATE_RANGE = ipaddress.ip_network("10.200.0.0/13")


def free_subnet(prefix: int = 22) -> ipaddress.IPv4Network:
    """
    A subnet of L{PRIVATE_RANGE} that no address of this host falls in.
    """
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    used = [ipaddress.ip_interface(word) for line in shown.splitlines() for word in line.split()[3:4]]
    for subnet in PRIVATE_RANGE.subnets(new_prefix=prefix):
        if not any(u.network.overlaps(subnet) for u in used):
            return subnet
    raise RuntimeError(f"no free /{prefix} in {PRIVATE_RANGE} for a private docker bridge")


def docker_bridges() -> set[str]:
    """
    The bridges of the host's docker in this network namespace (docker0 and
    its user networks' br-*): what a dockerd could take from it.
    """
    shown = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True,
                           check=True).stdout
    names = {line.split(": ")[1].split("@")[0] for line in shown.splitlines()}
    return {n for n in names if n == "docker0" or n.startswith("br-")}


def _kill_mentioning(marker: str) -> None:
    """SIGKILL the processes whose command line names C{marker}, and their children."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.add(int(entry))
            except OSError:
                continue
    for pid in found:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        for target in [pid, *map(int, children)]:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _cgroups() -> set[Path]:
    return set(Path("/sys/fs/cgroup").glob("*/docker"))


def _remove_cgroup_tree(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


@contextlib.contextmanager
def private_dockerd(networking: bool = False, ipv6: str = "", extra: Sequence[str] = (),
                    parent: str | Path = "/var/tmp") -> Iterator[dict[str, str] | str]:
    """
    Start a private dockerd; yield the environment its CLI needs
    (C{DOCKER_HOST}, the classic builder), or why there is none. C{ipv6} (a
    subnet, with C{networking}) makes its bridge dual-stack with ip6tables
    NAT66 (experimental before docker 27); C{extra} are more options. Its
    data root is made in C{parent}.
    """
    if not shutil.which("dockerd") or not shutil.which("docker"):
        yield "dockerd not installed"
        return
    base = Path(tempfile.mkdtemp(prefix="ross-bench-docker-", dir=parent))
    sock = base / "docker.sock"
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_BUILDKIT="0")
    bridge = ""
    if networking:
        network = []
    else:
        bridge = "rbd" + os.urandom(3).hex()
        subnet = free_subnet()
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        network = ["--bridge", bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
    if ipv6:
        network += ["--ipv6", "--fixed-cidr-v6", ipv6, "--experimental", "--ip6tables"]
    cgroups_before, bridges_before = _cgroups(), docker_bridges()
    log = open(base / "dockerd.log", "wb")
    proc = None
    try:
        proc = subprocess.Popen(
            ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
             "--pidfile", str(base / "docker.pid"), "-H", f"unix://{sock}", "--storage-driver=overlay2",
             *network, *extra],
            # A Ctrl-C in the terminal is for the bench, which then stops
            # dockerd after removing its containers.
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                yield "dockerd would not start: " + (base / "dockerd.log").read_text(errors="replace")[-500:]
                return
            time.sleep(0.2)
        yield env
    finally:
        # Ctrl-C again while cleaning up would leave half of it: finish first.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if proc is not None:
                if proc.poll() is None:
                    try:
                        left = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True,
                                              timeout=30).stdout.split()
                        if left:
                            subprocess.run(["docker", "rm", "-f", *left], env=env, capture_output=True, timeout=300)
                    except subprocess.TimeoutExpired:
                        # A dockerd that no longer answers (once, with 500
                        # containers going): what it ran goes below.
                        pass
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
            # Shims (and their containers) that outlived their dockerd.
            _kill_mentioning(str(base))
            # Every mount dockerd left under its directories, deepest first:
            # its data root's overlays and the netns files under its
            # exec root (a --network host container leaves exec/netns/default).
            for point in sorted(mounts_under(base), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
            if bridge:
                subprocess.run(["ip", "link", "del", bridge], capture_output=True)
            for path in _cgroups() - cgroups_before:
                _remove_cgroup_tree(path)
            shutil.rmtree(base, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        # What went wrong with docker0 once: say so loudly if it happens.
        gone = bridges_before - docker_bridges()
        if gone:
            raise RuntimeError(f"the private dockerd removed the host's docker bridges: {', '.join(sorted(gone))}")


def main() -> None:
    """
    Start and stop one, running a container on its bridge in between:
    what every bench does to docker, checked on its own.
    """
    with private_dockerd() as env:
        if isinstance(env, str):
            print(f"no private dockerd: {env}")
            return
        found = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        rootfs = subprocess.run([sys.executable, "-m", "ross.testing.busybox"], capture_output=True, check=True,
                                cwd=Path(__file__).resolve().parent.parent).stdout
        subprocess.run(["docker", "import", "-", "ross-bench-check"], input=rootfs, env=env, capture_output=True,
                       check=True)
        seen = subprocess.run(["docker", "run", "--rm", "ross-bench-check", "ip", "-4", "-o", "addr", "show", "eth0"],
                              env=env, capture_output=True, text=True, check=True).stdout.split()[3]
        print(f"private dockerd up, data root {found}; a container on its bridge got {seen}")
    left = [p for p in Path("/var/tmp").glob("ross-bench-docker-*")]
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if "ross-bench-docker-" in line]
    print(f"stopped; the host's docker bridges kept; left behind: {len(left)} directories, {len(mounts)} mounts")


if __name__ == "__main__":
    main()
