# -*- test-case-name: ross.test.test_cri_meta -*-
"""
What the CRI knows of a pod sandbox or a container that the engine does
not: kept as JSON in one label of the engine container (L{META_LABEL}),
beside the namespace label that hides it from plain listings. Written once
at create; the engine record holds the rest (state, times, exit).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

import attrs

from ross.engine.containers.filters import NAMESPACE_LABEL
from ross.engine.containers.store import ContainerRecord
from ross.errors import InvalidArgument

#: containerd's namespace for Kubernetes' containers.
NAMESPACE = "k8s.io"
META_LABEL = "io.ross.cri"
SANDBOX = "sandbox"
CONTAINER = "container"
#: Our own labels, never shown as the CRI's.
OWN_LABELS = (NAMESPACE_LABEL, META_LABEL)

# What the engine takes as a container name (ross.engine.containers.names).
_NAME_PART = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
MAX_NAME = 255


@attrs.frozen
class Meta:
    """
    A CRI object's metadata. C{kind} is L{SANDBOX} or L{CONTAINER}; for a
    sandbox C{uid} and C{namespace} are the pod's and C{log_directory}
    where its containers log; for a container C{sandbox_id} is its pod's,
    C{log_path} the full path of its log (empty: none) and C{image} the
    image as kubelet named it.
    """

    kind: str
    name: str
    attempt: int = 0
    uid: str = ""
    namespace: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    sandbox_id: str = ""
    log_directory: str = ""
    log_path: str = ""
    image: str = ""
    runtime_handler: str = ""
    #: The pod's network namespace is the host's (hostNetwork).
    host_network: bool = False
    #: A sandbox's namespace modes: NamespaceMode numbers (network, pid, ipc).
    namespace_modes: tuple[int, int, int] = (0, 0, 0)

    def to_json(self) -> str:
        data = attrs.asdict(self)
        data["namespace_modes"] = list(self.namespace_modes)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Meta:
        data = json.loads(text)
        known = {f.name for f in attrs.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if "namespace_modes" in data:
            data["namespace_modes"] = tuple(data["namespace_modes"])
        return cls(**data)

    def engine_labels(self) -> dict[str, str]:
        """
        The engine container's labels: the CRI's, then ours (which win).
        """
        return {**self.labels, NAMESPACE_LABEL: NAMESPACE, META_LABEL: self.to_json()}


def meta_of(record: ContainerRecord) -> Meta | None:
    """
    The CRI metadata of an engine container, None for one the CRI did not
    make (or whose label is not ours to read).
    """
    text = record.config.labels.get(META_LABEL)
    if text is None or record.config.labels.get(NAMESPACE_LABEL) != NAMESPACE:
        return None
    try:
        return Meta.from_json(text)
    except (ValueError, TypeError):
        return None


def engine_name(*parts: object) -> str:
    """
    The engine container's name for a CRI object, from its metadata, as
    dockershim named them (k8s_POD_name_namespace_uid_attempt): unique for
    what kubelet must not create twice. Kubernetes' names can add up to
    more than an engine name holds (a pod name alone may have 253
    characters): a longer one is cut and ends with a digest of the whole,
    so it stays unique and the same for the same metadata.
    InvalidArgument when a part cannot be in a name.
    """
    texts = [str(p) for p in parts]
    for text in texts:
        if not _NAME_PART.match(text):
            raise InvalidArgument(f"invalid metadata {text[:64]!r}: letters, digits, '_', '.' and '-' only")
    name = "k8s_" + "_".join(texts)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        name = f"{name[:MAX_NAME - len(digest) - 1]}_{digest}"
    return name


def strings(mapping: Mapping[str, Any]) -> dict[str, str]:
    """
    A protobuf map as a plain dict.
    """
    return {str(k): str(v) for k, v in mapping.items()}
