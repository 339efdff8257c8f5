"""The ceiling: a grpc.aio Authorization servicer that answers a static OK without looking.

Run as a process: `python -m bench serve empty-grpc ADDRESS` (host:port or unix:/path). It is
the plain generated-servicer shape, as a minimal real service would be written.
"""

from __future__ import annotations

import asyncio

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz._proto.google.rpc.status_pb2 import Status

_OK = external_auth_pb2.CheckResponse(status=Status(code=0))


class Empty(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: object, context: object) -> external_auth_pb2.CheckResponse:
        return _OK


def serve(argv: list[str]) -> None:
    """`ADDRESS`: serve until killed."""
    asyncio.run(_serve(argv[0]))


async def _serve(address: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1024)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Empty(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
