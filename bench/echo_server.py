"""The S1/S2 baseline: a bare grpc.aio server with one unary method answering a small
fixed payload (no interceptors, no database), driven by ghz with the same settings as ours.

python -m bench.echo_server   (prints its address, serves until killed; see echo.proto)
"""

from __future__ import annotations

import asyncio

import grpc

#: What every call answers: a serialized ``bench.Ping`` of 64 bytes (field 1, 62 chars).
PAYLOAD = b"\x0a\x3e" + b"x" * 62


async def main() -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return PAYLOAD

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
