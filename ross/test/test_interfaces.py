"""
Every class that declares one of the engine's contracts (ross.interfaces)
provides all of it: the methods with the signatures the interface gives.
The conformance suites check behaviour (verifyObject on live objects);
this keeps every implementer, including the ones without a suite yet
(the runtime and its shim handles), honest about its methods.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementedBy
from zope.interface.verify import verifyClass

from ross import interfaces

CONTRACTS = [value for value in vars(interfaces).values()
             if isinstance(value, type(Interface)) and value is not Interface
             and value.__module__ == interfaces.__name__]


def implementers() -> list[tuple[type, Any]]:
    """
    (class, interface) for every class under ross.engine declaring a
    contract of ross.interfaces.
    """
    import ross.engine

    found = []
    for info in pkgutil.walk_packages(ross.engine.__path__, "ross.engine."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                for contract in CONTRACTS:
                    if contract in implementedBy(value).interfaces():
                        found.append((value, contract))
    return found


class ContractTests(SynchronousTestCase):
    def test_every_implementer_provides_its_contract(self) -> None:
        found = implementers()
        declared = {contract for _, contract in found}
        # Each contract has at least its real implementation.
        self.assertEqual(declared, set(CONTRACTS), [c.__name__ for c in set(CONTRACTS) - declared])
        for cls, contract in found:
            self.assertTrue(verifyClass(contract, cls), f"{cls.__name__} does not provide {contract.__name__}")
