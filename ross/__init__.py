"""
Ross: a Linux container engine on Twisted and gRPC.

This module stays import-light: the CLI, the shim and the daemon all import
it, and the shim must start without Twisted or grpcio.
"""

import os as _os

# A process running a gRPC server must never fork without exec (spawning a
# shim forks); grpc's fork handlers would run in the child. Set before grpc
# is imported anywhere in the daemon, the tests or the CLI.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
API_VERSION = "v1"
