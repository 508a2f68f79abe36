"""
Generated protobuf and gRPC modules of the ross.v1 API.

Everything here except this file (which keeps protobuf's start-up lean:
L{defer_unused}) is written by ``python -m ross.protogen``
from ``proto/ross/v1/*.proto`` and is never edited by hand.
"""

import importlib
import sys
import types

#: protobuf's modules that others of its modules import but that nothing
#: uses with the C implementation (upb) Ross runs on:
#:   - C{python_message}, the pure-Python messages (with it C{text_format},
#:     C{datetime}, C{pickle}: 16 modules, 8-10 ms of every CLI start);
#:   - C{descriptor_database}, for pure-Python descriptor pools: a return
#:     annotation in it (C{Optional['descriptor_pb2....']}) makes typing
#:     C{compile()} a string, and the process's first C{compile()} sets up
#:     the interpreter's AST types, 1-1.6 ms of every CLI start.
DEFERRED = ("google.protobuf.internal.python_message", "google.protobuf.descriptor_database")


def defer_unused() -> None:
    """
    Register a stand-in for each module of L{DEFERRED} that imports the
    real module at the first use of any of its names: where something does
    use one (the pure-Python implementation, a pool of its own), it gets
    the real module, one attribute lookup later. Done when this package is
    imported, which is before protobuf in the CLI; the daemon imports this
    package first.
    """
    for name in DEFERRED:
        if name not in sys.modules:
            sys.modules[name] = _stand_in(name)


def _stand_in(module: str) -> types.ModuleType:
    stand_in = types.ModuleType(module)

    def load(name: str) -> object:
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]
        return getattr(importlib.import_module(module), name)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    return stand_in


defer_unused()
