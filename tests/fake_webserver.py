"""A stand-in for dagster-webserver's reload mutation on loopback (the real one is in test_e2e)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELOADED = {
    "__typename": "WorkspaceLocationEntry",
    "locationOrLoadError": {"__typename": "RepositoryLocation"},
}
LOAD_FAILED = {
    "__typename": "WorkspaceLocationEntry",
    "locationOrLoadError": {"__typename": "PythonError", "message": "ImportError: no module"},
}


class FakeWebserver:
    """Answers GraphQL posts with `answer`, recording (path, headers, body) of each."""

    def __init__(self, answer: dict) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                payload = json.dumps({"data": {"reloadRepositoryLocation": answer}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.address}"

    @property
    def bodies(self) -> list[dict]:
        return [body for _, _, body in self.requests]

    def wait_for_reload(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.requests:
                return self.requests[0][2]
            time.sleep(0.05)
        raise AssertionError("no reload request reached the webserver")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
