"""
Tests for L{ross.cri.meta}: the CRI's metadata on engine containers.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.cri.meta import META_LABEL, NAMESPACE, SANDBOX, Meta, engine_name, meta_of
from ross.engine.containers.config import ContainerConfig, HostConfig
from ross.engine.containers.filters import NAMESPACE_LABEL, in_default_namespace
from ross.engine.containers.names import validate_name
from ross.engine.containers.store import ContainerRecord
from ross.errors import InvalidArgument


def record(labels: dict[str, str]) -> ContainerRecord:
    return ContainerRecord(id="a" * 64, name="n", created_ns=1, image="i", image_id="sha256:x",
                           config=ContainerConfig(image="i", labels=labels), host=HostConfig())


class MetaTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        The metadata rides on the labels and comes back equal; the CRI's
        own labels are there too, ours win over a label of the same key.
        """
        meta = Meta(kind=SANDBOX, name="web", attempt=2, uid="u", namespace="ns",
                    labels={"app": "web", META_LABEL: "spoof"}, annotations={"a": "b"}, namespace_modes=(2, 0, 1))
        labels = meta.engine_labels()
        self.assertEqual((labels["app"], labels[NAMESPACE_LABEL]), ("web", NAMESPACE))
        self.assertEqual(meta_of(record(labels)), meta)
        self.assertFalse(in_default_namespace(record(labels)))

    def test_not_ours(self) -> None:
        """
        A container without the labels, with the label outside the k8s.io
        namespace, or with one that is not our JSON, has no CRI metadata.
        """
        self.assertIsNone(meta_of(record({})))
        self.assertTrue(in_default_namespace(record({})))
        self.assertIsNone(meta_of(record({META_LABEL: Meta(kind=SANDBOX, name="x").to_json()})))
        self.assertIsNone(meta_of(record({META_LABEL: "{not json", NAMESPACE_LABEL: NAMESPACE})))

    def test_engine_name(self) -> None:
        """
        Names as dockershim made them; what cannot be in a container name
        is refused.
        """
        self.assertEqual(engine_name("POD", "web", "default", "u-1", 0), "k8s_POD_web_default_u-1_0")
        for bad in ("a b", "", "-x", "a/b"):
            self.assertRaises(InvalidArgument, engine_name, "POD", bad, "default", "u", 0)

    def test_long_engine_name(self) -> None:
        """
        Metadata longer than an engine name holds (Kubernetes allows a pod
        name of 253 characters) makes a name of 255 that is the same for
        the same metadata and differs for different metadata.
        """
        pod = "p" * 253
        name = engine_name("c", pod, "default", "u-1", 0)
        self.assertEqual(len(name), 255)
        self.assertTrue(name.startswith("k8s_c_ppp"))
        self.assertEqual(name, engine_name("c", pod, "default", "u-1", 0))
        self.assertNotEqual(name, engine_name("c", pod, "default", "u-1", 1))
        self.assertNotEqual(name, engine_name("c", pod, "default", "u-2", 0))
        validate_name(name)
