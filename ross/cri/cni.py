# -*- test-case-name: ross.test.integration.test_cri_cni -*-
"""
Pod networking through CNI, as kubelet's runtimes do it: the network
configuration is the first file (by name) of the configuration directory
(``/etc/cni/net.d``: ``*.conflist``, ``*.conf``, ``*.json``), its plugins
are executables found in the plugin directories (``/opt/cni/bin``,
Debian's ``/usr/lib/cni``), and each is run with the CNI's environment
(``CNI_COMMAND``, ``CNI_NETNS``...) and its configuration on stdin: ADD in
order when a pod's sandbox starts, DEL in reverse order when it stops,
each given the result before it (``prevResult``). The result of ADD is
kept under the daemon's root (so a pod started before a restart is torn
down after it) and gives the pod its address.

With no configuration, pods get Ross's own bridge network (the fallback
the CRI's SPEC section allows). Everything a configuration holds is
checked before anything runs: a plugin is named by a bare file name, and
a plugin's answer is bounded and must be JSON.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from ross.errors import FailedPrecondition, InvalidArgument

#: Where kubelet's runtimes look for the network configuration.
DEFAULT_CONF_DIR = "/etc/cni/net.d"
#: Where the plugins are looked for: the CNI's usual place, then Debian's.
DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
#: The pod's interface in its network namespace.
IFNAME = "eth0"
#: A plugin that does not answer within this is killed and the call fails.
PLUGIN_TIMEOUT = 60
#: The most a configuration file or a plugin's answer may hold.
MAX_DOCUMENT = 1024 * 1024
_SUFFIXES = (".conflist", ".conf", ".json")


class CNIError(FailedPrecondition):
    """
    A plugin failed (its CNI error, or how it died), or the configuration
    cannot be used: the pod cannot get its network.
    """


@attrs.frozen
class NetworkConfig:
    """
    One CNI network: its name and version, its plugins' configurations in
    order, the file it came from.
    """

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    source: str


@attrs.frozen
class PodNetwork:
    """
    What a pod's network setup needs to know of the pod (CNI_ARGS and the
    portMappings capability).
    """

    namespace: str
    name: str
    uid: str
    #: (host port, container port, protocol, host IP) of the pod.
    port_mappings: tuple[tuple[int, int, str, str], ...] = ()


def load_config(conf_dir: str) -> NetworkConfig | None:
    """
    The network of the first configuration file in C{conf_dir} by name,
    None when there is none; InvalidArgument naming the file when it
    cannot be used. Blocking.
    """
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(_SUFFIXES) and not n.startswith("."))
    except FileNotFoundError:
        return None
    for name in names:
        path = os.path.join(conf_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
        if len(data) > MAX_DOCUMENT:
            raise InvalidArgument(f"CNI configuration {path} is larger than {MAX_DOCUMENT} bytes")
        return parse_config(data, path)
    return None


def parse_config(data: bytes, source: str) -> NetworkConfig:
    """
    A configuration list (``plugins``), or a single plugin's configuration
    (a ``.conf``), as a L{NetworkConfig}.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"CNI configuration {source} is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"CNI configuration {source} is not a JSON object")
    plugins = document.get("plugins") if "plugins" in document else [document]
    if not isinstance(plugins, list) or not plugins:
        raise InvalidArgument(f"CNI configuration {source}: 'plugins' must be a non-empty list")
    name, version = document.get("name"), document.get("cniVersion", "0.4.0")
    if not isinstance(name, str) or not name or not isinstance(version, str):
        raise InvalidArgument(f"CNI configuration {source}: 'name' and 'cniVersion' must be strings")
    for plugin in plugins:
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind or "/" in kind or kind in (".", ".."):
            raise InvalidArgument(f"CNI configuration {source}: every plugin needs a 'type', a plain file name")
    return NetworkConfig(name=name, cni_version=version, plugins=tuple(plugins), source=source)


