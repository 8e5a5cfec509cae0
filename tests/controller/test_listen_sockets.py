"""The controller's own listening sockets: an agent's kept-alive connection gets each
answer at once, not after the client's delayed acknowledgement (~40 ms on Linux)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from pathlib import Path

from tests.controller.live import live_controller
from zonewall.controller.server import Listen, bind


def _nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_answers_on_a_kept_alive_connection_are_sent_without_waiting_for_an_ack(tmp_path: Path) -> None:
    with live_controller(tmp_path) as live:
        connection = http.client.HTTPConnection(live.url.removeprefix("http://"), timeout=10)
        took = []
        try:
            for _ in range(15):  # one connection, as an agent's client keeps it
                started = time.perf_counter()
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                assert response.status == 200 and response.read() == b'{"status":"ok"}'
                took.append(time.perf_counter() - started)
            # asyncio sets TCP_NODELAY only on connections accepted from a socket made
            # for TCP by name (proto 6); without it uvicorn's header and body writes
            # wait for the client's delayed ACK: ~44 ms a request here, 1 ms with it
            accepted = [protocol.transport.get_extra_info("socket") for protocol in live.server.server_state.connections]
            assert accepted and all(_nodelay(sock) for sock in accepted)
        finally:
            connection.close()
        # without TCP_NODELAY every answer waits for the delayed ACK (>= 40 ms on Linux);
        # the fastest of 15 is judged, not the median, which a busy CI machine can push
        # over any bound without the delay
        assert min(took) < 0.02, f"answers took {sorted(took)}"


def test_a_socket_not_made_for_tcp_by_name_gets_no_nodelay_from_asyncio() -> None:
    """Why the controller names the protocol (server.py): the same listener made with
    proto 0 hands out connections without TCP_NODELAY."""
    async def accepted_nodelay(listener: socket.socket) -> int:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(_nodelay(writer.get_extra_info("socket")))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        while not seen:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return seen[0]

    assert asyncio.run(accepted_nodelay(bind(Listen("127.0.0.1", 0))))
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    assert not asyncio.run(accepted_nodelay(plain))
