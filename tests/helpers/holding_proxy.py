"""An HTTP proxy for tests that must interrupt a client at a known point.

``HoldingProxy(target, passes)`` forwards every request to ``target``; the POSTs
after the first ``passes`` are held (the client waits for their answers) until
``release()``. A test can then act while the client is certainly waiting, instead
of racing a client that may already have finished.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class HoldingProxy:
    def __init__(self, target: str, passes: int):
        self.target = target.rstrip("/")
        self.passes = passes
        self.posts = 0
        self.holding = threading.Event()  # a POST is held
        self._released = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.posts += 1
                    held = proxy.posts > proxy.passes
                if held:
                    proxy.holding.set()
                    proxy._released.wait()
                self._forward(body)

            def _forward(self, body):
                headers = {"Content-Type": self.headers.get("Content-Type", "")}
                try:
                    answer = requests.request(
                        self.command,
                        proxy.target + self.path,
                        data=body,
                        headers=headers,
                        timeout=600,
                    )
                except requests.RequestException:
                    self.send_error(502)
                    return
                self.send_response(answer.status_code)
                self.send_header(
                    "Content-Type", answer.headers.get("Content-Type", "text/plain")
                )
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                try:
                    self.wfile.write(answer.content)
                except OSError:  # the client is gone (interrupted)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HoldingProxy":
        self._thread.start()
        return self

    def release(self) -> None:
        self._released.set()

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
