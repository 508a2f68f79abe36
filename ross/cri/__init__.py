"""
The Kubernetes Container Runtime Interface (SPEC section 15): its generated
modules (L{ross.cri.v1}) and the servicers that serve it over the engine.
"""
