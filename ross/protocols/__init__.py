"""
Wire protocols: the reactor/gRPC bridge, the shim control protocol, attach
framing.
"""
