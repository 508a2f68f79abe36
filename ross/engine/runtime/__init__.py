"""
The container runtime: the per-container shim (stdlib only, exec'd by the
daemon) and the daemon-side handles that drive it.

This package's C{__init__} imports nothing: the shim imports its modules
(L{ross.engine.runtime.shim}, L{ross.engine.runtime.container},
L{ross.engine.runtime.linux}, L{ross.engine.runtime.cgroups},
L{ross.engine.runtime.logfile}) on every container start, and each import
costs start latency. The daemon side is L{ross.engine.runtime.runtime} and
the spec record L{ross.engine.runtime.spec}.
"""
