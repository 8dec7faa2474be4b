"""FaultProxy: a TCP proxy that simulates a server outage (cut) or freeze (hang) for chaos tests.

One daemon thread owns every socket and runs a `selectors` loop; callers switch modes from any
thread and the switch returns once the loop has applied it, so a test can `cut()` and then assert.
Owning all sockets in one thread matters: a socket closed by another thread while a reader is
blocked in recv() is not really closed (the reader holds it open), so the peer would see no RST.

Modes, and what a client of the proxy sees:
- normal (`resume()`): bytes are forwarded both ways; half-closes (FIN) are forwarded too.
- cut (`cut()`): like a stopped server. Every open connection is closed with SO_LINGER 0 on both
  sides, so the client's next (or pending) recv/send fails with ECONNRESET and the server sees a
  reset too. New connections are accepted and reset at once: connect() succeeds, the first
  recv/send fails with ECONNRESET (or EPIPE); not ECONNREFUSED.
- hang (`hang()`): like a server under SIGSTOP. Nothing is read or written on any proxied socket,
  so bytes wait in kernel buffers (the client's sends succeed until those fill) and the client's
  recv blocks until its timeout. New connections are accepted but not connected upstream. On
  `resume()` everything waiting is delivered in order, including requests whose client has since
  given up and a FIN, as a resumed process would see them.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

_CHUNK = 64 * 1024
# Stop reading a side while the other side has this much unsent: backpressure, not unbounded memory.
_BUFFER_CAP = 1024 * 1024
_LINGER_ZERO = struct.pack("ii", 1, 0)
_ACK_TIMEOUT_S = 5.0
_LISTENER, _WAKE = object(), object()


class Mode(StrEnum):
    NORMAL = "normal"
    CUT = "cut"
    HANG = "hang"


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0 so the kernel sends RST: the peer sees ECONNRESET, not a clean EOF."""
    with suppress(OSError):  # already dead: closing is all that is left
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


@dataclass(eq=False)
class _Pipe:
    """One client connection and its upstream connection, with a buffer per direction."""

    client: socket.socket
    upstream: socket.socket | None = None  # None while accepted during a hang
    connected: bool = False
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    upstream_eof: bool = False
    upstream_shut: bool = False  # the client's FIN has been passed on
    client_shut: bool = False  # the server's FIN has been passed on
    closed: bool = False


