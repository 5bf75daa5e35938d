"""The chat page in a real browser (Debian's Chromium driven by Playwright) against a
real ``mlxk2 serve`` process with the demo models.

The browser is the system's; nothing is downloaded (``playwright install`` is never
run). ``make browser`` installs Chromium when it is missing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import CHAT, CHAT_4BIT
from tests.fixtures.server import ServeProcess, raw_request

CHROMIUM = Path(os.environ.get("MLXK2_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KEY = "page-secret"
# At temperature 0 the demo chat model answers this until its token budget runs out.
ENDLESS = "Go on forever."


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run 'make browser' (as root)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(serve_process) -> ServeProcess:
    return serve_process("--model", CHAT, "--max-loaded-models", "2")


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    """A fresh browser context (empty storage) on the chat page, models listed."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector(f"#model option[value='{CHAT}']", state="attached")
    yield page
    context.close()
    assert errors == []  # no uncaught script error on the page


def _settings(page: Any, *, temperature: str = "0", max_tokens: str) -> None:
    page.click("#settings summary")
    page.fill("#temperature", temperature)
    page.fill("#max-tokens", max_tokens)


def _send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _answer(page: Any) -> Any:
    return page.locator(".msg.assistant").last


def _wait_answered(page: Any, timeout: float = 60_000) -> None:
    page.wait_for_selector(".msg.assistant:last-child .stats", timeout=timeout)


def _metric(server: ServeProcess, name: str) -> float:
    for line in raw_request(server.url, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_picked_model_streams_an_answer_that_grows(page, server, tmp_path):
    options = page.locator("#model option").all_inner_texts()
    assert f"{CHAT} (text-generation, chat, loaded)" in options
    assert f"{CHAT_4BIT} (text-generation, chat)" in options
    page.select_option("#model", CHAT_4BIT)
    assert "not loaded" in page.inner_text("#model-info")
    assert "text-generation, chat" in page.inner_text("#model-info")
    _settings(page, max_tokens="300")
    page.evaluate("""() => {
        window.lengths = [];
        new MutationObserver(() => {
            const content = document.querySelector('.msg.assistant:last-child .content');
            if (content) window.lengths.push(content.textContent.length);
        }).observe(document.getElementById('log'),
                   {subtree: true, childList: true, characterData: true});
    }""")
    _send(page, ENDLESS)
    _wait_answered(page)
    lengths = page.evaluate("window.lengths")
    growth = sorted(set(lengths))
    assert len(growth) >= 3 and growth == sorted(growth) and growth[-1] > 0
    assert lengths[-1] == growth[-1]  # it only ever grew
    answer = _answer(page)
    assert answer.locator(".who").inner_text() == CHAT_4BIT
    stats = answer.locator(".stats").inner_text()
    assert "300 tokens" in stats and "tok/s" in stats and "first token" in stats
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()
    page.wait_for_selector(f"#model option[value='{CHAT_4BIT}']:text('chat, loaded')",
                           state="attached")
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_stop_ends_generation_on_the_server(page, server):
    _settings(page, max_tokens="2000")
    disconnects = _metric(server, "mlxk2_client_disconnects_total")
    generated = _metric(server, "mlxk2_generated_tokens_total")
    _send(page, ENDLESS)
    page.wait_for_function(
        "() => document.querySelector('.msg.assistant:last-child .content')"
        ".textContent.length > 20")
    page.click("#stop")
    _wait_answered(page, timeout=10_000)
    assert _answer(page).locator(".stats").inner_text().startswith("stopped")
    deadline = time.monotonic() + 10
    while _metric(server, "mlxk2_active_requests") != 0:
        assert time.monotonic() < deadline, "the server kept generating"
        time.sleep(0.1)
    assert _metric(server, "mlxk2_client_disconnects_total") == disconnects + 1
    # A run that reaches its end counts its tokens; a cancelled one never does.
    assert _metric(server, "mlxk2_generated_tokens_total") == generated
    assert page.locator("#send").is_visible()


def test_reload_restores_the_conversation_and_new_chat_clears_it(page, server):
    _settings(page, max_tokens="8")
    page.fill("#prompt", "First line")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "second line")
    assert page.locator(".msg").count() == 0  # Shift+Enter did not send
    page.press("#prompt", "Enter")
    _wait_answered(page)
    before = page.locator(".msg").all_inner_texts()
    assert page.locator(".msg.user .content").inner_text() == "First line\nsecond line"
    page.reload()
    page.wait_for_selector(".msg.assistant .stats")
    assert page.locator(".msg").all_inner_texts() == before
    assert page.input_value("#max-tokens") == "8"
    page.click("#new-chat")
    page.reload()
    page.wait_for_selector(f"#model option[value='{CHAT}']", state="attached")
    assert page.locator(".msg").count() == 0


HOSTILE = ("Look: <script>window.pwned = 'script'</script> and "
           "<img src=x onerror=\"window.pwned = 'img'\"> and "
           "[click](javascript:window.pwned='link') **<b>bold</b>**\n\n"
           "```html\n<script>window.pwned = 'fence'</script>\n```\n")


def _assert_rendered_as_text(page: Any) -> None:
    content = _answer(page).locator(".content")
    text = content.inner_text()
    assert "<script>window.pwned = 'script'</script>" in text
    assert "<img src=x onerror=\"window.pwned = 'img'\">" in text
    assert content.locator("script, img, b, a").count() == 0
    assert content.locator("pre code").inner_text() == "<script>window.pwned = 'fence'</script>"
    assert content.locator("strong").inner_text() == "<b>bold</b>"
    assert page.evaluate("window.pwned") is None


