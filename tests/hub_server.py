"""A small in-memory Hugging Face Hub on 127.0.0.1 for upload tests (stdlib only).

Implements the endpoints ``HfApi`` (huggingface_hub 1.33) calls for ``create_repo``,
``list_repo_refs``, ``create_branch``, ``upload_folder`` (README YAML validation,
``preupload``, NDJSON ``commit``, plain LFS batch + PUT) and ``create_tag``. Every
request is recorded with its headers so tests can check authentication.

``lfs_suffixes``: files whose names end with one of these are answered ``"lfs"`` by
``preupload`` (then uploaded through the LFS batch protocol, which huggingface_hub
uses only when ``hf_xet`` is disabled); all others are ``"regular"`` (inline base64 in
the commit). ``fail``: ``{"commit": 500}`` makes that endpoint answer that status.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    lfs_suffixes: tuple[str, ...] = ()
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/refs$"), "refs"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>.+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>.+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/tag/(?P<rev>.+)$"), "tag"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<rev>.+)$"), "branch"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, payload: Any = None) -> None:
        body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = unquote(urlsplit(self.path).path)
        state = self.server.state
        with state.lock:
            state.requests.append(Request(self.command, path, dict(self.headers.items()), body))
        for method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if method == self.command and match:
                if name in state.fail:
                    self._reply(state.fail[name], {"error": f"injected failure of {name}"})
                    return
                with state.lock:
                    status, payload = getattr(self, f"_{name}")(state, body, **match.groupdict())
                self._reply(status, payload)
                return
        self._reply(404, {"error": f"no route for {self.command} {path}"})

    do_GET = do_POST = do_PUT = _handle

    # --- endpoints (called with the state lock held) -------------------------------------
    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _repo(self, state: HubState, repo: str) -> Repo | None:
        return state.repos.get(repo)

    def _create(self, state: HubState, body: bytes) -> tuple[int, Any]:
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}"
        if repo_id in state.repos:
            return 409, {"error": "You already created this model repo",
                         "url": f"{self._base()}/{repo_id}"}
        state.repos[repo_id] = Repo(private=data.get("visibility") == "private")
        return 200, {"url": f"{self._base()}/{repo_id}"}

    def _validate_yaml(self, state: HubState, body: bytes) -> tuple[int, Any]:
        return 200, {"errors": [], "warnings": []}

    def _refs(self, state: HubState, body: bytes, repo: str) -> tuple[int, Any]:
        r = self._repo(state, repo)
        if r is None:
            return 404, {"error": "Repository not found"}

        def refs(kind: str, items: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c}
                    for n, c in items.items()]

        return 200, {"branches": refs("heads", r.branches), "converts": [],
                     "tags": refs("tags", r.tags)}

    def _preupload(self, state: HubState, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        if self._repo(state, repo) is None:
            return 404, {"error": "Repository not found"}
        files = json.loads(body)["files"]
        return 200, {"files": [
            {"path": f["path"], "shouldIgnore": False, "oid": None,
             "uploadMode": "lfs" if f["path"].endswith(state.lfs_suffixes) else "regular"}
            for f in files
        ]}

    def _commit(self, state: HubState, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        r = self._repo(state, repo)
        if r is None:
            return 404, {"error": "Repository not found"}
        if rev not in r.branches:
            return 404, {"error": f"Revision {rev} not found"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, added = {}, {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                assert value["encoding"] == "base64"
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in state.lfs_objects:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}
                added[value["path"]] = state.lfs_objects[value["oid"]]
            else:
                return 400, {"error": f"unsupported commit key {key}"}
        r.files.update(added)
        oid = hashlib.sha1(body).hexdigest()
        r.branches[rev] = oid
        r.commits.append({"oid": oid, "revision": rev, "header": header, "paths": sorted(added)})
        return 200, {"success": True, "commitOid": oid,
                     "commitUrl": f"{self._base()}/{repo}/commit/{oid}"}

    def _tag(self, state: HubState, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        r = self._repo(state, repo)
        if r is None:
            return 404, {"error": "Repository not found"}
        tag = json.loads(body)["tag"]
        if tag in r.tags:
            return 409, {"error": f"Tag {tag} already exists"}
        r.tags[tag] = r.branches.get(rev, rev)
        return 200, {}

    def _branch(self, state: HubState, body: bytes, repo: str, rev: str) -> tuple[int, Any]:
        r = self._repo(state, repo)
        if r is None:
            return 404, {"error": "Repository not found"}
        if rev in r.branches:
            return 409, {"error": "Branch already exists"}
        r.branches[rev] = r.branches["main"]
        return 200, {}

    def _lfs_batch(self, state: HubState, body: bytes, repo: str) -> tuple[int, Any]:
        data = json.loads(body)
        objects = []
        for obj in data["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self._base()}/lfs-upload/{obj['oid']}",
                                               "header": {}}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_put(self, state: HubState, body: bytes, oid: str) -> tuple[int, Any]:
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "content does not match oid"}
        state.lfs_objects[oid] = body
        return 200, {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState


class LocalHub:
    """Context manager running the fake Hub on ``127.0.0.1:<free port>``.

    Attributes:
        url: Base URL (pass as ``--endpoint``).
        state: Repositories and every request received.
    """

    def __init__(self, *, lfs_suffixes: tuple[str, ...] = (), fail: dict[str, int] | None = None):
        self.state = HubState(lfs_suffixes=lfs_suffixes, fail=dict(fail or {}))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