class FaultProxy:
    """A threaded TCP proxy to `upstream_host:upstream_port` with switchable faults."""

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.host, self.port = listen_host, listen_port
        self.connections_total = 0  # accepted, including those reset during a cut
        self._mode = Mode.NORMAL  # requested by callers
        self._applied = Mode.NORMAL  # applied by the loop; read and written only by the loop thread
        self._requested_gen = self._applied_gen = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._pipes: set[_Pipe] = set()
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> Mode:
        """The mode last requested (applied by the time cut/hang/resume return)."""
        return self._mode

    @property
    def connections_active(self) -> int:
        """Client connections the proxy holds open now (hung ones included)."""
        return len(self._pipes)

    def start(self) -> FaultProxy:
        """Bind the listen port and start the forwarding thread."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        family, _, _, _, address = socket.getaddrinfo(
            self.upstream_host, self.upstream_port, type=socket.SOCK_STREAM
        )[0]
        self._family, self._address = family, address
        # A fleet of pooled clients can connect in a burst; a short backlog would drop SYNs.
        family_in = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self.port), family=family_in, backlog=512)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._applied = self._mode
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Reset every connection, close the listen port and join the thread."""
        if self._thread is None or self._stopping:
            return
        with self._cond:
            self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=_ACK_TIMEOUT_S)
        self._wake_w.close()

    def cut(self) -> None:
        """Reset every connection, and every new one until resume(): a stopped server."""
        self._set_mode(Mode.CUT)

    def hang(self) -> None:
        """Forward nothing, keep everything, until resume(): a frozen (SIGSTOPped) server."""
        self._set_mode(Mode.HANG)

    def resume(self) -> None:
        """Forward normally again, delivering what waited during a hang."""
        self._set_mode(Mode.NORMAL)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _set_mode(self, mode: Mode) -> None:
        """Request `mode` and wait until the loop has applied it (so callers can assert right after)."""
        with self._cond:
            self._mode = mode
            self._requested_gen += 1
            generation = self._requested_gen
            if self._thread is None or self._stopping:
                return  # start() applies the requested mode
            if not self._thread.is_alive():
                raise RuntimeError("FaultProxy loop has died; see the thread's traceback on stderr")
            self._wake_w.send(b"x")
            if not self._cond.wait_for(lambda: self._applied_gen >= generation, _ACK_TIMEOUT_S):
                raise RuntimeError(f"FaultProxy loop did not apply mode {mode} in {_ACK_TIMEOUT_S} s")

    def _run(self) -> None:
        try:
            while True:
                for key, events in self._selector.select():
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        if self._apply_mode():
                            return
                    elif not key.data.closed and self._applied is Mode.NORMAL:
                        self._service(key.data, key.fileobj is key.data.client, events)
        finally:
            for pipe in list(self._pipes):
                self._close(pipe, reset=True)
            with self._cond:  # release callers waiting on a mode change that will never be applied
                self._applied_gen = self._requested_gen
                self._cond.notify_all()
            self._selector.close()
            self._listener.close()
            self._wake_r.close()

    def _apply_mode(self) -> bool:
        """Apply the requested mode; True when the loop must stop."""
        with suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._cond:
            mode, generation, stopping = self._mode, self._requested_gen, self._stopping
        if stopping:
            return True
        self._applied = mode
        for pipe in list(self._pipes):
            try:
                if mode is Mode.CUT:
                    self._close(pipe, reset=True)
                elif mode is Mode.NORMAL and pipe.upstream is None:
                    self._connect(pipe)  # accepted during a hang: connect now, as a resumed server
                self._pump(pipe)
            except OSError:
                self._close(pipe, reset=True)
        with self._cond:
            self._applied_gen = generation
            self._cond.notify_all()
        return False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # BlockingIOError: backlog drained (EMFILE too: retried on the next event)
                return
            self.connections_total += 1
            if self._applied is Mode.CUT:
                _reset(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(client)
            self._pipes.add(pipe)
            try:
                if self._applied is Mode.NORMAL:
                    self._connect(pipe)
                self._pump(pipe)
            except OSError:
                self._close(pipe, reset=True)

    def _connect(self, pipe: _Pipe) -> None:
        """Start a non-blocking connect upstream; completion arrives as a write event."""
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        upstream.setblocking(False)
        pipe.upstream = upstream
        err = upstream.connect_ex(self._address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"upstream {self._address} refused")

    def _service(self, pipe: _Pipe, from_client: bool, events: int) -> None:
        upstream = pipe.upstream
        assert upstream is not None  # in NORMAL only connecting or connected pipes are registered
        try:
            if not (from_client or pipe.connected):  # the upstream connect has finished
                if err := upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    # Upstream refused: reset the client, as a proxy whose backend is down does.
                    raise OSError(err, f"upstream {self._address} refused")
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pipe.connected = True
            elif events & selectors.EVENT_READ:
                with suppress(BlockingIOError):
                    data = (pipe.client if from_client else upstream).recv(_CHUNK)
                    (pipe.to_upstream if from_client else pipe.to_client).extend(data)
                    if not data and from_client:
                        pipe.client_eof = True
                    elif not data:
                        pipe.upstream_eof = True
            self._pump(pipe)
        except OSError:
            self._close(pipe, reset=True)

    def _pump(self, pipe: _Pipe) -> None:
        """Send what is buffered, pass on half-closes, then re-register interest (mode-aware)."""
        if pipe.closed:
            return
        upstream = pipe.upstream
        if self._applied is Mode.NORMAL and upstream is not None and pipe.connected:
            for sock, buffer in ((upstream, pipe.to_upstream), (pipe.client, pipe.to_client)):
                if buffer:
                    with suppress(BlockingIOError):
                        del buffer[: sock.send(buffer)]
            if pipe.client_eof and not pipe.to_upstream and not pipe.upstream_shut:
                upstream.shutdown(socket.SHUT_WR)
                pipe.upstream_shut = True
            if pipe.upstream_eof and not pipe.to_client and not pipe.client_shut:
                pipe.client.shutdown(socket.SHUT_WR)
                pipe.client_shut = True
            if pipe.upstream_shut and pipe.client_shut:
                self._close(pipe, reset=False)
                return
        self._register(pipe)

    def _register(self, pipe: _Pipe) -> None:
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        client_events = upstream_events = 0
        if self._applied is Mode.NORMAL and pipe.upstream is not None:
            if not pipe.client_eof and len(pipe.to_upstream) < _BUFFER_CAP:
                client_events |= read  # reading before the connect completes just fills the buffer
            if not pipe.connected:
                upstream_events = write
            else:
                client_events |= write if pipe.to_client else 0
                upstream_events |= write if pipe.to_upstream else 0
                if not pipe.upstream_eof and len(pipe.to_client) < _BUFFER_CAP:
                    upstream_events |= read
        for sock, events in ((pipe.client, client_events), (pipe.upstream, upstream_events)):
            if sock is None:
                continue
            try:
                key = self._selector.get_key(sock)
            except KeyError:
                if events:
                    self._selector.register(sock, events, pipe)
                continue
            if not events:
                self._selector.unregister(sock)
            elif key.events != events:
                self._selector.modify(sock, events, pipe)

    def _close(self, pipe: _Pipe, reset: bool) -> None:
        pipe.closed = True
        self._pipes.discard(pipe)
        for sock in (pipe.client, pipe.upstream):
            if sock is None:
                continue
            with suppress(KeyError):  # not registered, e.g. while hung
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
