"""A small Hugging Face Hub look-alike, for tests that cannot reach the real Hub.

It speaks the subset of the Hub protocol that huggingface_hub 2.x uses for
``snapshot_download``, ``HfApi.model_info``/``list_repo_tree``, ``create_repo``
and ``upload_folder`` (regular files inline, LFS files through the batch API).
Repos live in memory (:class:`Hub`); a Starlette app serves them through uvicorn,
and file bytes go out through Starlette's ``FileResponse``, which answers ``Range``.

One uvicorn server listens on two ports that share one :class:`Hub`: the main
endpoint (``HF_ENDPOINT``) and a second port standing in for the LFS storage host,
so that LFS downloads are a 302 to another origin exactly like the real Hub's CDN
redirects.

Access rules, chosen so the client can tell the cases apart:

* unknown repo: 401 without a token, 404 with one (``X-Error-Code: RepoNotFound``);
* gated repo without a granted token: 401/403 ``GatedRepo``;
* private repo without a valid token: 403 without an error code (plain "forbidden");
* a token that is not valid is refused on every API call, like the real Hub does:
  401 "Invalid credentials in Authorization header"; writes need a valid token.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_TOKEN = "hf_test_token"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.npz", "*.pt", "*.pth", "*.h5",
                "*.onnx", "*.msgpack", "*.model")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size >= LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


@dataclass(frozen=True)
class Blob:
    """One file's content, and whether the repo stores it through LFS."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n").encode()

    @property
    def oid(self) -> str:
        """The git oid: of the content for regular files, of the pointer for LFS files."""
        return git_blob_oid(self.pointer if self.lfs else self.data)

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(self.data),
                                 "oid": self.oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data),
                            "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Commit:
    sha: str
    files: dict[str, Blob]
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit:
        sha = self.refs.get(rev) or (rev if rev in self.commits else None)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return self.commits[sha]


@dataclass
class Fault:
    """A planned misbehaviour while serving one file's bytes (matched by sha256)."""

    kind: str  # "drop": close the socket; "stall": pause until released, then close
    after_bytes: int
    times: int
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def strike(self) -> None:
        """Tell the test the fault is reached; a stall then waits until it is released."""
        self.reached.set()
        if self.kind == "stall":
            await anyio.to_thread.run_sync(self.release.wait, 120)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    range: str | None
    authorized: bool


class HubError(Exception):
    """An error answer: status, ``X-Error-Code`` (may be empty) and message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class Hub:
    """The in-memory state: repos, LFS objects, tokens, planned faults and a request log."""

    def __init__(self, tokens: tuple[str, ...] = (DEFAULT_TOKEN,)) -> None:
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[RequestRecord] = []
        self.lock = threading.RLock()
        self._counter = 0

    # ---- seeding and inspection, for tests -------------------------------------------
    def seed(self, repo_id: str, folder: Path | None = None,
             files: dict[str, bytes] | None = None, *, private: bool = False,
             gated: bool = False, message: str = "Seed") -> str:
        """Commit a folder's files (and/or a name->bytes dict) as the new ``main``.

        Returns:
            The new commit sha.
        """
        content: dict[str, bytes] = {}
        if folder is not None:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    content[path.relative_to(folder).as_posix()] = path.read_bytes()
        content.update(files or {})
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id))
            repo.private, repo.gated = private, gated
            blobs = {p: Blob(d, is_lfs_path(p, len(d))) for p, d in content.items()}
            return self._commit(repo, "main", blobs, message).sha

    def set_access(self, repo_id: str, *, private: bool | None = None,
                   gated: bool | None = None) -> None:
        with self.lock:
            repo = self.repos[repo_id]
            repo.private = repo.private if private is None else private
            repo.gated = repo.gated if gated is None else gated

    def head(self, repo_id: str, rev: str = "main") -> str:
        with self.lock:
            return self.repos[repo_id].resolve(rev).sha

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        with self.lock:
            return {p: b.data for p, b in self.repos[repo_id].resolve(rev).files.items()}

    def add_fault(self, repo_id: str, filename: str, kind: str, after_bytes: int,
                  times: int = 1) -> Fault:
        """Misbehave the next ``times`` times this file's bytes are served."""
        with self.lock:
            blob = self.repos[repo_id].resolve("main").files[filename]
            fault = Fault(kind, after_bytes, times)
            self.faults.setdefault(blob.sha256, []).append(fault)
            return fault

    def stall_upload(self, data: bytes) -> Fault:
        """Hold the next LFS upload of ``data`` until the fault is released."""
        with self.lock:
            fault = Fault("stall", 0, 1)
            self.faults.setdefault(hashlib.sha256(data).hexdigest(), []).append(fault)
            return fault

    # ---- internals -------------------------------------------------------------------
    def _commit(self, repo: Repo, branch: str, files: dict[str, Blob], message: str) -> Commit:
        self._counter += 1
        for blob in files.values():
            if blob.lfs:
                self.lfs_objects[blob.sha256] = blob.data
        listing = sorted((p, b.oid) for p, b in files.items())
        seed = json.dumps([repo.repo_id, repo.refs.get(branch), message, listing, self._counter])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), files, message, _now())
        repo.commits[commit.sha] = commit
        repo.refs[branch] = commit.sha
        return commit

    def drop_faults(self) -> None:
        """Release every held transfer and forget the faults not triggered yet."""
        with self.lock:
            for faults in self.faults.values():
                for fault in faults:
                    fault.release.set()
            self.faults.clear()

    def take_fault(self, sha256: str) -> Fault | None:
        with self.lock:
            for fault in self.faults.get(sha256, []):
                if fault.times > 0:
                    fault.times -= 1
                    return fault
        return None


