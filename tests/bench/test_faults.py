"""The fault-injection blocks inject real faults: a FaultProxy in front of a TCP echo server, a
private redis-server and the CI PostgreSQL really resets, freezes and resumes connections, and a
PrivateRedis really loses (or keeps) data across kill -9."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import make_url

from bench.faults.proxy import FaultProxy, Mode
from bench.faults.redis_server import REDIS_SERVER, PrivateRedis

TIMEOUT_S = 0.5  # a request through a hung proxy must time out at this


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            return  # reset by the proxy: that is the point of these tests


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops SYNs when the proxy connects 64 at once


@pytest.fixture
def echo_port() -> Iterator[int]:
    with _EchoServer(("127.0.0.1", 0), _Echo) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo_port) as started:
        yield started


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=2.0)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return _recv_exactly(sock, len(payload))


def _wait_for(condition: object, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.01)
    return False


def test_proxy_forwards_bytes_both_ways(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"ping") == b"ping"
        assert (proxy.mode, proxy.connections_total, proxy.connections_active) == (Mode.NORMAL, 1, 1)
    assert _wait_for(lambda: proxy.connections_active == 0)


def test_proxy_forwards_a_large_payload_and_the_half_close(proxy: FaultProxy) -> None:
    payload = os.urandom(4 * 1024 * 1024)  # beyond every buffer: exercises backpressure
    sock = _connect(proxy)

    def send_then_half_close() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    with sock:
        sender = threading.Thread(target=send_then_half_close)
        sender.start()
        received = bytearray()
        while chunk := sock.recv(65536):  # EOF arrives only if the FIN went through both ways
            received += chunk
        sender.join(timeout=5)
    assert bytes(received) == payload


def test_many_concurrent_connections_are_forwarded(proxy: FaultProxy) -> None:
    sockets = [_connect(proxy) for _ in range(64)]
    try:
        for index, sock in enumerate(sockets):
            sock.sendall(f"conn-{index:03d}".encode())
        assert [_recv_exactly(sock, 8) for sock in sockets] == [
            f"conn-{index:03d}".encode() for index in range(64)
        ]
        assert proxy.connections_active == 64
    finally:
        for sock in sockets:
            sock.close()


def test_cut_resets_an_open_connection(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"before") == b"before"
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    assert proxy.connections_active == 0


def test_new_connection_during_cut_is_reset(proxy: FaultProxy) -> None:
    proxy.cut()
    # The proxy accepts and resets at once: connect() may return before the RST arrives or fail on it.
    with pytest.raises(ConnectionError), _connect(proxy) as sock:
        _echo(sock, b"during")


def test_new_connection_after_resume_works(proxy: FaultProxy) -> None:
    proxy.cut()
    proxy.resume()
    with _connect(proxy) as sock:
        assert _echo(sock, b"after") == b"after"


def test_hang_times_out_a_request_and_delivers_its_reply_after_resume(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"warm") == b"warm"
        proxy.hang()
        sock.sendall(b"frozen")
        sock.settimeout(TIMEOUT_S)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.resume()
        sock.settimeout(2.0)
        assert _recv_exactly(sock, 6) == b"frozen"


def test_connection_opened_during_hang_is_served_after_resume(proxy: FaultProxy) -> None:
    proxy.hang()
    with _connect(proxy) as sock:
        sock.sendall(b"early")
        sock.settimeout(TIMEOUT_S)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.resume()
        sock.settimeout(2.0)
        assert _recv_exactly(sock, 5) == b"early"


def test_refusing_upstream_resets_the_client() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with FaultProxy("127.0.0.1", closed_port) as proxy:
        with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
            sock.recv(16)
        assert proxy.connections_active == 0


def test_stop_ends_the_thread_and_closes_the_port(echo_port: int) -> None:
    proxy = FaultProxy("127.0.0.1", echo_port).start()
    held = _connect(proxy)
    proxy.stop()
    assert not [t for t in threading.enumerate() if t.name == f"fault-proxy-{proxy.port}"]
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy)
    with held, pytest.raises(ConnectionResetError):
        held.recv(16)


# --- Redis: a PrivateRedis, directly and behind a FaultProxy -------------------------------------


def _require_redis_server() -> None:
    if REDIS_SERVER.exists():
        return
    message = f"{REDIS_SERVER} is missing"
    if os.environ.get("SKINTRIAGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and SKINTRIAGE_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _client(port: int) -> redis.Redis:
    """A client that fails at once: no retries to hide the fault, a short read timeout."""
    return redis.Redis(port=port, socket_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    _require_redis_server()
    with PrivateRedis(tmp_path / "redis", appendonly=False) as server:
        yield server


@pytest.fixture
def redis_proxy(private_redis: PrivateRedis) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", private_redis.port) as started:
        yield started


def test_redis_commands_pass_through_the_proxy(redis_proxy: FaultProxy) -> None:
    client = _client(redis_proxy.port)
    assert client.set("k", "v")
    assert client.get("k") == b"v"


def test_cut_breaks_redis_connections_until_resume(redis_proxy: FaultProxy) -> None:
    open_client = _client(redis_proxy.port)
    assert open_client.ping()
    redis_proxy.cut()
    with pytest.raises(redis.ConnectionError):
        open_client.ping()
    with pytest.raises(redis.ConnectionError):
        _client(redis_proxy.port).ping()
    redis_proxy.resume()
    assert _client(redis_proxy.port).ping()


def test_hang_times_out_a_redis_request_and_its_reply_arrives_after_resume(
    redis_proxy: FaultProxy,
) -> None:
    # A bare pooled connection: a Redis client would drop the connection on its timeout, and the
    # point here is that the reply to the request sent during the hang still arrives on it.
    pool = redis.ConnectionPool(port=redis_proxy.port, socket_timeout=2.0)
    connection = pool.get_connection()
    redis_proxy.hang()
    connection.send_command("PING")  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    assert not connection.can_read(timeout=TIMEOUT_S)
    redis_proxy.resume()
    assert connection.read_response() == b"PONG"
    pool.release(connection)
    pool.disconnect()


def test_write_sent_during_hang_is_applied_after_resume_though_the_client_gave_up(
    redis_proxy: FaultProxy, private_redis: PrivateRedis
) -> None:
    client = _client(redis_proxy.port)
    assert client.ping()
    redis_proxy.hang()
    with pytest.raises(redis.TimeoutError):
        client.set("ambiguous", "1")
    direct = _client(private_redis.port)
    assert direct.get("ambiguous") is None
    redis_proxy.resume()
    assert _wait_for(lambda: direct.get("ambiguous") == b"1")


def test_private_redis_with_appendonly_keeps_data_across_kill(tmp_path: Path) -> None:
    _require_redis_server()
    with PrivateRedis(tmp_path, appendonly=True) as server:
        assert server.port != 6379 and server.url(3) == f"redis://127.0.0.1:{server.port}/3"
        redis.Redis.from_url(server.url(3)).set("kept", "yes")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            _client(server.port).ping()
        server.restart()
        assert redis.Redis.from_url(server.url(3)).get("kept") == b"yes"


def test_private_redis_without_appendonly_loses_data_on_kill(tmp_path: Path) -> None:
    _require_redis_server()
    with PrivateRedis(tmp_path, appendonly=False) as server:
        redis.Redis.from_url(server.url()).set("lost", "yes")
        port = server.port
        server.restart()
        assert server.port == port
        assert redis.Redis.from_url(server.url()).get("lost") is None


# --- PostgreSQL: the CI server behind a FaultProxy ------------------------------------------------


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """A FaultProxy in front of the CI PostgreSQL, and a libpq conninfo that goes through it."""
    url = make_url(postgres_url)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as started:
        conninfo = psycopg.conninfo.make_conninfo(
            host=started.host,
            port=started.port,
            user=url.username or "",
            password=url.password or "",
            dbname=url.database or "",
            connect_timeout=5,
        )
        yield started, conninfo


@pytest.mark.postgres
def test_cut_breaks_an_open_postgres_connection(postgres_proxy: tuple[FaultProxy, str]) -> None:
    proxy, conninfo = postgres_proxy
    with psycopg.connect(conninfo, autocommit=True) as connection:
        assert connection.execute("select 1").fetchone() == (1,)
        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            connection.execute("select 1")


@pytest.mark.postgres
def test_postgres_connects_fail_during_cut_and_work_after_resume(
    postgres_proxy: tuple[FaultProxy, str],
) -> None:
    proxy, conninfo = postgres_proxy
    proxy.cut()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo)
    proxy.resume()
    with psycopg.connect(conninfo, autocommit=True) as connection:
        assert connection.execute("select 1").fetchone() == (1,)
