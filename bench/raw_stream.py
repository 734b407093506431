"""The S5 baseline: a bare grpc.aio server streaming precomputed messages.

python -m bench.raw_stream COUNT HEX_MESSAGE   (prints its address, serves until killed)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc


async def main(count: int, message: bytes) -> None:
    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield message

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), bytes.fromhex(sys.argv[2])))
