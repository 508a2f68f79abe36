"""
Tests for container names, configuration merging and listing (pure logic).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ross.engine import etcfiles
from ross.engine.containers import config as cfg
from ross.engine.containers.filters import NAMESPACE_LABEL, listed
from ross.engine.containers.names import generate_name, lookup, new_id, validate_name
from ross.engine.containers.store import ContainerRecord, MountPoint, State
from ross.engine.runtime.spec import ExecProcess, Resources
from ross.errors import InvalidArgument, NotFound
from ross.humanize import parse_bytes


class NameTests(SynchronousTestCase):
    def test_validate(self) -> None:
        self.assertEqual(validate_name("/web.1_a-b"), "web.1_a-b")
        for bad in ("", "a", "-x", "has space", "ü1", "a/b"):
            e = self.assertRaises(InvalidArgument, validate_name, bad)
            self.assertIn("Invalid container name", str(e))

    def test_generate_unique(self) -> None:
        rng = random.Random(4)
        taken: set[str] = set()
        for _ in range(500):
            name = generate_name(taken, rng)
            validate_name(name)
            self.assertNotIn(name, taken)
            taken.add(name)

    def test_lookup(self) -> None:
        """
        Full IDs, names and unique prefixes resolve; ambiguous prefixes and
        unknown names are refused with docker's messages.
        """
        a, b = "ab" + "0" * 62, "ac" + "1" * 62
        names = {"web": a, "abc": b}
        self.assertEqual(lookup(a, [a, b], names), a)
        self.assertEqual(lookup("ab", [a, b], names), a)
        self.assertEqual(lookup("/web", [a, b], names), a)
        # A name wins over an ID prefix.
        self.assertEqual(lookup("abc", [a, b], names), b)
        e = self.assertRaises(InvalidArgument, lookup, "a", [a, b], names)
        self.assertEqual(str(e), "multiple IDs found with provided prefix: a")
        # A name claimed by a create still under way: no such container yet.
        e = self.assertRaises(NotFound, lookup, "web", [b], names)
        self.assertEqual(str(e), "No such container: web")
        e = self.assertRaises(NotFound, lookup, "nosuch", [a, b], names)
        self.assertEqual(str(e), "No such container: nosuch")
        self.assertRaises(InvalidArgument, lookup, "", [a], names)
        self.assertEqual(len(new_id()), 64)

    def test_id_is_a_hostname(self) -> None:
        """
        An ID whose first 12 characters are digits alone is drawn again: the
        short ID is the container's hostname, and a resolver takes a name of
        digits for a bad address and never looks it up.
        """
        draws = iter([bytes.fromhex("230059154104" + "ab" * 26), bytes.fromhex("23005915410a" + "ab" * 26)])
        self.assertEqual(new_id(lambda size: next(draws)), "23005915410a" + "ab" * 26)


IMAGE = cfg.ImageDefaults.from_oci({
    "Env": ["PATH=/bin", "A=image"],
    "Cmd": ["sh"],
    "WorkingDir": "/srv",
    "User": "daemon",
    "Labels": {"from": "image", "keep": "yes"},
    "StopSignal": "SIGQUIT",
    "Volumes": {"/data": {}},
})


class MergeTests(SynchronousTestCase):
    cid = "f" * 64

    def test_image_defaults(self) -> None:
        merged = cfg.merge(cfg.ContainerConfig(image="x"), IMAGE, self.cid)
        self.assertEqual((merged.entrypoint, merged.cmd), ((), ("sh",)))
        self.assertEqual(merged.working_dir, "/srv")
        self.assertEqual(merged.user, "daemon")
        self.assertEqual(merged.stop_signal, "SIGQUIT")
        self.assertEqual(merged.hostname, "f" * 12)
        self.assertEqual(merged.env, ("HOSTNAME=" + "f" * 12, "PATH=/bin", "A=image"))
        self.assertEqual(merged.volumes, ("/data",))

    def test_overrides(self) -> None:
        """
        Flags win; env merges by key; labels merge.
        """
        request = cfg.ContainerConfig(
            image="x", cmd=("echo", "hi"), env=("A=flag", "B=2"), working_dir="/w", user="1:2",
            labels={"from": "flag"}, tty=True, hostname="h")
        merged = cfg.merge(request, IMAGE, self.cid)
        self.assertEqual(merged.cmd, ("echo", "hi"))
        self.assertEqual(merged.env, ("HOSTNAME=h", "PATH=/bin", "A=flag", "B=2", "TERM=xterm"))
        self.assertEqual((merged.working_dir, merged.user, merged.hostname), ("/w", "1:2", "h"))
        self.assertEqual(dict(merged.labels), {"from": "flag", "keep": "yes"})

    def test_entrypoint_clears_image_cmd(self) -> None:
        """
        --entrypoint replaces the image's Cmd too; --entrypoint "" clears
        the entrypoint.
        """
        image = cfg.ImageDefaults(entrypoint=("/entry",), cmd=("arg",))
        self.assertEqual(cfg.merge(cfg.ContainerConfig(image="x", entrypoint=("ls",)), image, self.cid).cmd, ())
        merged = cfg.merge(cfg.ContainerConfig(image="x", entrypoint=(), cmd=("true",)), image, self.cid)
        self.assertEqual((merged.entrypoint, merged.cmd), ((), ("true",)))
        merged = cfg.merge(cfg.ContainerConfig(image="x"), image, self.cid)
        self.assertEqual((merged.entrypoint, merged.cmd), (("/entry",), ("arg",)))

    def test_no_command(self) -> None:
        e = self.assertRaises(InvalidArgument, cfg.merge, cfg.ContainerConfig(image="x"), cfg.ImageDefaults(), self.cid)
        self.assertEqual(str(e), "No command specified")

    def test_default_path(self) -> None:
        merged = cfg.merge(cfg.ContainerConfig(image="x", cmd=("true",)), cfg.ImageDefaults(), self.cid)
        self.assertIn(f"PATH={cfg.DEFAULT_PATH}", merged.env)


class MountParsingTests(SynchronousTestCase):
    def test_binds(self) -> None:
        self.assertEqual(cfg.parse_bind("/h:/c:ro"), cfg.MountSpec(type="bind", source="/h", target="/c", read_only=True))
        self.assertEqual(cfg.parse_bind("vol:/c"), cfg.MountSpec(type="volume", source="vol", target="/c"))
        self.assertEqual(cfg.parse_bind("/anon"), cfg.MountSpec(type="volume", target="/anon"))
        for bad in ("rel:/c:x", "/h:rel", "a:b:c:d", "/h:/c:bogus", "bad name:/c"):
            self.assertRaises(InvalidArgument, cfg.parse_bind, bad)
        self.assertEqual(cfg.parse_bind("/h:/c:ro,rslave"), cfg.MountSpec(type="bind", source="/h", target="/c",
                                                                          read_only=True, propagation="rslave"))
        # Two of a kind, as docker's ValidMountMode.
        for bad in ("/h:/c:rw,ro", "/h:/c:shared,rslave", "v:/c:nocopy,nocopy"):
            e = self.assertRaises(InvalidArgument, cfg.parse_bind, bad)
            self.assertIn("invalid mode", str(e))

    def test_duplicates_and_image_volumes(self) -> None:
        host = cfg.HostConfig(binds=("/h:/data",), tmpfs={"/t": "size=1m,mode=700"})
        mounts = cfg.mounts_of(host, ("/data", "/other"))
        self.assertEqual([m.target for m in mounts], ["/data", "/t", "/other"])
        self.assertEqual((mounts[1].tmpfs_size, mounts[1].tmpfs_mode), (1024 * 1024, 0o700))
        e = self.assertRaises(InvalidArgument, cfg.mounts_of, cfg.HostConfig(binds=("/a:/x", "/b:/x/")))
        self.assertIn("Duplicate mount point", str(e))

    def test_kernel_targets(self) -> None:
        """
        Mounts on or under /proc and /sys are refused, however spelled and
        whichever kind (and from an image's VOLUME too); runc's lxcfs files
        are allowed.
        """
        for host in (cfg.HostConfig(binds=("/h:/proc/sys",)), cfg.HostConfig(binds=("vol:/sys/../sys/kernel",)),
                     cfg.HostConfig(tmpfs={"/proc": ""}), cfg.HostConfig(binds=("/h://sys",))):
            e = self.assertRaises(InvalidArgument, cfg.mounts_of, host)
            self.assertIn("cannot be mounted because it is inside", str(e))
        e = self.assertRaises(InvalidArgument, cfg.mounts_of, cfg.HostConfig(), ("/proc/sys/kernel",))
        self.assertIn("inside /proc", str(e))
        # Nor over the whole root, as docker's.
        for host in (cfg.HostConfig(binds=("/h:/",)), cfg.HostConfig(binds=("vol:/.",)), cfg.HostConfig(tmpfs={"//": ""})):
            e = self.assertRaises(InvalidArgument, cfg.mounts_of, host)
            self.assertEqual(str(e), "invalid mount config: destination can't be '/'")
        e = self.assertRaises(InvalidArgument, cfg.validate_mount,
                              cfg.MountSpec(type="tmpfs", target="/sys/fs/cgroup"))
        self.assertIn("inside /sys", str(e))
        self.assertEqual([m.target for m in cfg.mounts_of(cfg.HostConfig(binds=("/l:/proc/meminfo", "/p:/process")))],
                         ["/proc/meminfo", "/process"])

    def test_options_of_another_type(self) -> None:
        """
        --mount options of another type of mount are refused, as docker's
        are, not taken and ignored.
        """
        for spec, message in [
                (cfg.MountSpec(type="tmpfs", target="/t", source="x"), "field Source must not be specified"),
                (cfg.MountSpec(type="bind", target="/t", source="/h", volume_nocopy=True),
                 "cannot mix 'volume-*' options with mount type 'bind'"),
                (cfg.MountSpec(type="volume", target="/t", tmpfs_size=1024),
                 "cannot mix 'tmpfs-*' options with mount type 'volume'"),
                (cfg.MountSpec(type="bind", target="/t", source="/h", tmpfs_mode=0o700),
                 "cannot mix 'tmpfs-*' options with mount type 'bind'")]:
            e = self.assertRaises(InvalidArgument, cfg.validate_mount, spec)
            self.assertIn(message, str(e), spec)
        cfg.validate_mount(cfg.MountSpec(type="volume", target="/t", volume_nocopy=True))
        cfg.validate_mount(cfg.MountSpec(type="tmpfs", target="/t", tmpfs_size=1024, tmpfs_mode=0o700))

    def test_sizes(self) -> None:
        self.assertEqual([parse_bytes(s) for s in ("100", "64m", "1g", "1.5k")],
                         [100, 64 * 1024**2, 1024**3, 1536])
        self.assertRaises(InvalidArgument, parse_bytes, "lots")


class ValidationTests(SynchronousTestCase):
    def check(self, message: str, **host: object) -> None:
        e = self.assertRaises(InvalidArgument, cfg.validate, cfg.ContainerConfig(image="x"), cfg.HostConfig(**host), 2)  # type: ignore[arg-type]
        self.assertIn(message, str(e))

    def test_refusals(self) -> None:
        self.check("invalid restart policy 'sometimes'", restart_policy=cfg.RestartPolicy("sometimes"))
        self.check("maximum retry count cannot be used", restart_policy=cfg.RestartPolicy("always", 3))
        self.check("Conflicting options: --restart and --rm", auto_remove=True, restart_policy=cfg.RestartPolicy("always"))
        self.check("Minimum memory limit allowed is 6MB", resources=Resources(memory=1024))
        self.check("Range of CPUs is from 0.01 to 2.00", resources=Resources(nano_cpus=3 * 10**9))
        self.check("unknown capability", cap_add=("CAP_FLY",))
        self.check("Invalid --security-opt", security_opt=("bogus",))
        self.check("bad format", extra_hosts=("nocolon",))
        e = self.assertRaises(NotFound, cfg.validate, cfg.ContainerConfig(image="x"),
                              cfg.HostConfig(network_mode="no/net"), 2)
        self.assertEqual(str(e), "network no/net not found")

    def test_exec_refusals(self) -> None:
        """
        An exec session's process is refused with docker's messages: no
        command, an environment entry that is empty or has no name, a NUL
        byte in any argument, a relative working directory.
        """
        refused = [
            (ExecProcess(args=()), "No exec command specified"),
            (ExecProcess(args=("true",), env=("A=1", "")), "invalid environment variable: ''"),
            (ExecProcess(args=("true",), env=("=x",)), "invalid environment variable: '=x'"),
            (ExecProcess(args=("echo", "a\0b")), "invalid argument 'a\\x00b': contains a NUL byte"),
            (ExecProcess(args=("true",), user="ro\0ot"), "invalid argument 'ro\\x00ot': contains a NUL byte"),
            (ExecProcess(args=("true",), cwd="tmp"),
             "the working directory 'tmp' is invalid, it needs to be an absolute path"),
        ]
        for process, message in refused:
            e = self.assertRaises(InvalidArgument, cfg.validate_exec, process)
            self.assertEqual(str(e), message)
        cfg.validate_exec(ExecProcess(args=("sh", "-c", "true"), env=("A=", "B=2"), cwd="/tmp", user="1:1"))

    def test_signals(self) -> None:
        self.assertEqual([cfg.signal_number(s) for s in ("TERM", "SIGKILL", "9", "hup")], [15, 9, 9, 1])
        self.assertRaises(InvalidArgument, cfg.signal_number, "SIGNOPE")
        self.assertRaises(InvalidArgument, cfg.signal_number, "99")

    def test_capabilities(self) -> None:
        self.assertEqual(cfg.normalize_capability("net_admin"), "CAP_NET_ADMIN")
        self.assertEqual(cfg.normalize_capability("all"), "ALL")


class RecordTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        A record survives JSON persistence unchanged, nested records and
        None/empty distinctions included.
        """
        record = ContainerRecord(
            id="a" * 64, name="web", created_ns=5, image="busybox", image_id="sha256:" + "b" * 64,
            config=cfg.ContainerConfig(image="busybox", cmd=("sh",), entrypoint=(), stop_timeout=3,
                                       labels={"a": "b"}, healthcheck=cfg.HealthConfig(test=("CMD", "true"))),
            host=cfg.HostConfig(mounts=(cfg.MountSpec(type="tmpfs", target="/t"),),
                                restart_policy=cfg.RestartPolicy("on-failure", 2),
                                resources=Resources(memory=10**8)),
            mounts=(MountPoint(type="volume", destination="/d", name="v", anonymous=True),),
            snapshot_key="a" * 64,
            state=State(status="exited", exit_code=3, restart_count=1),
        )
        self.assertEqual(ContainerRecord.from_json(record.to_json()), record)

    def test_hosts_and_resolv(self) -> None:
        hosts = etcfiles.hosts_file("box", extra_hosts=["db:10.0.0.2", "v6:::1", "me:host-gateway"],
                                    host_gateway="10.88.0.1")
        self.assertIn("10.0.0.2\tdb\n", hosts)
        self.assertIn("::1\tv6\n", hosts)
        self.assertIn("10.88.0.1\tme\n", hosts)
        self.assertIn("127.0.1.1\tbox\n", hosts)
        named = etcfiles.hosts_file(etcfiles.host_names("box", "example.com"), ["10.88.0.5"])
        self.assertTrue(named.endswith("10.88.0.5\tbox.example.com\tbox\n"), named)
        base = "nameserver 9.9.9.9\ndomain corp\noptions ndots:2\n"
        # As docker: --dns replaces the servers only, --dns-search and
        # --dns-option the search domains and options ("." for none).
        self.assertEqual(etcfiles.resolv_conf(["1.1.1.1"], base=base),
                         "nameserver 1.1.1.1\ndomain corp\noptions ndots:2\n")
        self.assertEqual(etcfiles.resolv_conf([], ["a.test", "b.test"], ["attempts:2"], base=base),
                         "nameserver 9.9.9.9\nsearch a.test b.test\noptions attempts:2\n")
        self.assertEqual(etcfiles.resolv_conf([], ["."], base=base), "nameserver 9.9.9.9\noptions ndots:2\n")
        self.assertIsNone(etcfiles.resolv_conf([]))
        self.assertIn("nameserver 1.1.1.1\n", etcfiles.resolv_conf(["1.1.1.1"]) or "")


class _Records:
    """The manager as a listing sees it: its records, resolved by name."""

    def __init__(self, *records: ContainerRecord) -> None:
        self.records = {r.id: r for r in records}

    def resolve(self, ref: str) -> ContainerRecord:
        for r in self.records.values():
            if ref in (r.id, r.name):
                return r
        raise NotFound(f"No such container: {ref}")


class ListingTests(SynchronousTestCase):
    def record(self, name: str, created_ns: int, status: str, **labels: str) -> ContainerRecord:
        return ContainerRecord(id=name * 8, name=name, created_ns=created_ns, image="busybox", image_id="",
                               config=cfg.ContainerConfig(image="busybox", labels=labels),
                               host=cfg.HostConfig(), state=State(status=status))

    def names(self, manager: _Records, filters: tuple[tuple[str, str], ...] = (), **options: Any) -> list[str]:
        return [r.name for r in listed(manager, filters, **options)]

    def test_listing(self) -> None:
        """
        Newest first; running, paused and restarting ones only unless all
        states or a limit (any but 0) are asked for; a limit above 0 keeps
        the newest; the CRI's containers only with all namespaces; every
        filter must match; a bad filter is refused with none to match.
        """
        manager = _Records(self.record("old", 1, "running", tier="web"), self.record("done", 2, "exited"),
                           self.record("held", 3, "paused", tier="db"), self.record("new", 4, "created"),
                           self.record("pod", 5, "running", **{NAMESPACE_LABEL: "k8s.io"}))
        self.assertEqual(self.names(manager), ["held", "old"])
        self.assertEqual(self.names(manager, all_states=True), ["new", "held", "done", "old"])
        self.assertEqual(self.names(manager, limit=2), ["new", "held"])
        self.assertEqual(self.names(manager, limit=-1), ["new", "held", "done", "old"])
        self.assertEqual(self.names(manager, all_namespaces=True), ["pod", "held", "old"])
        self.assertEqual(self.names(manager, (("label", "tier"), ("status", "running")), all_states=True), ["old"])
        self.assertEqual(self.names(manager, (("before", "held"),), all_states=True), ["done", "old"])
        self.assertRaises(InvalidArgument, listed, _Records(), (("bogus", "x"),))