def plugin_input(network: NetworkConfig, plugin: Mapping[str, Any], pod: PodNetwork,
                 previous: Mapping[str, Any] | None) -> bytes:
    """
    What a plugin reads on stdin: its configuration with the network's
    name and version, the runtime's values of the capabilities it asks
    for, and the result before it.
    """
    conf = dict(plugin)
    conf["name"], conf["cniVersion"] = network.name, network.cni_version
    capabilities = plugin.get("capabilities")
    if isinstance(capabilities, dict) and capabilities.get("portMappings") and pod.port_mappings:
        conf["runtimeConfig"] = {"portMappings": [
            {"hostPort": host, "containerPort": container, "protocol": protocol, "hostIP": address}
            for host, container, protocol, address in pod.port_mappings]}
    if previous is not None:
        conf["prevResult"] = previous
    return json.dumps(conf).encode()


def address_of(result: Mapping[str, Any]) -> str:
    """
    The pod's first address in a CNI result ("" for none): 1.0's and
    0.4's C{ips}, or 0.2's C{ip4}.
    """
    ips = result.get("ips")
    if isinstance(ips, list):
        for ip in ips:
            address = ip.get("address") if isinstance(ip, dict) else None
            if isinstance(address, str):
                return address.partition("/")[0]
    ip4 = result.get("ip4")
    address = ip4.get("ip") if isinstance(ip4, dict) else None
    if isinstance(address, str):
        return address.partition("/")[0]
    return ""


