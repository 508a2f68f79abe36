"""
twisted.application services of the daemon and the gRPC servicers: thin
adapters that validate requests, convert between protobuf and domain types,
and call the engine.
"""
