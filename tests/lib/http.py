"""The test's own HTTP server: serves the platform (and anything else a test
routes) to the guest, which reaches the host's loopback at 10.0.2.2."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from pathlib import Path
from typing import Optional, Union

Route = Union[Path, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, fmt: str, *args: object) -> None:
        self.server.log.append(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}")

    def do_GET(self) -> None:  # noqa: N802
        route = self.server.owner.lookup(self.path)
        if route is None:
            self.send_error(404)
            return
        size = route.stat().st_size if isinstance(route, Path) else len(route)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        start = time.monotonic()
        try:
            if isinstance(route, Path):
                with route.open("rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            else:
                self.wfile.write(route)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.server.timings.append((self.path, start, time.monotonic()))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "HttpServer"
    log: list[str]
    timings: list[tuple[str, float, float]]


class HttpServer:
    """Serves `routes` ({'/url/path': file or bytes}) and directories mounted
    with `serve_dir` on 127.0.0.1. `port` may be chosen before `start()` so a
    test can boot a node against a server that is not up yet."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[str, Route] = {}
        self.dirs: dict[str, Path] = {}
        self._port = port
        self._server: Optional[_Server] = None
        self.log: list[str] = []
        # (path, first byte, last byte) of each file served, monotonic seconds.
        self.timings: list[tuple[str, float, float]] = []

    @property
    def port(self) -> int:
        if self._server:
            return self._server.server_address[1]
        if not self._port:
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self._port = s.getsockname()[1]
        return self._port

    def guest_url(self, path: str) -> str:
        return f"http://10.0.2.2:{self.port}{path}"

    def serve_dir(self, prefix: str, directory: Path) -> None:
        self.dirs[prefix.rstrip("/")] = directory

    def lookup(self, path: str) -> Optional[Route]:
        path = path.split("?", 1)[0]
        if path in self.routes:
            return self.routes[path]
        for prefix, directory in self.dirs.items():
            if path.startswith(prefix + "/"):
                rel = path[len(prefix) + 1:]
                f = (directory / rel).resolve()
                if ".." not in rel.split("/") and f.is_file():
                    return f
        return None

    def start(self) -> "HttpServer":
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.owner = self
        self._server.log = self.log
        self._server.timings = self.timings
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
