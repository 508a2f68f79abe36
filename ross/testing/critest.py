"""
critest (kubernetes-sigs/cri-tools' CRI conformance suite) against a real
Ross daemon's CRI, offline (outside the suite: it takes minutes):

    ./dev setup     # builds it once into /var/cache/ross/cri-tools
    .venv/bin/python -m ross.testing.critest /var/cache/ross/cri-tools/bin/critest [--focus REGEX] [critest options]

critest pulls its test images from registry.k8s.io and gcr.io, which are
out of reach here. Equivalents made from busybox (L{test_images}: the
same names, users, groups, tags and commands where critest looks at them)
are pushed to a local registry, and the daemon pulls those registries'
images from it (--registry-mirror): every pull critest makes is a real
pull. What cannot be made equivalent fails and is said so: the image
critest names by a digest of the real one, and anything critest needs
that Ross does not serve yet. The nonewprivs image's program is compiled
with the host's cc. critest's default image (busybox:1.29-2) is made from
Debian's dynamically linked busybox (downloaded with apt-get, with the
host's C library), with its applets as hard links, as the real image has
them: its shell runs commands from PATH, where busybox-static's runs its
own applets, so a masked /bin/ls is really run (and refused).

Prints passed, failed and skipped per group (the suite's top-level
describe), and the failed tests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import attrs

from ross.engine.fsutil import remove_tree
from ross.testing.busybox import GROUP, PASSWD, build_rootfs
from ross.testing.daemon import DaemonProcess, short_tempdir
from ross.testing.images import EPOCH, busybox_layer, docker_archive, image_config, layer_tar
from ross.testing.registry import REGISTRY, RegistryServer, free_port

#: The registries critest pulls from, all served by the local registry.
MIRRORED = ("registry.k8s.io", "k8s.gcr.io", "gcr.io", "docker.io")
CRI_TOOLS = "gcr.io/k8s-staging-cri-tools/"
E2E = "registry.k8s.io/e2e-test-images/"
#: pgrep PATTERN as busybox's: the PIDs whose name matches, status 1 for none.
PGREP = """#!/bin/sh
found=1
for dir in /proc/[0-9]*; do
    read -r name < "$dir/comm" 2>/dev/null || continue
    if echo "$name" | grep -q -- "$1"; then echo "${dir#/proc/}"; found=0; fi
done
exit $found
"""
#: What critest's web server images answer on port 80.
WELCOME = "<html><body><h1>Welcome to nginx!</h1></body></html>\n"
#: nginx as critest sees it: a master process, named so in its command
#: line and "nginx" by name, whose PID is in /var/run/nginx.pid, serving
#: /var/www on port 80.
NGINX = """#!/bin/sh
mkdir -p /var/run
master='printf nginx > /proc/$$/comm; echo $$ > /var/run/nginx.pid; httpd -f -p 80 -h /var/www & wait'
exec sh -c "$master" "nginx: master process nginx $*"
"""
#: ipcs -m (which Debian's busybox lacks) as util-linux prints it, from
#: the IPC namespace's table.
IPCS = """#!/bin/sh
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
tail -n +2 /proc/sysvipc/shm | while read -r key shmid perms size cpid lpid nattch uid rest; do
    printf '0x%08x %-10s %-10s %-10s %-10s %-10s\\n' "$key" "$shmid" "$uid" "$perms" "$size" "$nattch"
