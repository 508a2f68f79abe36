# -*- test-case-name: ross.test.test_containers_config,ross.test.integration.test_containers -*-
"""
docker's container list filters (``ps --filter``), shared by the APIs.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping, Protocol

from ross.engine.containers.store import STATUSES, ContainerRecord
from ross.errors import InvalidArgument
from ross.reference import parse_normalized

Matcher = Callable[[ContainerRecord], bool]

#: The namespace of a container that is not the user's own: Kubernetes'
#: (made through the CRI) carry "k8s.io", as containerd names it. Plain
#: listings (ross ps, docker ps) leave such containers out.
NAMESPACE_LABEL = "io.ross.namespace"


def in_default_namespace(record: ContainerRecord) -> bool:
    """
    Whether C{record} is the user's own, listed by plain listings.
    """
    return NAMESPACE_LABEL not in record.config.labels


class Resolver(Protocol):
    """What a filter needs of the manager: containers by name or ID."""

    def resolve(self, ref: str) -> ContainerRecord: ...


class Registry(Resolver, Protocol):
    """What a listing needs of the manager: its containers, too."""

    @property
    def records(self) -> Mapping[str, ContainerRecord]: ...


def _normalized(name: str) -> str | None:
    """C{name} as docker spells it in full ("docker.io/library/busybox:latest"); None for no name."""
    try:
        return str(parse_normalized(name).with_default_tag())
    except InvalidArgument:
        return None


def container_matcher(key: str, value: str, manager: Resolver) -> Matcher:
    """
    A predicate for the filter C{key}=C{value}; InvalidArgument for an
    unknown filter or a value it cannot take.
    """
    if key == "id":
        return lambda r: r.id.startswith(value)
    if key == "name":
        # A substring, with ^ and $ anchors as docker's common use; not a
        # full regular expression, which a client could make backtrack
        # for hours on the reactor. Matched against the name with docker's
        # leading slash and without, as docker's ("name=^/web$").
        anchored_start, anchored_end = value.startswith("^"), value.endswith("$") and len(value) > 1
        text = value[1 if anchored_start else 0:len(value) - 1 if anchored_end else len(value)]

        def matches(name: str) -> bool:
            return (name == text if anchored_start and anchored_end
                    else name.startswith(text) if anchored_start
                    else name.endswith(text) if anchored_end
                    else text in name)

        return lambda r: matches(r.name) or matches("/" + r.name)
    if key == "label":
        k, eq, v = value.partition("=")
        return lambda r: k in r.config.labels and (not eq or r.config.labels[k] == v)
    if key == "status":
        if value not in STATUSES:
            raise InvalidArgument(
                f"invalid filter 'status={value}': use created, restarting, running, removing, paused, exited or dead")
        return lambda r: r.state.status == value
    if key == "exited":
        if not re.fullmatch(r"-?[0-9]{1,9}", value):
            raise InvalidArgument(f"invalid filter 'exited={value[:64]}': not a number")
        return lambda r: r.state.status == "exited" and r.state.exit_code == int(value)
    if key == "ancestor":
        # The image as named at create, in any of docker's spellings
        # ("busybox", "busybox:latest", "docker.io/library/busybox"), or
        # its ID or an ID prefix, with or without "sha256:".
        wanted = _normalized(value)
        prefix = value if value.startswith("sha256:") else f"sha256:{value}"
        return lambda r: (r.image == value or (wanted is not None and _normalized(r.image) == wanted)
                          or r.image_id.startswith(prefix))
    if key in ("before", "since"):
        pivot = manager.resolve(value)
        if key == "before":
            return lambda r: r.created_ns < pivot.created_ns
        return lambda r: r.created_ns > pivot.created_ns
    if key == "health":
        if value not in ("starting", "healthy", "unhealthy", "none"):
            raise InvalidArgument(
                f"Unrecognised filter value for health: {value[:64]}: use starting, healthy, unhealthy or none")
        return lambda r: (r.state.health or "none") == value
    if key == "volume":
        return lambda r: any(m.name == value or m.destination == value or m.source == value for m in r.mounts)
    if key == "network":
        wanted = "bridge" if value == "default" else value
        return lambda r: (r.host.network_mode or "bridge").replace("default", "bridge") == wanted
    if key == "is-task":
        # No swarm: no container is a task.
        return lambda r: value in ("false", "0")
    raise InvalidArgument(f"invalid filter '{key}'")


def listed(manager: Registry, filters: Iterable[tuple[str, str]], all_states: bool = False, limit: int = 0,
           all_namespaces: bool = False) -> list[ContainerRecord]:
    """
    docker's container listing (``ps``): the containers every filter
    (key, value) matches, newest first; without C{all_states} or a
    C{limit} (any but 0), only those running, paused or restarting; the
    user's own (L{in_default_namespace}) unless C{all_namespaces}; the
    newest C{limit} when it is above 0. InvalidArgument for a filter
    docker refuses, even with no container to match.
    """
    matchers = [container_matcher(key, value, manager) for key, value in filters]
    records = sorted(manager.records.values(), key=lambda r: r.created_ns, reverse=True)
    if not all_states and not limit:
        records = [r for r in records if r.state.status in ("running", "paused", "restarting")]
    records = [r for r in records if all(m(r) for m in matchers)
               and (all_namespaces or in_default_namespace(r))]
    if limit > 0:
        records = records[:limit]
    return records
