"""
The Ross engine: containers, images, snapshots, content, runtime, events.

Nothing under this package imports grpc; the services layer adapts it.
"""
