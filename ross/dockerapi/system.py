# -*- test-case-name: ross.test.integration.test_dockerapi -*-
"""
docker's system routes: C{/_ping}, C{/version}, C{/info}, C{/events},
C{/system/df} and C{/auth}.
"""

from __future__ import annotations

import platform
import time
from typing import Any, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

import ross
from ross.dockerapi.router import API_VERSION, MIN_API_VERSION, Call, Reply, Route, route, version_text
from ross.dockerapi.schema import event_json, rfc3339_ns, time_param
from ross.dockerapi.streams import Flow
from ross.engine import hostinfo
from ross.engine.engine import Engine
from ross.engine.events import Event, EventFilter, Follower
from ross.engine.registry.auth import Credentials
from ross.errors import InvalidArgument, Unavailable, Unimplemented
from ross.platforms import go_arch

#: docker's event types, and what Ross calls them where it differs.
EVENT_TYPES = ("container", "image", "volume", "network", "daemon")

#: What dockerd answers on a node that is in no swarm (clients, docker-py
#: and compose among them, take these to mean "swarm is off").
NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
                 "this node to swarm and try again.")
#: The swarm objects, all of a manager's.
SWARM_OBJECTS = ("nodes", "services", "tasks", "secrets", "configs")


def _ping(call: Call) -> Reply:
    return Reply(200, b"OK", content_type="text/plain; charset=utf-8", headers={
        "Builder-Version": "1",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Swarm": "inactive",
    })


