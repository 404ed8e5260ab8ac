"""The client's TLS read buffer is capped, and a large response still arrives whole."""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from datetime import UTC, datetime
from pathlib import Path

from driftguard.kube import connection
from driftguard.runtime import selfsigned


def test_every_tls_connection_reads_into_a_small_buffer() -> None:
    assert sslproto.SSLProtocol.max_size == connection.SSL_READ_BUFFER == 64 * 1024


def test_a_response_far_larger_than_the_buffer_arrives_whole(tmp_path: Path) -> None:
    key = selfsigned.new_key()
    cert = selfsigned.certificate(
        key, common_name="localhost", hosts=["127.0.0.1"], now=datetime.now(UTC)
    )
    (tmp_path / "tls.crt").write_text(selfsigned.pem("CERTIFICATE", cert))
    (tmp_path / "tls.key").write_text(
        selfsigned.pem("RSA PRIVATE KEY", selfsigned.private_key(key))
    )
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB, 64 buffers' worth

    async def exchange() -> bytes:
        server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_side.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

        async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        client_side = ssl.create_default_context(cafile=tmp_path / "tls.crt")
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_side)
        received = await reader.read(-1)
        writer.close()
        server.close()
        await server.wait_closed()
        return received

    assert asyncio.run(exchange()) == payload
