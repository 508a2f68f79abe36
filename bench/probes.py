"""
The containment probes of ross.test.integration.test_containment under Ross
and under docker, side by side: what a hostile image or a hostile root
process in a default container gets (issue 9).

    .venv/bin/python bench/probes.py [--no-docker]

Ross runs as a private daemon (its own root, bridge and nftables table);
docker as the private dockerd of bench/dockerd.py (its own data root,
exec root, socket and bridge, no iptables changes, stopped and removed
afterwards). Both get
the same images, made here from busybox-static and the static probe
(ross.testing.hostile). Keys are planted in this process's keyrings, which
both daemons' containers inherit unless the engine gives them their own,
and dropped at the end. Each cell is "held" or what got out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing import hostile  # noqa: E402
from ross.testing.daemon import REPO, DaemonProcess  # noqa: E402
from ross.testing.hostile import PROBE, replace  # noqa: E402

HELD = "held"


class Engine:
    """One engine's CLI: C{docker ...} or C{ross ...} against a private daemon."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], runtime_exe: str,
                 cgroup_parent: str) -> None:
        self.name = name
        self.cgroup_parent = cgroup_parent
        self.argv = argv
        self.env = env
        # The binary a helper joining a container runs before the command:
        # Python for Ross's shim, runc for docker.
        self.runtime_exe = runtime_exe

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def pid(self, name: str) -> int:
        return int(self("inspect", "-f", "{{.State.Pid}}", name).stdout.strip() or 0)

    def logs_until(self, name: str, marker: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self("logs", name).stdout
            if marker in out or time.monotonic() > deadline:
                return out
            time.sleep(0.1)


# ---------------------------------------------------------------- probes


def report_problems(output: str) -> str:
    problems = hostile.containment_problems(output)
    return HELD if not problems else "; ".join(problems)


def probe_masks(e: Engine) -> str:
    return report_problems(e("run", "--rm", "probe", "sh", "-c", hostile.REPORT).stdout)


def probe_proc_link(e: Engine) -> str:
    result = e("run", "--rm", "proclink", "sh", "-c", hostile.REPORT)
    if result.returncode == 125:
        return "refused: " + result.stderr.strip().splitlines()[-1][:60]
    return report_problems(result.stdout)


def fds(output: str) -> str:
    found = sorted(int(line.split()[1]) for line in output.splitlines() if line.startswith("fd "))
    return HELD if found == [0, 1, 2] else f"fds {found}"


def probe_run_fds(e: Engine) -> str:
    return fds(e("run", "--rm", "probe", f"/{PROBE}", "fds").stdout)


def probe_exec_fds(e: Engine) -> str:
    e("run", "-d", "--name", "fdbox", "probe", "sleep", "1000")
    try:
        return fds(e("exec", "fdbox", f"/{PROBE}", "fds").stdout)
    finally:
        e("rm", "-f", "fdbox")


def probe_exec_workdir(e: Engine) -> str:
    e("run", "-d", "--name", "wdbox", "probe", "sleep", "1000")
    try:
        for n in range(3, 10):
            out = e("exec", "-w", f"/proc/self/fd/{n}", "wdbox", f"/{PROBE}", "fds").stdout
            if "cwd outside" in out:
                return f"cwd /proc/self/fd/{n} is a host directory"
        return HELD
    finally:
        e("rm", "-f", "wdbox")


def probe_exec_race(e: Engine, *options: str) -> str:
    st = os.stat(e.runtime_exe)
    path = ":".join(f"/nonexistent/{i:04d}" for i in range(3000)) + ":/bin"
    e("run", "-d", "--name", "racer", "-e", f"PATH={path}", *options, "probe", f"/{PROBE}", "race", "/tmp/.stop",
      str(st.st_dev), str(st.st_ino), "60", PROBE, "true")
    try:
        for _ in range(30):
            e("exec", "racer", "true")
        e("exec", "racer", "touch", "/tmp/.stop")
        out = e.logs_until("racer", "scans ")
    finally:
        e("rm", "-f", "racer")
    kinds: dict[str, int] = {}
    for line in out.splitlines():
        kind = line.split(" ", 1)[0]
        if kind in hostile.RACE_FINDINGS:
            kinds[kind] = kinds.get(kind, 0) + 1
    return HELD if not kinds else " ".join(f"{k}x{n}" for k, n in sorted(kinds.items()))


def probe_keys(e: Engine, args: list[str], *options: str) -> str:
    out = e("run", "--rm", *options, "probe", f"/{PROBE}", "keys", "find", *args).stdout
    reached = sorted({line.split()[0] + " " + line.split()[1] for line in out.splitlines()
                      if len(line.split()) > 2 and line.split()[1] in args[::3] and line.split()[2] == "ok"})
    return HELD if not reached else ", ".join(reached)


def probe_cgroup_namespace(e: Engine) -> str:
    out = e("run", "--rm", "probe", "cat", "/proc/self/cgroup").stdout
    paths = {line.split(":", 2)[2] for line in out.splitlines() if line.count(":") >= 2}
    return HELD if paths == {"/"} else "host paths: " + ",".join(sorted(paths))[:60]


def probe_cgroup_escape(e: Engine, *options: str) -> str:
    tag = os.urandom(4).hex()
    script = hostile.CGROUP_ATTACK.replace("TAG", tag)
    e("run", "-d", "--name", "cgbox", *options, "probe", "sh", "-c", script + "exec sleep 1000")
    findings = []
    try:
        e.logs_until("cgbox", "attack done")
        pid = e.pid("cgbox")
        if pid:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, group = line.split(":", 2)
                if controllers in ("memory", "pids", "devices") and group == "/":
                    findings.append(f"moved to the host's {controllers} root")
    finally:
        removed = e("rm", "-f", "cgbox")
        if removed.returncode != 0:
            findings.append("rm -f failed")
        left = hostile.cgroups_named(f"escape-{tag}", e.cgroup_parent)
        if left:
            findings.append(f"{len(left)} cgroups left")
        for leftover in left:
            with contextlib.suppress(OSError):
                hostile.remove_cgroup_tree(leftover)
    return HELD if not findings else "; ".join(findings)


def probe_mount_target(e: Engine, source: Path) -> str:
    result = e("run", "--rm", "-v", f"{source}:/proc/sys", "probe", "true")
    return HELD if result.returncode != 0 else "bind on /proc/sys mounted"


def probe_mount_link(e: Engine, source: Path) -> str:
    result = e("run", "--rm", "-v", f"{source}:/data", "mountlink", "true")
    return HELD if result.returncode != 0 else "bind through /data -> /proc/sys mounted"


# ---------------------------------------------------------------- set-up


def build_images(work: Path) -> dict[str, Path]:
    def proc_link(root: Path) -> None:
        (root / "fakeproc").mkdir()
        replace(root, "proc", link="/fakeproc")

    return {
        "probe": hostile.image_archive(work / "probe.tar", "probe:latest"),
        "proclink": hostile.image_archive(work / "proclink.tar", "proclink:latest", proc_link),
        "mountlink": hostile.image_archive(work / "mountlink.tar", "mountlink:latest",
                                           lambda root: replace(root, "data", link="/proc/sys")),
    }


@contextlib.contextmanager
def docker_engine() -> Iterator[Engine | str]:
    """
    docker as an L{Engine}: the private dockerd of bench/dockerd.py (a
    bridge of its own, iptables untouched), or why there is none.
    """
    with private_dockerd() as env:
        if isinstance(env, str):
            yield env
            return
        runc = shutil.which("runc") or "/usr/sbin/runc"
        yield Engine("docker", ["docker"], env, runc, "docker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: both engines need it")
    work = Path(tempfile.mkdtemp(prefix="ross-bench-probes-", dir="/var/tmp"))
    tag = os.urandom(4).hex()
    session, user = f"ross-bench-session-{tag}", f"ross-bench-user-{tag}"
    host_session = hostile.keyring_id(hostile.KEY_SPEC_SESSION_KEYRING)
    key_args = ["host-session-key", str(hostile.plant_key(session, hostile.KEY_SPEC_SESSION_KEYRING, True)), session,
                "host-user-key", str(hostile.plant_key(user, hostile.KEY_SPEC_USER_KEYRING)), user,
                "host-session-ring", str(host_session), "_ses"]
    source = work / "volume"
    source.mkdir()
    probes: list[tuple[str, Callable[[Engine], str]]] = [
        ("masks and read-only /proc/sys", probe_masks),
        ("image /proc -> /fakeproc", probe_proc_link),
        ("fds of run", probe_run_fds),
        ("fds of exec", probe_exec_fds),
        ("exec -w /proc/self/fd/N", probe_exec_workdir),
        ("exec helper race", probe_exec_race),
        ("exec helper race, SYS_PTRACE", lambda e: probe_exec_race(e, "--cap-add", "SYS_PTRACE")),
        ("host keys", lambda e: probe_keys(e, key_args)),
        ("host session key, unconfined", lambda e: probe_keys(e, key_args[:3], "--security-opt",
                                                              "seccomp=unconfined")),
        ("cgroup namespace", probe_cgroup_namespace),
        ("cgroup escape, SYS_ADMIN", lambda e: probe_cgroup_escape(e, "--cap-add", "SYS_ADMIN")),
        ("cgroup escape, privileged", lambda e: probe_cgroup_escape(e, "--privileged")),
        ("-v X:/proc/sys", lambda e: probe_mount_target(e, source)),
        ("-v X:/data, image /data -> /proc/sys", lambda e: probe_mount_link(e, source)),
    ]
    results: dict[str, dict[str, str]] = {name: {} for name, _ in probes}
    daemon = DaemonProcess()
    try:
        images = build_images(work)
        daemon.start()
        ross = Engine("ross", [sys.executable, "-m", "ross.cli.main"],
                      dict(os.environ, ROSS_HOST=daemon.address, PYTHONPATH=str(REPO)), sys.executable,
                      f"ross-test-{daemon.base.name}")
        engines: list[Engine | str] = [ross]
        docker: contextlib.AbstractContextManager[Engine | str] = (
            contextlib.nullcontext("--no-docker") if args.no_docker else docker_engine())
        with docker as other:
            engines.append(other)
            for engine in engines:
                if isinstance(engine, str):
                    continue
                for image in images.values():
                    engine("load", "-i", str(image))
                for name, run in probes:
                    try:
                        results[name][engine.name] = run(engine)
                    except Exception as e:  # a probe that broke says so in its cell
                        results[name][engine.name] = f"probe failed: {type(e).__name__}: {e}"[:80]
        width = max(len(name) for name, _ in probes)
        print(f"{'probe':<{width}}  {'ross':<40}  docker")
        for name, _ in probes:
            docker_cell = results[name].get("docker") or (engines[1] if isinstance(engines[1], str) else "")
            print(f"{name:<{width}}  {results[name].get('ross', ''):<40}  {docker_cell}")
    finally:
        daemon.cleanup()
        hostile.drop_keys(session)
        hostile.drop_keys(user)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