# ---- HTTP ------------------------------------------------------------------------------


class ConnectionCut(Exception):
    """Raised mid-body by a planned fault: the ASGI server then drops the connection."""


def _hub(request: Request) -> Hub:
    return request.app.state.hub


def _token(request: Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _token_valid(request: Request) -> bool:
    return _token(request) in _hub(request).tokens


def _invalid_token() -> HubError:
    return HubError(401, "", "Invalid credentials in Authorization header")


def _require_valid_token(request: Request) -> None:
    if not _token_valid(request):
        raise _invalid_token()


def _error_response(err: HubError) -> JSONResponse:
    headers = {"X-Error-Message": err.message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return JSONResponse({"error": err.message}, err.status, headers)


async def _on_hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return _error_response(exc)


async def _no_route(request: Request, exc: Exception) -> Response:
    return _error_response(HubError(404, "", f"No route for {request.method} {request.url.path}"))


class _Gate:
    """Logs every request, and refuses an invalid token on every API call as the Hub does.

    The LFS storage host takes no Hub token, so ``/lfs/`` is let through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        valid = _token_valid(request)
        _hub(request).requests.append(RequestRecord(request.method, request.url.path,
                                                    request.headers.get("Range"), valid))
        if _token(request) is not None and not valid \
                and not request.url.path.startswith("/lfs/"):
            await _error_response(_invalid_token())(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise HubError(400, "", f"Invalid JSON body: {exc}") from exc


def _repo(request: Request, *, write: bool = False) -> Repo:
    """The repo named in the path, if this request may see it (and write to it)."""
    repo_id = f"{request.path_params['org']}/{request.path_params['name']}"
    token, valid = _token(request), _token_valid(request)
    repo = _hub(request).repos.get(repo_id)
    if repo is None:
        raise HubError(404 if token else 401, "RepoNotFound", "Repository not found")
    if write:
        _require_valid_token(request)
    if repo.private and not valid:
        raise HubError(403, "", f"You don't have access to the private repository {repo_id}")
    if repo.gated and not valid:
        raise HubError(403 if token else 401, "GatedRepo",
                       f"Access to model {repo_id} is restricted. You must have access "
                       "to it and be authenticated to access it. Please log in.")
    return repo


def _revision(request: Request, repo: Repo) -> Commit:
    return repo.resolve(request.path_params.get("rev", "main"))


def _entry_not_found(path: str, rev: str, commit: Commit) -> HubError:
    return HubError(404, "EntryNotFound", f"{path} does not exist on {rev}",
                    {"X-Repo-Commit": commit.sha})


class _FaultySend:
    """The ``send`` of a file response, carrying out the file's next planned fault.

    The fault is taken when a GET answer starts (200 or 206), and strikes once the
    bytes sent reach ``after_bytes``, counted from the start of the file.
    """

    def __init__(self, send: Send, hub: Hub, sha256: str) -> None:
        self.send, self.hub, self.sha256 = send, hub, sha256
        self.fault: Fault | None = None
        self.position = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in (200, 206):
            self.fault = self.hub.take_fault(self.sha256)
            content_range = dict(message["headers"]).get(b"content-range")
            if content_range:  # b"bytes START-END/SIZE"
                self.position = int(content_range.split()[1].split(b"-")[0])
        elif message["type"] == "http.response.body" and self.fault is not None:
            body = message.get("body", b"")
            keep = max(0, self.fault.after_bytes - self.position)
            if len(body) >= keep:
                await self.send({"type": "http.response.body", "body": body[:keep],
                                 "more_body": True})
                await self.fault.strike()
                raise ConnectionCut(f"planned {self.fault.kind} after {keep} bytes")
            self.position += len(body)
        await self.send(message)


class _StoredFile(FileResponse):
    """A file's bytes from the server's content store, with any planned fault."""

    def __init__(self, path: Path, hub: Hub, sha256: str, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers, media_type="application/octet-stream")
        self.hub, self.sha256 = hub, sha256

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
            send = _FaultySend(send, self.hub, self.sha256)
        await super().__call__(scope, receive, send)


def _file_response(request: Request, data: bytes, headers: dict[str, str]) -> Response:
    """Answer with ``data``, stored on disk once by sha256 so that FileResponse serves it."""
    sha256 = hashlib.sha256(data).hexdigest()
    path: Path = request.app.state.store / sha256
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)
    return _StoredFile(path, _hub(request), sha256, headers)


# ---- read API --------------------------------------------------------------------------


async def _model_info(request: Request) -> Response:
    repo = _repo(request)
    commit = _revision(request, repo)
    repo_id = repo.repo_id
    return JSONResponse({
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
        "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.sha,
        "lastModified": commit.date, "private": repo.private,
        "gated": "manual" if repo.gated else False, "disabled": False, "tags": [],
        "library_name": "mlx", "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        "usedStorage": sum(len(b.data) for b in commit.files.values()),
    })


async def _tree(request: Request) -> Response:
    commit = _revision(request, _repo(request))
    path = request.path_params.get("path", "").strip("/")
    recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
    prefix = f"{path}/" if path else ""
    entries: dict[str, dict[str, Any]] = {}
    for file_path, blob in sorted(commit.files.items()):
        if not file_path.startswith(prefix):
            continue
        parts = file_path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            if depth > 1 and not recursive:
                break
            folder = prefix + "/".join(parts[:depth])
            entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                        "oid": hashlib.sha1(folder.encode()).hexdigest()})
        if recursive or len(parts) == 1:
            entries[file_path] = blob.tree_entry(file_path)
    if prefix and not entries:
        raise _entry_not_found(path, request.path_params["rev"], commit)
    return JSONResponse(list(entries.values()))


async def _resolve(request: Request) -> Response:
    commit = _revision(request, _repo(request))
    path, rev = request.path_params["path"], request.path_params["rev"]
    blob = commit.files.get(path)
    if blob is None:
        raise _entry_not_found(path, rev, commit)
    headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.oid}"'}
    if not blob.lfs:
        return _file_response(request, blob.data, headers)
    return Response(status_code=302, headers={
        **headers, "Location": f"{request.app.state.lfs_url}/lfs/{blob.sha256}",
        "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})


async def _lfs_download(request: Request) -> Response:
    oid = request.path_params["oid"]
    data = _hub(request).lfs_objects.get(oid)
    if data is None:
        raise HubError(404, "", "Object not found")
    return _file_response(request, data, {"ETag": f'"{oid}"'})


async def _whoami(request: Request) -> Response:
    _require_valid_token(request)
    return JSONResponse({"type": "user", "name": "test-user", "orgs": [],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "test", "role": "write"}}})


# ---- write API -------------------------------------------------------------------------


async def _create_repo(request: Request) -> Response:
    _require_valid_token(request)
    payload = await _json_body(request)
    repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
    url = f"{request.app.state.public_url}/{repo_id}"
    hub = _hub(request)
    with hub.lock:
        if repo_id in hub.repos:
            return JSONResponse({"error": "You already created this model repo", "url": url},
                                409)
        repo = hub.repos[repo_id] = Repo(repo_id,
                                         private=payload.get("visibility") == "private")
        hub._commit(repo, "main", {".gitattributes": Blob(GITATTRIBUTES.encode(), False)},
                    "initial commit")
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


async def _create_branch(request: Request) -> Response:
    repo, branch = _repo(request, write=True), request.path_params["rev"]
    start = (await _json_body(request)).get("startingPoint") or "main"
    with _hub(request).lock:
        if branch in repo.refs:
            raise HubError(409, "", f"Reference {branch} already exists")
        repo.refs[branch] = repo.resolve(start).sha
    return JSONResponse({})


async def _validate_yaml(request: Request) -> Response:
    return JSONResponse({"errors": [], "warnings": []})


async def _preupload(request: Request) -> Response:
    commit = _revision(request, _repo(request, write=True))
    answers = []
    for item in (await _json_body(request)).get("files", []):
        path, lfs = item["path"], is_lfs_path(item["path"], int(item.get("size", 0)))
        remote = commit.files.get(path)
        oid = None if remote is None else (remote.sha256 if remote.lfs else remote.oid)
        answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": oid})
    return JSONResponse({"files": answers, "commitOid": commit.sha})


async def _lfs_batch(request: Request) -> Response:
    _repo(request, write=True)
    hub, lfs_url = _hub(request), request.app.state.lfs_url
    objects = []
    for item in (await _json_body(request)).get("objects", []):
        oid, size = item["oid"], int(item["size"])
        entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if oid not in hub.lfs_objects:
            entry["actions"] = {"upload": {"href": f"{lfs_url}/lfs/{oid}"},
                                "verify": {"href": f"{lfs_url}/lfs/{oid}/verify"}}
        objects.append(entry)
    return JSONResponse({"transfer": "basic", "objects": objects},
                        media_type="application/vnd.git-lfs+json")


async def _lfs_upload(request: Request) -> Response:
    oid, hub = request.path_params["oid"], _hub(request)
    data = await request.body()
    fault = hub.take_fault(oid)
    if fault is not None:
        await fault.strike()
    if hashlib.sha256(data).hexdigest() != oid:
        raise HubError(400, "", "Uploaded content does not match its oid")
    with hub.lock:
        hub.lfs_objects[oid] = data
    return JSONResponse({})


async def _lfs_verify(request: Request) -> Response:
    oid = request.path_params["oid"]
    payload = await _json_body(request)
    data = _hub(request).lfs_objects.get(oid)
    if data is None or len(data) != int(payload.get("size", -1)):
        raise HubError(404, "", f"Object {oid} was not uploaded")
    return JSONResponse({})


async def _commit(request: Request) -> Response:
    """Apply one NDJSON commit: a header line, then file, LFS file and deletion lines."""
    repo, branch, hub = _repo(request, write=True), request.path_params["rev"], _hub(request)
    if branch not in repo.refs:
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
    lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
    with hub.lock:
        files = dict(repo.resolve(branch).files)
        message = "Commit"
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                message = value.get("summary") or message
            elif key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                data = hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, "", f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = Blob(data, True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound",
                                   f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(folder)}
        commit = hub._commit(repo, branch, files, message)
    return JSONResponse({"success": True, "commitOid": commit.sha,
                         "commitUrl": f"{request.app.state.public_url}/{repo.repo_id}"
                                      f"/commit/{commit.sha}",
                         "pullRequestUrl": None})


_MODEL = "/api/models/{org}/{name}"
_ROUTES = [
    Route(_MODEL, _model_info),
    Route(_MODEL + "/revision/{rev}", _model_info),
    Route(_MODEL + "/tree/{rev}", _tree),
    Route(_MODEL + "/tree/{rev}/{path:path}", _tree),
    Route(_MODEL + "/preupload/{rev}", _preupload, methods=["POST"]),
    Route(_MODEL + "/commit/{rev}", _commit, methods=["POST"]),
    Route(_MODEL + "/branch/{rev}", _create_branch, methods=["POST"]),
    Route("/api/repos/create", _create_repo, methods=["POST"]),
    Route("/api/validate-yaml", _validate_yaml, methods=["POST"]),
    Route("/api/whoami-v2", _whoami),
    Route("/{org}/{name}/resolve/{rev}/{path:path}", _resolve),
    Route("/{org}/{name}.git/info/lfs/objects/batch", _lfs_batch, methods=["POST"]),
    Route("/lfs/{oid}", _lfs_download),
    Route("/lfs/{oid}", _lfs_upload, methods=["PUT"]),
    Route("/lfs/{oid}/verify", _lfs_verify, methods=["POST"]),
]


def create_app(hub: Hub, public_url: str, lfs_url: str, store: Path) -> Starlette:
    """The Hub's routes over ``hub``; ``store`` is a folder for file bytes served from disk."""
    app = Starlette(routes=_ROUTES, middleware=[Middleware(_Gate)],
                    exception_handlers={HubError: _on_hub_error, 404: _no_route,
                                        405: _no_route})
    app.state.hub, app.state.store = hub, store
    app.state.public_url, app.state.lfs_url = public_url, lfs_url
    return app


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class HubServer:
    """Runs uvicorn on a background thread, on the main and the LFS storage port.

    Use as a context manager.
    """

    def __init__(self, hub: Hub | None = None, host: str = "127.0.0.1", port: int = 0,
                 lfs_port: int = 0) -> None:
        self.hub = hub or Hub()
        self._sockets = [_listen(host, port), _listen(host, lfs_port)]
        self.url, self.lfs_url = (f"http://{host}:{s.getsockname()[1]}" for s in self._sockets)
        self._store = tempfile.TemporaryDirectory(prefix="test-hub-")
        app = create_app(self.hub, self.url, self.lfs_url, Path(self._store.name))
        # log_config=None: leave the process's logging alone (tests read Hub.requests).
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                                     timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, args=(self._sockets,),
                                        name="test-hub", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test Hub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.hub.drop_faults()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        self._store.cleanup()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
