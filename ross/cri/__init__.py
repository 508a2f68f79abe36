"""
The Kubernetes CRI (``runtime.v1`` RuntimeService and ImageService) on
Ross's engine: kubelet's (and crictl's, critest's) view of Ross.

A pod sandbox is an engine container that runs no command (its PID 1
holds the pod's network, IPC and UTS namespaces; see
L{ross.engine.runtime.container}) on Ross's bridge network; the pod's
containers are engine containers that join those namespaces. What the CRI
knows that the engine does not (metadata, annotations, the log path) rides
on each container's labels (L{ross.cri.meta}), so it lives and dies with
the container and survives daemon restarts. They carry the namespace
label, so plain listings (ross ps, docker ps) leave them out.

The servicers use the engine directly, as the Docker API does: no gRPC to
the daemon itself, nothing of ross.v1 or ross.services.
"""
