"""
Generated protobuf and gRPC modules of the ross.v1 API.

Everything here except this file (which keeps protobuf's start-up lean:
L{defer_python_message}) is written by ``python -m ross.protogen``
from ``proto/ross/v1/*.proto`` and is never edited by hand.
"""

import importlib
import sys
import types

_PYTHON_MESSAGE = "google.protobuf.internal.python_message"


def defer_python_message() -> None:
    """
    Register a stand-in for protobuf's pure-Python message implementation
    that imports the real module at the first use of any of its names.

    protobuf's descriptor pool and its builder of generated modules import
    C{python_message} (and with it C{text_format}, C{datetime}, C{pickle}:
    16 modules, 8-10 ms of every CLI command's start) although, with the C
    implementation (upb) Ross runs on, nothing uses it. Where something
    does (the pure-Python implementation), it gets the real module, one
    attribute lookup later. Done when this package is imported, which is
    before protobuf in the CLI; the daemon imports this package first.
    """
    if _PYTHON_MESSAGE in sys.modules:
        return
    stand_in = types.ModuleType(_PYTHON_MESSAGE)

    def load(name: str) -> object:
        if sys.modules.get(_PYTHON_MESSAGE) is stand_in:
            del sys.modules[_PYTHON_MESSAGE]
        return getattr(importlib.import_module(_PYTHON_MESSAGE), name)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules[_PYTHON_MESSAGE] = stand_in


defer_python_message()
