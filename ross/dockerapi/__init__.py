"""
docker's Engine API (REST over HTTP/1.1), served by the daemon from the
engine with twisted.web, so docker's CLI, docker-py and docker-compose drive
Ross with only C{DOCKER_HOST} changed (SPEC section 14).

Like L{ross.services}, a protocol-level package: it adapts docker's wire to
the engine and imports neither gRPC nor the gRPC services.
"""