done
"""
#: The nonewprivs image's program, set-user-ID root: says whether running
#: it raised the effective uid (it does not under no_new_privs).
NONEWPRIVS_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""


@attrs.frozen
class TestImage:
    """
    One busybox-made image: its names (as critest pulls them), its USER,
    its command, and files over busybox's.
    """

    names: tuple[str, ...]
    user: str = ""
    cmd: tuple[str, ...] = ("sh",)
    files: tuple[tuple[str, str], ...] = ()
    #: Programs compiled from C (path, source, mode), statically linked.
    programs: tuple[tuple[str, str, int], ...] = ()
    #: Made from Debian's dynamically linked busybox (L{dynamic_busybox_layer}).
    dynamic: bool = False


def test_images() -> list[TestImage]:
    """
    The images critest's Conformance tests pull (cri-tools
    pkg/validate/consts.go and the tests' own names).
    """
    web = ("var/www/index.html", WELCOME)
    accounts = (("etc/passwd", PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n"),
                ("etc/group", GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"))
    return [
        # Busybox 1.29 has pgrep (execSync's timeout test runs it); the
        # host's busybox may not.
        TestImage((E2E + "busybox:1.29-2",), files=(("bin/pgrep", PGREP), ("usr/bin/ipcs", IPCS)), dynamic=True),
        TestImage((E2E + "nginx:1.14-2",), cmd=("nginx", "-g", "daemon off;"),
                  files=(web, ("usr/sbin/nginx", NGINX))),
        TestImage((E2E + "nonewprivs:1.3",), cmd=("/usr/local/bin/nnp",),
                  programs=(("usr/local/bin/nnp", NONEWPRIVS_C, 0o4755),)),
        # Apache says its name on start; the multi-container test reads it in the log.
        TestImage((E2E + "httpd:2.4.39-4",), cmd=("sh", "-c", "echo 'httpd: started'; exec httpd -f -p 80 -h /var/www"),
                  files=(web,)),
        TestImage((CRI_TOOLS + "hostnet-nginx-amd64:latest",),
                  cmd=("httpd", "-f", "-p", "12003", "-h", "/var/www"), files=(web,)),
        TestImage((CRI_TOOLS + "test-image-user-uid:latest",), user="1002"),
        TestImage((CRI_TOOLS + "test-image-user-username:latest",), user="www-data"),
        TestImage((CRI_TOOLS + "test-image-user-uid-group:latest",), user="1003:1003"),
        TestImage((CRI_TOOLS + "test-image-user-username-group:latest",), user="www-data:www-data"),
        TestImage((CRI_TOOLS + "test-image-predefined-group:latest",), user="1000", files=accounts),
        TestImage((CRI_TOOLS + "test-image-latest:latest",)),
        TestImage((CRI_TOOLS + "test-image-tag:test",)),
        TestImage((CRI_TOOLS + "test-image-tag:all",), files=(("etc/variant", "all\n"),)),
        *[TestImage((CRI_TOOLS + f"test-image-{i}:latest",), files=(("etc/variant", f"{i}\n"),)) for i in (1, 2, 3)],
        TestImage(tuple(CRI_TOOLS + f"test-image-tags:{i}" for i in (1, 2, 3)), files=(("etc/variant", "tags\n"),)),
        # One image under both names: critest checks it is one.
        TestImage(("registry.k8s.io/pause:3.9",), cmd=("sleep", "2147483647")),
    ]


def _files_layer(files: Iterable[tuple[str, str]], programs: Iterable[tuple[str, bytes, int]] = ()) -> bytes:
    data = io.BytesIO()
    entries = [(name, text.encode(), 0o755 if text.startswith("#!") else 0o644) for name, text in files]
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body, mode in [*entries, *programs]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), EPOCH, mode
            tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


def compile_program(source: str, directory: Path) -> bytes:
    """
    A static executable of C C{source} (the host's cc).
    """
    src, out = directory / "program.c", directory / "program"
    src.write_text(source)
    subprocess.run(["cc", "-static", "-Os", "-o", str(out), str(src)], check=True, timeout=120)
    return out.read_bytes()


def dynamic_busybox_layer(directory: Path) -> bytes:
    """
    A busybox root filesystem from Debian's dynamically linked busybox
    (apt-get download) and the host's libraries it needs, each applet a
    hard link to /bin/busybox as in the real busybox image: masking one
    applet's path masks that name only.
    """
    subprocess.run(["apt-get", "download", "-q", "busybox"], cwd=directory, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    deb = next(directory.glob("busybox_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(directory / "deb")], check=True, timeout=60)
    binary = str(directory / "deb" / "bin" / "busybox")
    root = build_rootfs(directory / "dynamic", busybox=binary)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            link = Path(dirpath) / name
            if link.is_symlink() and os.readlink(link).endswith("bin/busybox"):
                link.unlink()
                os.link(root / "bin" / "busybox", link)
    ldd = subprocess.run(["ldd", binary], check=True, timeout=60, capture_output=True, text=True).stdout
    for library in re.findall(r"(/\S+) \(0x", ldd):
        target = root / library.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.realpath(library), target)
        os.chmod(target, 0o755)
    return layer_tar(root)


def mirror_name(name: str, host: str) -> str:
    """
    Where the local registry holds C{name}: the same repository path on
    C{host} (k8s.gcr.io/pause and registry.k8s.io/pause are one image).
    """
    return f"{host}/{name.partition('/')[2]}"


def archives(directory: Path, host: str) -> list[tuple[Path, list[str]]]:
    """
    A docker archive per test image, tagged with its names on C{host}.
    """
    static = busybox_layer()
    dynamic: bytes | None = None
    made = []
    for i, image in enumerate(test_images()):
        # Each its own image (critest tells them apart by ID) but those
        # that are one under several names.
        files = (("etc/test-image", image.names[0] + "\n"), *image.files)
        programs = [(path, compile_program(source, directory), mode) for path, source, mode in image.programs]
        base = static
        if image.dynamic:
            base = dynamic = dynamic or dynamic_busybox_layer(directory)
        layers = [base, _files_layer(files, programs)]
        diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
        config = image_config(diff_ids, cmd=list(image.cmd), extra={"User": image.user} if image.user else None)
        names = [mirror_name(n, host) for n in image.names]
        made.append((docker_archive(directory / f"image-{i}.tar", tags=names, layers=layers, config=config).path,
                     names))
    return made


def results(report: Path) -> tuple[dict[str, dict[str, int]], list[str]]:
    """
    Counts per group (passed, failed, skipped) and the failed tests' names,
    from ginkgo's JSON report.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})
    failed = []
    for suite in json.loads(report.read_text()):
        for spec in suite.get("SpecReports") or ():
            if spec.get("LeafNodeType") != "It":
                continue
            texts = spec.get("ContainerHierarchyTexts") or ["-"]
            group = texts[0]
            state = spec.get("State")
            kind = "passed" if state == "passed" else "skipped" if state in ("skipped", "pending") else "failed"
            counts[group][kind] += 1
            if kind == "failed":
                failed.append(" ".join([*texts, spec.get("LeafNodeText", "")]))
    return dict(counts), failed


def run(critest: str, focus: str, extra: list[str]) -> int:
    base = short_tempdir("ross-critest-")
    registry = RegistryServer(base / "registry", port=free_port())
    registry.base.mkdir(parents=True)
    (registry.base / "config.yml").write_text(registry.config())
    registry_process = subprocess.Popen([REGISTRY, "serve", str(registry.base / "config.yml")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mirrors = [arg for r in MIRRORED for arg in ("--registry-mirror", f"{r}={registry.host}")]
    # Named as the run is: the daemon's cgroups are named after it, and
    # two runs at once must not share (nor sweep) each other's.
    (base / base.name).mkdir()
    daemon = DaemonProcess(base / base.name, extra=[*mirrors, "--insecure-registry", registry.host])
    # What to look for if anything is left behind.
    print(f"daemon in {base}: bridge {daemon.network.bridge}, nftables table {daemon.network.table}, "
          f"cgroups ross-test-{daemon.base.name}", flush=True)
    try:
        daemon.start()
        with tempfile.TemporaryDirectory(prefix="ross-critest-") as tmp:
            for archive, names in archives(Path(tmp), registry.host):
                _ok(daemon.ross("load", "-i", str(archive), timeout=120))
                for name in names:
                    _ok(daemon.ross("push", name, timeout=120))
                _ok(daemon.ross("rmi", *names, timeout=120))
        report = base / "report.json"
        socket = f"unix://{daemon.exec_root / 'cri.sock'}"
        command = [critest, "--runtime-endpoint", socket, "--image-endpoint", socket,
                   f"-ginkgo.focus={focus}", f"-ginkgo.json-report={report}", *extra]
        print("+", " ".join(command), flush=True)
        code = subprocess.run(command, timeout=3 * 3600).returncode
        counts, failed = results(report)
        print(f"\n{'group':60} passed failed skipped")
        for group, c in sorted(counts.items()):
            print(f"{group[:60]:60} {c['passed']:6} {c['failed']:6} {c['skipped']:7}")
        totals = {k: sum(c[k] for c in counts.values()) for k in ("passed", "failed", "skipped")}
        print(f"{'total':60} {totals['passed']:6} {totals['failed']:6} {totals['skipped']:7}")
        for name in failed:
            print(f"FAILED: {name}")
        return code
    finally:
        _remove_everything(daemon)
        daemon.stop()
        daemon.cleanup()
        registry_process.terminate()
        registry_process.wait(30)
        remove_tree(base, ignore_errors=True)


def _ok(result: subprocess.CompletedProcess[bytes]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"ross failed: {result.stderr.decode(errors='replace')}")


def _remove_everything(daemon: DaemonProcess) -> None:
    """
    Remove every container critest left (containers outlive the daemon).
    """
    if daemon.process is None or daemon.process.poll() is not None:
        return
    listed = daemon.ross("ps", "-aq", "--all-namespaces", "--no-trunc")
    ids = listed.stdout.decode().split()
    if ids:
        daemon.ross("rm", "-f", *ids, timeout=300)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("critest", help="the critest binary")
    parser.add_argument("--focus", default="Conformance", help="ginkgo focus (default: Conformance)")
    args, extra = parser.parse_known_args(argv)
    if os.geteuid() != 0:
        print("critest runs containers: run it as root", file=sys.stderr)
        return 2
    return run(args.critest, args.focus, extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
