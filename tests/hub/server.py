"""A small Hugging Face Hub look-alike, for tests that cannot reach the real Hub.

It speaks the subset of the Hub protocol that huggingface_hub 2.x uses for
``snapshot_download``, ``HfApi.model_info``/``list_repo_tree``, ``create_repo``
and ``upload_folder`` (regular files inline, LFS files through the batch API).
Everything lives in memory; the standard library is the only dependency.

Two listeners share one :class:`Hub`: the main endpoint (``HF_ENDPOINT``) and a
second port standing in for the LFS storage host, so that LFS downloads are a
302 to another origin exactly like the real Hub's CDN redirects.

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
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_TOKEN = "hf_test_token"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.npz", "*.pt", "*.pth", "*.h5",
                "*.onnx", "*.msgpack", "*.model")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 64 * 1024


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

    def take_fault(self, sha256: str) -> Fault | None:
        with self.lock:
            for fault in self.faults.get(sha256, []):
                if fault.times > 0:
                    fault.times -= 1
                    return fault
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        super().__init__(address, _Handler)
        self.hub = hub
        self.public_url = ""  # main endpoint, set by HubServer
        self.lfs_url = ""  # storage endpoint, set by HubServer


Route = tuple[str, re.Pattern[str], str]
_REPO = r"(?P<repo>[^/]+/[^/]+?)"
_ROUTES: list[Route] = [
    (m, re.compile(p), h) for m, p, h in [
        ("GET", rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$", "model_info"),
        ("GET", rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "tree"),
        ("HEAD", rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("GET", rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("HEAD", r"^/lfs/(?P<oid>[0-9a-f]{64})$", "lfs_download"),
        ("GET", r"^/lfs/(?P<oid>[0-9a-f]{64})$", "lfs_download"),
        ("PUT", r"^/lfs/(?P<oid>[0-9a-f]{64})$", "lfs_upload"),
        ("POST", r"^/lfs/(?P<oid>[0-9a-f]{64})/verify$", "lfs_verify"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", rf"^/{_REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("POST", rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$", "commit"),
        ("POST", rf"^/api/models/{_REPO}/branch/(?P<rev>[^/]+)$", "create_branch"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", r"^/api/whoami-v2$", "whoami"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ---- plumbing --------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``Hub.requests`` instead."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    @property
    def hub(self) -> Hub:
        return self.server.hub

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self._body: bytes | None = None
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.hub.requests.append(RequestRecord(self.command, url.path,
                                               self.headers.get("Range"), self._token_valid()))
        try:
            if self._token() is not None and not self._token_valid() \
                    and not url.path.startswith("/lfs/"):
                raise HubError(401, "", "Invalid credentials in Authorization header")
            for method, pattern, name in _ROUTES:
                match = pattern.match(url.path)
                if method == self.command and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, f"_h_{name}")(**params)
                    return
            raise HubError(404, "", f"No route for {self.command} {url.path}")
        except HubError as err:
            self._read_body()
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json({"error": err.message}, err.status, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def _token_valid(self) -> bool:
        return self._token() in self.hub.tokens

    def _read_body(self) -> bytes:
        if self._body is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self._body = b"".join(parts)
        else:
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def _json_body(self) -> Any:
        try:
            return json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, "", f"Invalid JSON body: {exc}") from exc

    def _send_json(self, doc: Any, status: int = 200,
                   headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        """The repo, if this request may see it (and write to it)."""
        token, valid = self._token(), self._token_valid()
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            raise HubError(404 if token else 401, "RepoNotFound", "Repository not found")
        if write and not valid:
            raise HubError(401, "", "Invalid credentials in Authorization header")
        if repo.private and not valid:
            raise HubError(403, "", f"You don't have access to the private repository {repo_id}")
        if repo.gated and not valid:
            raise HubError(403 if token else 401, "GatedRepo",
                           f"Access to model {repo_id} is restricted. You must have access "
                           "to it and be authenticated to access it. Please log in.")
        return repo

    def _send_bytes(self, full: bytes, headers: dict[str, str]) -> None:
        """Answer with a file's bytes, honouring ``Range`` and any planned fault."""
        data, start, status = full, 0, 200
        range_header = self.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not match or int(match.group(1)) >= max(len(full), 1):
                raise HubError(416, "", "Requested range not satisfiable",
                               {"Content-Range": f"bytes */{len(full)}"})
            start = int(match.group(1))
            end = min(int(match.group(2) or len(full) - 1), len(full) - 1)
            data, status = full[start:end + 1], 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(full)}"}
        self.send_response(status)
        for key, value in {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                           "Content-Length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        fault = self.hub.take_fault(hashlib.sha256(full).hexdigest())
        if fault is None:
            for offset in range(0, len(data), _CHUNK):
                self.wfile.write(data[offset:offset + _CHUNK])
            return
        self.wfile.write(data[:max(0, fault.after_bytes - start)])
        self.wfile.flush()
        if fault.kind == "stall":
            fault.reached.set()
            fault.release.wait(timeout=120)
        fault.reached.set()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # ---- read API --------------------------------------------------------------------
    def _h_model_info(self, repo: str, rev: str = "main") -> None:
        found = self._repo(repo)
        commit = found.resolve(rev)
        self._send_json({
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
            "author": repo.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
            "private": found.private, "gated": "manual" if found.gated else False,
            "disabled": False, "tags": [], "library_name": "mlx",
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "usedStorage": sum(len(b.data) for b in commit.files.values()),
        })

    def _h_tree(self, repo: str, rev: str, path: str = "") -> None:
        commit = self._repo(repo).resolve(rev)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
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
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}",
                           {"X-Repo-Commit": commit.sha})
        self._send_json(list(entries.values()))

    def _h_resolve(self, repo: str, rev: str, path: str) -> None:
        commit = self._repo(repo).resolve(rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}",
                           {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.oid}"'}
        if blob.lfs:
            self._read_body()
            self.send_response(302)
            for key, value in {**headers, "Location": f"{self.server.lfs_url}/lfs/{blob.sha256}",
                               "X-Linked-Etag": f'"{blob.sha256}"',
                               "X-Linked-Size": str(len(blob.data)),
                               "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._send_bytes(blob.data, headers)

    def _h_lfs_download(self, oid: str) -> None:
        data = self.hub.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, "", "Object not found")
        self._send_bytes(data, {"ETag": f'"{oid}"'})

    def _h_whoami(self) -> None:
        if not self._token_valid():
            raise HubError(401, "", "Invalid credentials in Authorization header")
        self._send_json({"type": "user", "name": "test-user", "orgs": [],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "test", "role": "write"}}})

    # ---- write API -------------------------------------------------------------------
    def _h_create_repo(self) -> None:
        if not self._token_valid():
            raise HubError(401, "", "Invalid credentials in Authorization header")
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
        url = f"{self.server.public_url}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                self._send_json({"error": "You already created this model repo", "url": url}, 409)
                return
            repo = self.hub.repos[repo_id] = Repo(
                repo_id, private=payload.get("visibility") == "private")
            self.hub._commit(repo, "main", {".gitattributes": Blob(GITATTRIBUTES.encode(), False)},
                             "initial commit")
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _h_create_branch(self, repo: str, rev: str) -> None:
        found = self._repo(repo, write=True)
        with self.hub.lock:
            if rev in found.refs:
                raise HubError(409, "", f"Reference {rev} already exists")
            found.refs[rev] = found.resolve(self._json_body().get("startingPoint") or "main").sha
        self._send_json({})

    def _h_validate_yaml(self) -> None:
        self._read_body()
        self._send_json({"errors": [], "warnings": []})

    def _h_preupload(self, repo: str, rev: str) -> None:
        commit = self._repo(repo, write=True).resolve(rev)
        answers = []
        for item in self._json_body().get("files", []):
            path, lfs = item["path"], is_lfs_path(item["path"], int(item.get("size", 0)))
            remote = commit.files.get(path)
            oid = None if remote is None else (remote.sha256 if remote.lfs else remote.oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers, "commitOid": commit.sha})

    def _h_lfs_batch(self, repo: str) -> None:
        self._repo(repo, write=True)
        objects = []
        for item in self._json_body().get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.server.lfs_url}/lfs/{oid}"},
                                    "verify": {"href": f"{self.server.lfs_url}/lfs/{oid}/verify"}}
            objects.append(entry)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _h_lfs_upload(self, oid: str) -> None:
        data = self._read_body()
        fault = self.hub.take_fault(oid)
        if fault is not None:
            fault.reached.set()
            fault.release.wait(timeout=120)
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "", "Uploaded content does not match its oid")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = data
        self._send_json({})

    def _h_lfs_verify(self, oid: str) -> None:
        payload = self._json_body()
        data = self.hub.lfs_objects.get(oid)
        if data is None or len(data) != int(payload.get("size", -1)):
            raise HubError(404, "", f"Object {oid} was not uploaded")
        self._send_json({})

    def _h_commit(self, repo: str, rev: str) -> None:
        found = self._repo(repo, write=True)
        if rev not in found.refs:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        with self.hub.lock:
            files = dict(found.resolve(rev).files)
            message = "Commit"
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    message = value.get("summary") or message
                elif key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    data = self.hub.lfs_objects.get(value["oid"])
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
            commit = self.hub._commit(found, rev, files, message)
        self._send_json({"success": True, "commitOid": commit.sha,
                         "commitUrl": f"{self.server.public_url}/{repo}/commit/{commit.sha}",
                         "pullRequestUrl": None})


class HubServer:
    """Runs the two listeners in background threads; use as a context manager."""

    def __init__(self, hub: Hub | None = None, host: str = "127.0.0.1", port: int = 0,
                 lfs_port: int = 0) -> None:
        self.hub = hub or Hub()
        self._main = _Server((host, port), self.hub)
        self._lfs = _Server((host, lfs_port), self.hub)
        self.url = f"http://{host}:{self._main.server_address[1]}"
        self.lfs_url = f"http://{host}:{self._lfs.server_address[1]}"
        for server in (self._main, self._lfs):
            server.public_url, server.lfs_url = self.url, self.lfs_url
        self._threads: list[threading.Thread] = []

    def start(self) -> HubServer:
        for server in (self._main, self._lfs):
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        with self.hub.lock:
            for faults in self.hub.faults.values():
                for fault in faults:
                    fault.release.set()
        for server in (self._main, self._lfs):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

