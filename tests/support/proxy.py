"""A TCP proxy on loopback that breaks the network on purpose: after some bytes of the server's answers on
the first connections it cuts them (both sockets closed) or stalls them (nothing more is forwarded)."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.servers import free_port


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to the upstream port; the first ``faulty_connections`` connections get
    ``after_bytes`` bytes of answer, then ``mode`` (``cut`` or ``stall``). Later connections pass untouched."""

    def __init__(self, upstream_port: int, after_bytes: int, mode: str = "cut", faulty_connections: int = 1):
        if mode not in ("cut", "stall"):
            raise ValueError(mode)
        self.upstream_port, self.after_bytes, self.mode = upstream_port, after_bytes, mode
        self.faulty_left = faulty_connections
        self.connections = 0
        self.faults = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.connections += 1
                faulty = self.faulty_left > 0
                self.faulty_left -= faulty
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.after_bytes if faulty else None),
                             daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, budget: int | None) -> None:
        try:
            while not self.stopped.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None and len(data) >= budget:
                    target.sendall(data[:budget])
                    with self.lock:
                        self.faults += 1
                    if self.mode == "stall":  # hold both sockets open, forward nothing more
                        self.stopped.wait()
                    break
                if budget is not None:
                    budget -= len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self.thread.join(5)