class CNI:
    """
    The pods' CNI network: set up and torn down by running the plugins in
    threads (a plugin may take seconds), results kept in C{state_dir}.
    """

    def __init__(self, reactor: Any, conf_dir: str, bin_dirs: Sequence[str], state_dir: Path) -> None:
        self._reactor = reactor
        self.conf_dir = conf_dir
        self.bin_dirs = tuple(bin_dirs)
        self._state = state_dir
        #: The address of each sandbox on its network, as its record says
        #: (read once here, at the daemon's start, kept up to date after).
        self._addresses = {path.stem: address_of(record["result"])
                           for path in _records(state_dir) if (record := self._load(path.stem)) is not None}

    def _thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def config(self) -> Deferred[NetworkConfig | None]:
        """
        The network new pods join, read again each time (as kubelet's
        runtimes watch the directory); None: none is configured.
        """
        return self._thread(load_config, self.conf_dir)

    async def add(self, sandbox_id: str, netns: str, network: NetworkConfig, pod: PodNetwork) -> str:
        """
        Put the sandbox's network namespace C{netns} on C{network}; its
        address. A plugin that fails undoes what the ones before it did.
        """
        result: Mapping[str, Any] | None = None
        done: list[Mapping[str, Any]] = []
        try:
            for plugin in network.plugins:
                result = await self._thread(self._invoke, "ADD", sandbox_id, netns, network, plugin, pod, result)
                done.append(plugin)
        except BaseException:
            undo = attrs.evolve(network, plugins=tuple(done))
            try:
                await self._thread(self._delete, sandbox_id, netns, undo, pod, result)
            except CNIError:
                pass
            raise
        record = {"network": attrs.asdict(network), "pod": attrs.asdict(pod), "result": result or {}}
        await self._thread(self._save, sandbox_id, record)
        self._addresses[sandbox_id] = address_of(result or {})
        return self._addresses[sandbox_id]

    async def delete(self, sandbox_id: str, netns: str) -> None:
        """
        Take the sandbox off the network it was put on (nothing if it was
        not, or was taken off already). C{netns} may be "" when the
        namespace is gone: the plugins still free what they hold.
        """
        record = await self._thread(self._load, sandbox_id)
        if record is None:
            return
        network = NetworkConfig(**{**record["network"], "plugins": tuple(record["network"]["plugins"])})
        pod = PodNetwork(**{**record["pod"], "port_mappings": tuple(tuple(m) for m in record["pod"]["port_mappings"])})
        await self._thread(self._delete, sandbox_id, netns, network, pod, record["result"])
        await self._thread(self._forget, sandbox_id)
        self._addresses.pop(sandbox_id, None)

    def address(self, sandbox_id: str) -> str:
        """
        The sandbox's address on its CNI network, "" when it has none.
        """
        return self._addresses.get(sandbox_id, "")

    # ----------------------------------------------------------- in threads

    def _delete(self, sandbox_id: str, netns: str, network: NetworkConfig, pod: PodNetwork,
                result: Mapping[str, Any] | None) -> None:
        errors = []
        for plugin in reversed(network.plugins):
            try:
                self._invoke("DEL", sandbox_id, netns, network, plugin, pod, result)
            except CNIError as e:
                errors.append(str(e))
        if errors:
            raise CNIError("; ".join(errors))

    def _invoke(self, command: str, sandbox_id: str, netns: str, network: NetworkConfig,
                plugin: Mapping[str, Any], pod: PodNetwork, previous: Mapping[str, Any] | None) -> Any:
        kind = plugin["type"]
        binary = self._find(kind)
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": sandbox_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": os.pathsep.join(self.bin_dirs),
            "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
                         f"K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={pod.uid}"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        try:
            done = subprocess.run([binary], input=plugin_input(network, plugin, pod, previous), env=env,
                                  capture_output=True, timeout=PLUGIN_TIMEOUT, cwd="/")
        except subprocess.TimeoutExpired:
            raise CNIError(f"CNI plugin {kind} ({command}) did not answer within {PLUGIN_TIMEOUT}s")
        except OSError as e:
            raise CNIError(f"CNI plugin {kind} cannot run: {e.strerror}")
        if done.returncode != 0:
            raise CNIError(f"CNI plugin {kind} failed ({command}): {_error_text(done.stdout, done.stderr)}")
        if command != "ADD":
            return None
        if len(done.stdout) > MAX_DOCUMENT:
            raise CNIError(f"CNI plugin {kind} answered more than {MAX_DOCUMENT} bytes")
        try:
            result = json.loads(done.stdout)
        except ValueError:
            raise CNIError(f"CNI plugin {kind} answered no JSON: {done.stdout[:200]!r}")
        if not isinstance(result, dict):
            raise CNIError(f"CNI plugin {kind} answered {type(result).__name__}, not a result object")
        return result

    def _find(self, kind: str) -> str:
        for directory in self.bin_dirs:
            path = os.path.join(directory, kind)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise CNIError(f"CNI plugin {kind} not found in {os.pathsep.join(self.bin_dirs)}")

    def _save(self, sandbox_id: str, record: Mapping[str, Any]) -> None:
        self._state.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._state / f"{sandbox_id}.json"
        partial = path.with_suffix(".partial")
        with open(partial, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)

    def _load(self, sandbox_id: str) -> Any:
        try:
            with open(self._state / f"{sandbox_id}.json") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            # A torn record cannot happen (written whole, then renamed);
            # one that is not JSON is not ours to trust: no network known.
            return None

    def _forget(self, sandbox_id: str) -> None:
        try:
            os.unlink(self._state / f"{sandbox_id}.json")
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def _records(state_dir: Path) -> list[Path]:
    try:
        return sorted(state_dir.glob("*.json"))
    except OSError:
        return []


def _error_text(stdout: bytes, stderr: bytes) -> str:
    """
    A failed plugin's CNI error (msg and details), else what it printed.
    """
    try:
        error = json.loads(stdout)
        if isinstance(error, dict) and "msg" in error:
            details = f": {error['details']}" if error.get("details") else ""
            return f"{error['msg']}{details} (code {error.get('code')})"
    except ValueError:
        pass
    text = (stdout or stderr).decode(errors="replace").strip()
    return text[:500] or "no message"


def port_mappings(mappings: Iterable[Any], protocols: Mapping[Any, str]) -> tuple[tuple[int, int, str, str], ...]:
    """
    The pod's host ports (those with one) as the portMappings capability
    gives them.
    """
    return tuple((m.host_port, m.container_port, protocols[m.protocol], m.host_ip)
                 for m in mappings if m.host_port)