def _sse(chunks: list[dict[str, Any]]) -> str:
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
            "model": CHAT}
    return "".join(f"data: {json.dumps({**base, **c})}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_markup_in_a_streamed_answer_renders_as_text_and_reasoning_stays_apart(page):
    # The demo model cannot be made to write this text, so the browser is handed a
    # stream in the server's exact chunk format through the page's real fetch path.
    pieces = [HOSTILE[i:i + 17] for i in range(0, len(HOSTILE), 17)]
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"index": 0, "delta": {
                  "reasoning_content": "Thinking <img src=x onerror=\"window.pwned=1\">"}}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 42,
                                            "total_tokens": 47}})
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=_sse(chunks)))
    _send(page, "Say something nasty.")
    _wait_answered(page)
    _assert_rendered_as_text(page)
    reasoning = _answer(page).locator("details.reasoning")
    assert reasoning.get_attribute("open") is None
    assert not reasoning.locator(".reasoning-text").is_visible()
    reasoning.locator("summary").click()
    assert reasoning.locator(".reasoning-text").inner_text().startswith("Thinking <img")
    assert "Thinking" not in _answer(page).locator(".content").inner_text()
    assert "42 tokens" in _answer(page).locator(".stats").inner_text()


def test_markup_in_a_stored_answer_renders_as_text_after_reload(page):
    stored = {"messages": [{"role": "user", "content": "<script>window.pwned='user'</script>"},
                           {"role": "assistant", "content": HOSTILE, "reasoning": "",
                            "model": CHAT, "stats": {"stopped": False}}]}
    page.evaluate("chat => localStorage.setItem('mlxk2.chat', JSON.stringify(chat))", stored)
    page.reload()
    page.wait_for_selector(".msg.assistant .content pre")
    _assert_rendered_as_text(page)
    assert page.locator(".msg.user .content").inner_text() == \
        "<script>window.pwned='user'</script>"


def test_server_errors_are_shown_readably(page):
    _settings(page, max_tokens="0")
    _send(page, "hi")
    error = page.wait_for_selector(".msg.assistant:last-child .error")
    assert "max_tokens" in error.inner_text() and "HTTP 400" in error.inner_text()


def test_narrow_dark_window(browser, server, tmp_path):
    context = browser.new_context(color_scheme="dark", viewport={"width": 380, "height": 700})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector(f"#model option[value='{CHAT}']", state="attached")
    _settings(page, max_tokens="40")
    _send(page, "Hello there, how are you today?")
    _wait_answered(page)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 22, 24)"
    assert page.evaluate("document.documentElement.scrollWidth") <= 380
    for selector in ("#send", "#prompt", "#model", "#new-chat"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 380, selector
    page.screenshot(path=str(tmp_path / "narrow-dark.png"), full_page=True)
    context.close()


def test_api_key_is_asked_for_on_401_and_kept_for_the_tab_only(browser, serve_process):
    guarded = serve_process("--model", CHAT, MLXK2_API_KEY=KEY)
    context = browser.new_context()
    page = context.new_page()
    page.goto(guarded.url + "/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "wrong")
    page.click("#key-save")
    page.wait_for_selector("#key-dialog[open] >> text=refused")
    page.fill("#key-input", KEY)
    page.click("#key-save")
    page.wait_for_selector(f"#model option[value='{CHAT}']", state="attached")
    _settings(page, max_tokens="4")
    _send(page, "hi")
    _wait_answered(page)
    assert "4 tokens" in _answer(page).locator(".stats").inner_text()
    assert page.evaluate("sessionStorage.getItem('mlxk2.apiKey')") == KEY
    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert KEY not in stored
    context.close()


def test_markdown_becomes_structure_and_only_web_links_become_links(page):
    answer = ("## Title\n\nSome **bold**, *italic* and `code` with "
              "[a link](https://example.org/x).\n\n- one\n- two\n\n1. first\n2. second\n\n"
              "> quoted\n\n```python\nprint('hi')\n```")
    stored = {"messages": [{"role": "user", "content": "Format it."},
                           {"role": "assistant", "content": answer, "reasoning": "",
                            "model": CHAT, "stats": {"stopped": False}}]}
    page.evaluate("chat => localStorage.setItem('mlxk2.chat', JSON.stringify(chat))", stored)
    page.reload()
    content = page.wait_for_selector(".msg.assistant .content")
    assert content.query_selector("h4").inner_text() == "Title"
    assert content.query_selector("strong").inner_text() == "bold"
    assert content.query_selector("em").inner_text() == "italic"
    assert content.query_selector("p code").inner_text() == "code"
    link = content.query_selector("a")
    assert (link.inner_text(), link.get_attribute("href")) == ("a link", "https://example.org/x")
    assert "noopener" in link.get_attribute("rel")
    assert [li.inner_text() for li in content.query_selector_all("ul li")] == ["one", "two"]
    assert [li.inner_text() for li in content.query_selector_all("ol li")] == ["first", "second"]
    assert content.query_selector("blockquote").inner_text() == "quoted"
    code = content.query_selector("pre code")
    assert (code.inner_text(), code.get_attribute("data-lang")) == ("print('hi')", "python")