class SystemRoutes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[Route]:
        return [
            route("GET", "/_ping", self.ping),
            route("HEAD", "/_ping", self.ping),
            route("GET", "/version", self.version),
            route("GET", "/info", self.info),
            route("GET", "/events", self.events),
            route("GET", "/system/df", self.disk_usage),
            route("POST", "/auth", self.auth),
            route("POST", "/swarm/leave", self.swarm_leave),
            route("POST", "/swarm/init", self.swarm_join),
            route("POST", "/swarm/join", self.swarm_join),
            route("GET", "/swarm", self.not_a_manager),
            route("GET", "/swarm/unlockkey", self.not_a_manager),
            route("POST", "/swarm/{action}", self.not_a_manager),
            route("GET", "/plugins", self.plugins),
            *(route(method, f"/{kind}{tail}", self.not_a_manager) for kind in SWARM_OBJECTS
              for method in ("GET", "POST", "DELETE") for tail in ("", "/{rest:.*}")),
        ]

    async def ping(self, call: Call) -> Reply:
        return _ping(call)

    async def version(self, call: Call) -> Any:
        arch = go_arch()
        details = {
            "ApiVersion": version_text(API_VERSION),
            "MinAPIVersion": version_text(MIN_API_VERSION),
            "Arch": arch,
            "Os": "linux",
            "KernelVersion": platform.release(),
            "GitCommit": "",
            "GoVersion": f"python{platform.python_version()}",
            "BuildTime": "",
            "Experimental": "false",
        }
        return {
            "Platform": {"Name": f"Ross {ross.__version__}"},
            "Components": [{"Name": "Engine", "Version": ross.__version__, "Details": details}],
            "Version": ross.__version__,
            "ApiVersion": version_text(API_VERSION),
            "MinAPIVersion": version_text(MIN_API_VERSION),
            "GitCommit": "",
            "GoVersion": details["GoVersion"],
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": details["KernelVersion"],
            "BuildTime": "",
        }

    async def info(self, call: Call) -> Any:
        engine = self._engine
        config = engine.config
        facts = await deferToThread(hostinfo.host_facts)
        counts = engine.counts()
        cgroup = facts["cgroup_version"]
        return {
            "ID": config.root.name,
            "Containers": counts["containers"],
            "ContainersRunning": counts["containers_running"],
            "ContainersPaused": counts["containers_paused"],
            "ContainersStopped": counts["containers_stopped"],
            "Images": counts["images"],
            "Driver": "overlayfs",
            "DriverStatus": [["Root Dir", str(config.root / "snapshots" / "overlayfs")]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": None,
                        "Log": ["json-file", "none"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": False,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "BridgeNfIptables": False,
            "BridgeNfIp6tables": False,
            "Debug": False,
            "NFd": 0,
            "OomKillDisable": False,
            "NGoroutines": 0,
            "SystemTime": rfc3339_ns(time.time_ns()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if cgroup == "v2" else "1",
            "NEventsListener": engine.events.subscriber_count,
            "KernelVersion": facts["kernel_version"],
            "OperatingSystem": facts["operating_system"],
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": facts["architecture"],
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "AllowNondistributableArtifactsCIDRs": [],
                "AllowNondistributableArtifactsHostnames": [],
                "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                "IndexConfigs": {host: {"Name": host, "Mirrors": [], "Secure": False, "Official": False}
                                 for host in config.insecure_registries},
                "Mirrors": [],
            },
            "NCPU": facts["ncpu"],
            "MemTotal": facts["mem_total"],
            "GenericResources": None,
            "DockerRootDir": str(config.root),
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": facts["name"],
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": ross.__version__,
            "Runtimes": {"ross": {"path": "ross-shim"}},
            "DefaultRuntime": "ross",
            # Compose and the CLI read this to decide that swarm is off.
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            # Containers run on while the daemon restarts (their shims wait).
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": facts["security_options"],
            "CDISpecDirs": [],
            "Warnings": None,
        }

    async def events(self, call: Call) -> None:
        """
        The event stream, replayed from C{since}, until C{until} (forever
        without), with docker's filters (compose follows its project's
        containers by label).
        """
        filters = call.filters()
        types = set(filters.pop("type", []))
        unknown = types - set(EVENT_TYPES)
        if unknown:
            raise InvalidArgument(f"invalid filter 'type={sorted(unknown)[0][:64]}'")
        actions = frozenset(filters.pop("event", []))
        objects = {key: filters.pop(key, []) for key in ("container", "image", "volume", "network")}
        labels = [value.partition("=") for value in filters.pop("label", [])]
        filters.pop("scope", None)
        filters.pop("daemon", None)
        if filters:
            raise InvalidArgument(f"invalid filter '{sorted(filters)[0][:64]}'")
        now = self._engine.reactor.seconds()
        since = time_param(call.query("since"), now)
        until = time_param(call.query("until"), now)
        def wanted(event: Event, attributes: Mapping[str, str]) -> bool:
            for kind, values in objects.items():
                if not values:
                    continue
                if kind == "image" and event.type == "container":
                    names = {attributes.get("image", "")}
                elif event.type != kind:
                    return False
                else:
                    names = {event.actor_id, attributes.get("name", "")}
                if not any(n and (n == v or (n == event.actor_id and n.startswith(v))) for n in names
                           for v in values):
                    return False
            return all(k in attributes and (not eq or attributes[k] == v) for k, eq, v in labels)

        call.start()
        flow = Flow(call)

        def send(event: Event) -> Deferred[None]:
            if not wanted(event, event.attributes):
                return succeed(None)
            call.write_json(event_json(event))
            return flow.ready()

        follower = Follower(self._engine.events, self._engine.reactor,
                            EventFilter(types=frozenset(types or EVENT_TYPES), actions=actions), send,
                            lambda resume, lost, reason: succeed(None), until)
        try:
            await follower.run(0, since or 0)
        finally:
            flow.close()

    async def disk_usage(self, call: Call) -> Any:
        from ross.dockerapi.schema import container_summary, image_summary, volume_json

        engine = self._engine
        kinds = set(call.queries("type")) or {"container", "image", "volume", "build-cache"}
        result: dict[str, Any] = {"LayersSize": 0, "Images": [], "Containers": [], "Volumes": [], "BuildCache": []}
        if "image" in kinds:
            images = await engine.images.list(all=False)
            result["Images"] = [image_summary(i) for i in images]
            result["LayersSize"] = sum(i.size for i in images)
        if "container" in kinds:
            for record in sorted(engine.containers.records.values(), key=lambda r: -r.created_ns):
                view = await engine.containers.view(record, size=True)
                result["Containers"].append(container_summary(record, view.networks, time.time_ns(), view.size_rw))
        if "volume" in kinds:
            for volume in engine.volumes.list():
                users = len(engine.volumes.users_of(volume.name))
                result["Volumes"].append(volume_json(volume, users, await engine.volumes.size_of(volume.name)))
        return result

    async def not_a_manager(self, call: Call) -> Any:
        raise Unavailable(NOT_A_MANAGER)

    async def swarm_leave(self, call: Call) -> Any:
        raise Unavailable("This node is not part of a swarm")

    async def swarm_join(self, call: Call) -> Any:
        raise Unimplemented("Ross runs no swarm: it serves one node's containers")

    async def plugins(self, call: Call) -> Any:
        # No plugins: the volume and network drivers are built in.
        return []

    async def auth(self, call: Call) -> Any:
        body = call.json() or {}
        if not isinstance(body, dict):
            raise InvalidArgument("invalid auth configuration: expected an object")
        username, password = str(body.get("username") or ""), str(body.get("password") or "")
        token = str(body.get("identitytoken") or body.get("IdentityToken") or "")
        if not username and not token:
            raise InvalidArgument("login needs a username (or an identity token)")
        server = str(body.get("serveraddress") or "")
        status = await self._engine.registry.login(server, Credentials(username, password, token))
        return {"Status": status, "IdentityToken": ""}
