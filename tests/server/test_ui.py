"""The chat page's files as the server sends them: same-origin assets, a strict CSP, --no-ui."""

from __future__ import annotations

import re

import pytest

from mlxk2.server.ui import STATIC_DIR
from tests.fixtures.server import raw_request


def test_page_and_assets_are_served_with_a_strict_policy(live):
    page = raw_request(live.url, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    html = page.body.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/ui/") or a == "data:," for a in assets)
    for asset in assets:
        if asset.startswith("/ui/"):
            assert raw_request(live.url, "GET", asset).status == 200, asset


def test_page_needs_no_key_but_its_api_calls_do(make_server):
    guarded = make_server(api_key="page-key")
    assert raw_request(guarded.url, "GET", "/").status == 200
    assert raw_request(guarded.url, "GET", "/ui/app.js").status == 200
    assert raw_request(guarded.url, "GET", "/v1/models").status == 401


def test_no_ui_serves_no_page(make_server):
    headless = make_server(ui=False)
    assert raw_request(headless.url, "GET", "/").status == 404
    assert raw_request(headless.url, "GET", "/ui/app.js").status == 404


@pytest.mark.parametrize("name", ["index.html", "app.js", "markdown.js", "style.css"])
def test_static_files_load_nothing_from_elsewhere_and_never_parse_html(name):
    text = (STATIC_DIR / name).read_text()
    assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), name
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text
    assert "document.write" not in text and "eval(" not in text
