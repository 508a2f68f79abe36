"""
Ross: a Linux container engine on Twisted and gRPC.

This module stays import-light: the CLI, the shim and the daemon all import
it, and the shim must start without Twisted or grpcio.
"""

__version__ = "0.1.0"
API_VERSION = "v1"
