"""
Every class that declares one of the engine's contracts (ross.interfaces),
the real drivers under ross.engine and the fakes of ross.testing.fakes,
provides all of it: the methods with the signatures the interface gives
(verifyClass), and, on an instance as it is built, the attributes too
(verifyObject). The conformance suites check behaviour; this keeps every
implementer, including the ones without a suite yet (the runtime and its
shim handles), honest about its methods.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementedBy
from zope.interface.verify import verifyClass, verifyObject

from ross import interfaces
from ross.engine.content.store import ContentStore
from ross.engine.events import EventBus
from ross.engine.images.store import ImageStore
from ross.engine.reactors import engine_reactor
from ross.engine.runtime.runtime import Runtime, ShimHandle
from ross.engine.snapshots import OverlaySnapshotter
from ross.protocols.shim import ShimProtocol
from ross.testing import fakes
from ross.testing.fakes import FakeImageStore, FakeRuntime, FakeShim, MemorySnapshotter

CONTRACTS = [value for value in vars(interfaces).values()
             if isinstance(value, type(Interface)) and value is not Interface
             and value.__module__ == interfaces.__name__]


def _modules() -> list[Any]:
    import ross.engine

    engine = [importlib.import_module(info.name)
              for info in pkgutil.walk_packages(ross.engine.__path__, "ross.engine.")]
    return engine + [fakes]


def implementers() -> list[tuple[type, Any]]:
    """
    (class, interface) for every class under ross.engine, and every fake
    of ross.testing.fakes, declaring a contract of ross.interfaces.
    """
    found = []
    for module in _modules():
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                for contract in CONTRACTS:
                    if contract in implementedBy(value).interfaces():
                        found.append((value, contract))
    return found


def _instances(test: SynchronousTestCase) -> dict[type, Callable[[], object]]:
    """
    How to build an instance of each implementer as the daemon or a test
    does, without starting it (nothing is opened or spawned).
    """
    reactor = engine_reactor(Clock())
    root = Path(test.mktemp()).absolute()
    runtime = Runtime(reactor, root / "exec")
    return {
        ContentStore: lambda: ContentStore(reactor, root / "content"),
        ImageStore: lambda: ImageStore(reactor, root / "images", ContentStore(reactor, root / "content"),
                                       MemorySnapshotter(), events=EventBus(reactor)),
        Runtime: lambda: runtime,
        ShimHandle: lambda: ShimHandle(runtime, "c0ffee", ShimProtocol(), pid=2, shim_pid=1, status="running"),
        OverlaySnapshotter: lambda: OverlaySnapshotter(reactor, root / "snapshots"),
        MemorySnapshotter: MemorySnapshotter,
        FakeImageStore: FakeImageStore,
        FakeRuntime: lambda: FakeRuntime(test),
        FakeShim: lambda: FakeRuntime(test).shim("c0ffee"),
    }


class ContractTests(SynchronousTestCase):
    def test_every_implementer_provides_its_contract(self) -> None:
        """
        Every contract has at least its real implementation, and every
        implementer's class provides each contract it declares.
        """
        found = implementers()
        declared = {contract for cls, contract in found if not cls.__module__.startswith("ross.testing.")}
        self.assertEqual(declared, set(CONTRACTS), [c.__name__ for c in set(CONTRACTS) - declared])
        for cls, contract in found:
            self.assertTrue(verifyClass(contract, cls), f"{cls.__name__} does not provide {contract.__name__}")

    def test_fakes_are_found(self) -> None:
        """
        The walk finds the fakes, so the test above checks them too.
        """
        found = implementers()
        self.assertIn((MemorySnapshotter, interfaces.ISnapshotter), found)
        self.assertIn((FakeRuntime, interfaces.IRuntime), found)
        self.assertIn((FakeShim, interfaces.IShim), found)
        self.assertIn((FakeImageStore, interfaces.IImageStore), found)

    def test_every_instance_provides_its_contract(self) -> None:
        """
        An instance of every implementer, real or fake, built as it is
        used, provides its contracts with their attributes (verifyObject).
        """
        found = implementers()
        instances = _instances(self)
        self.assertEqual(set(instances), {cls for cls, _ in found}, "an implementer without a way to build it here")
        for cls, contract in found:
            self.assertTrue(verifyObject(contract, instances[cls]()),
                            f"a {cls.__name__} does not provide {contract.__name__}")
