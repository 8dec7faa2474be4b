"""PrivateRedis: a private redis-server on a free loopback port, to kill -9 and restart in tests.

Chaos tests must never touch the shared Redis on 6379, so each one gets its own server, its own
port and its own directory (for the append-only file and the server's log).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from bench.fleet_runner import free_base_port

REDIS_SERVER = Path("/usr/bin/redis-server")
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: `_pong` polls it before redis-server
    listens, and a port inside that range could be handed to the poll as its own source port
    (a TCP self-connect, which would also keep redis-server from binding it)."""
    return free_base_port(ports=1)


def _pong(port: int) -> bool:
    """True when a Redis on `port` answers an inline PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A `redis-server` owned by the caller: started, SIGKILLed and restarted on the same port."""

    def __init__(self, directory: Path, appendonly: bool) -> None:
        self.directory, self.appendonly = Path(directory), appendonly
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        """Start the server and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        self.directory.mkdir(parents=True, exist_ok=True)
        # No RDB snapshots in either mode: what survives a kill is exactly what the AOF holds.
        # `appendfsync always` fsyncs every write before replying, so kill -9 loses nothing.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        command = [
            str(REDIS_SERVER),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--daemonize", "no", "--logfile", ""),
            *(persistence or ["--appendonly", "no"]),
        ]
        log = (self.directory / "redis-server.log").open("ab")
        with log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _pong(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.directory / "redis-server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}:\n{tail}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save) and wait for it to exit."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=_STOP_TIMEOUT_S)

    def restart(self) -> PrivateRedis:
        """Kill -9 if running, then start again on the same port and directory."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """SIGTERM the server and wait; SIGKILL if it does not exit in time."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
