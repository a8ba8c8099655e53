"""A loopback HTTP server that answers like the Hugging Face Hub's model endpoints, for
huggingface_hub pointed at it with HF_ENDPOINT:

    GET  /api/models/ORG/NAME/revision/REV       repository info (its commit: "sha")
    GET  /api/models/ORG/NAME/tree/COMMIT        the file list
    HEAD / GET /ORG/NAME/resolve/REV/FILE         a file, with X-Repo-Commit and ETag

Unknown repositories and revisions answer 404 with the Hub's X-Error-Code
(RepoNotFound, RevisionNotFound, EntryNotFound), which huggingface_hub turns into its
errors. Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse


class FakeHub:
    """repos: {repo_id: {"refs": {branch or tag: commit}, "commits": {commit: {file: bytes}}}}"""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[str] = []
        # File names whose GET sends half the bytes it announced, then closes: a
        # download cut off mid-way.
        self.cut_off: set[str] = set()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add(self, repo_id: str, files: dict[str, bytes], refs=("main",)) -> str:
        """Adds a commit of `files` to `repo_id`, which `refs` then point at; returns it."""
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        commit = hashlib.sha1(repr((repo_id, len(repo["commits"]), sorted(files))).encode()
                              ).hexdigest()
        repo["commits"][commit] = dict(files)
        for ref in refs:
            repo["refs"][ref] = commit
        return commit

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- answering -------------------------------------------------------------------------
    def _answer(self, handler, head: bool) -> None:
        path = urllib.parse.unquote(handler.path.split("?")[0])
        self.requests.append(f"{handler.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, kind, rev = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            commit = self._commit(handler, repo_id, rev)
            if commit is None:
                return
            files = self.repos[repo_id]["commits"][commit]
            if kind == "revision":
                body = {"id": repo_id, "sha": commit,
                        "siblings": [{"rfilename": name} for name in sorted(files)]}
            else:  # tree
                body = [{"type": "file", "path": name, "size": len(data),
                         "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in sorted(files.items())]
            self._send(handler, 200, json.dumps(body).encode(), head,
                       {"Content-Type": "application/json"})
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            commit = self._commit(handler, repo_id, rev)
            if commit is None:
                return
            data = self.repos[repo_id]["commits"][commit].get(name)
            if data is None:
                self._send(handler, 404, b"", head, {"X-Error-Code": "EntryNotFound"})
                return
            headers = {"X-Repo-Commit": commit,
                       "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            if name in self.cut_off and not head:
                handler.send_response(200)
                for key, value in headers.items():
                    handler.send_header(key, value)
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data[:len(data) // 2])
                handler.wfile.flush()
                handler.close_connection = True
                return
            self._send(handler, 200, data, head, headers)
            return
        self._send(handler, 404, b"", head, {})

    def _commit(self, handler, repo_id: str, rev: str) -> str | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._send(handler, 404, b'{"error": "Repository not found"}', False,
                       {"X-Error-Code": "RepoNotFound"})
            return None
        commit = rev if rev in repo["commits"] else repo["refs"].get(rev)
        if commit is None:
            self._send(handler, 404, b'{"error": "Invalid rev id"}', False,
                       {"X-Error-Code": "RevisionNotFound"})
            return None
        return commit

    @staticmethod
    def _send(handler, status: int, body: bytes, head: bool, headers: dict) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
