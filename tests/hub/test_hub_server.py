"""The test Hub against the real huggingface_hub client: downloads, errors, uploads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fixtures.hub import tiny_model_files, unique_repo, write_files
from tests.hub import Hub, HubServer


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def test_snapshot_download_fetches_regular_lfs_and_nested_files(
        hub_server: HubServer, hub: Hub, tmp_path: Path) -> None:
    repo = unique_repo()
    files = {**tiny_model_files(), "sub/notes.txt": b"nested"}
    sha = hub.seed(repo, files=files)

    path = Path(snapshot_download(repo, cache_dir=tmp_path, endpoint=hub_server.url))

    assert path.name == sha
    assert {p.relative_to(path).as_posix(): p.read_bytes()
            for p in path.rglob("*") if p.is_file()} == files
    assert HfApi(endpoint=hub_server.url).model_info(repo).sha == sha


def test_lfs_file_redirects_to_storage_port_with_linked_etag(
        hub_server: HubServer, hub: Hub) -> None:
    repo = unique_repo()
    hub.seed(repo, files=tiny_model_files())
    request = urllib.request.Request(
        f"{hub_server.url}/{repo}/resolve/main/model.safetensors", method="HEAD")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(NoRedirect).open(request)

    assert answer.value.code == 302
    assert answer.value.headers["Location"].startswith(hub_server.lfs_url)
    assert len(answer.value.headers["X-Linked-Etag"].strip('"')) == 64
    assert answer.value.headers["X-Repo-Commit"] == hub.head(repo)


def test_range_request_is_answered_with_206(hub_server: HubServer, hub: Hub) -> None:
    repo = unique_repo()
    hub.seed(repo, files={"config.json": b"0123456789"})
    request = urllib.request.Request(f"{hub_server.url}/{repo}/resolve/main/config.json",
                                     headers={"Range": "bytes=4-"})

    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 4-9/10"
        assert response.read() == b"456789"


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("missing", RepositoryNotFoundError),
        ("gated", GatedRepoError),
        ("bad_revision", RevisionNotFoundError),
    ],
)
def test_errors_select_the_client_exception(hub_server: HubServer, hub: Hub, tmp_path: Path,
                                            setup: str, error: type[Exception]) -> None:
    repo = unique_repo()
    if setup != "missing":
        hub.seed(repo, files={"config.json": b"{}"}, gated=setup == "gated")
    revision = "no-such-branch" if setup == "bad_revision" else None

    with pytest.raises(error):
        snapshot_download(repo, revision=revision, cache_dir=tmp_path, endpoint=hub_server.url,
                          token=False)


def test_missing_file_is_entry_not_found(hub_server: HubServer, hub: Hub, tmp_path: Path) -> None:
    repo = unique_repo()
    hub.seed(repo, files={"config.json": b"{}"})

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo, "nope.json", cache_dir=tmp_path, endpoint=hub_server.url)


def test_private_repo_needs_a_valid_token(hub_server: HubServer, hub: Hub, hub_token: str) -> None:
    repo = unique_repo()
    hub.seed(repo, files={"config.json": b"{}"}, private=True)

    with pytest.raises(HfHubHTTPError) as denied:
        HfApi(endpoint=hub_server.url, token=False).model_info(repo)
    assert denied.value.response.status_code == 403
    assert HfApi(endpoint=hub_server.url, token=hub_token).model_info(repo).private is True


def test_dropped_connection_is_resumed_with_a_range_request(
        hub_server: HubServer, hub: Hub, tmp_path: Path) -> None:
    # huggingface_hub writes in 10 MiB chunks, so only a drop past the first chunk resumes.
    repo = unique_repo()
    big = os.urandom(10 * 1024 * 1024 + 4096)
    hub.seed(repo, files={"model.safetensors": big})
    hub.add_fault(repo, "model.safetensors", "drop", after_bytes=10 * 1024 * 1024 + 100)

    path = hf_hub_download(repo, "model.safetensors", cache_dir=tmp_path, endpoint=hub_server.url)

    assert Path(path).read_bytes() == big
    assert any(r.range == f"bytes={10 * 1024 * 1024}-" for r in hub.requests)


def test_create_repo_and_upload_folder_round_trip(
        hub_server: HubServer, hub: Hub, hub_token: str, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub_server.url, token=hub_token)
    repo = unique_repo("test-user")
    url = api.create_repo(repo)
    assert api.create_repo(repo, exist_ok=True) == url
    folder = write_files(tmp_path / "ws", tiny_model_files())

    first = api.upload_folder(repo_id=repo, folder_path=folder)
    again = api.upload_folder(repo_id=repo, folder_path=folder)

    assert again.oid == first.oid == hub.head(repo)
    assert hub.files(repo) == {".gitattributes": hub.files(repo)[".gitattributes"],
                               **tiny_model_files()}
    with pytest.raises(HfHubHTTPError) as refused:
        HfApi(endpoint=hub_server.url, token="hf_wrong").create_repo(unique_repo("test-user"))
    assert refused.value.response.status_code == 401


def test_runs_by_hand_with_seeded_folders(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "model", tiny_model_files())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", "--port", "0", "--seed", f"org/by-hand={folder}"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        with urllib.request.urlopen(f"{url}/api/models/org/by-hand") as response:
            info = json.load(response)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    assert info["id"] == "org/by-hand"
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(tiny_model_files())
