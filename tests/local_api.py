"""A small blog REST API on 127.0.0.1 for dlt's rest_api source: stdlib `http.server`, a thread.

    GET /posts?page=N&per_page=K         {"data": [...], "next": "<url of page N+1>" | null}
    GET /posts/<id>/comments?offset=O&limit=L
                                         {"items": [...], "total": <comments of the post>}

`/posts` pages with a link to the next page (dlt's `json_link` paginator), a post's comments
with an offset and a total (dlt's `offset` paginator). The data lives in `posts` and `comments`
and can be changed between runs. Every request is recorded in `requests`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


def default_posts() -> list[dict[str, Any]]:
    """Seven posts; each has a list of tags, which dlt loads into a nested table."""
    return [
        {
            "id": n,
            "title": f"Post {n}",
            "author": f"user{n % 3}",
            "tags": [f"t{n}", "blog"][: n % 3],
        }
        for n in range(1, 8)
    ]


def default_comments() -> list[dict[str, Any]]:
    """Comments with ids unique across posts; post n has n % 4 of them (post 4 has none)."""
    comments, next_id = [], 100
    for post in range(1, 8):
        for i in range(post % 4):
            comments.append({"id": next_id, "post_id": post, "body": f"comment {i} on {post}"})
            next_id += 1
    return comments


class LocalApi:
    """`start()` it and use `.base_url`; `stop()` it (or use `with`)."""

    def __init__(self) -> None:
        self.posts = default_posts()
        self.comments = default_comments()
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{HOST}:{self._server.server_address[1]}/"

    def start(self) -> LocalApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                api.requests.append(self.path)
                status, body = api.answer(self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, path: str) -> tuple[int, Any]:
        """The status and JSON body for a GET of `path`."""
        url = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts == ["posts"]:
                page, per_page = int(query.get("page", 1)), int(query.get("per_page", 3))
                start = (page - 1) * per_page
                rows = self.posts[start : start + per_page]
                more = start + per_page < len(self.posts)
                link = f"{self.base_url}posts?page={page + 1}&per_page={per_page}"
                return 200, {"data": rows, "next": link if more else None}
            if len(parts) == 3 and parts[0] == "posts" and parts[2] == "comments":
                post = int(parts[1])
                if not any(p["id"] == post for p in self.posts):
                    return 404, {"error": f"no post {post}"}
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 2))
                mine = [c for c in self.comments if c["post_id"] == post]
                return 200, {"items": mine[offset : offset + limit], "total": len(mine)}
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route {url.path}"}
