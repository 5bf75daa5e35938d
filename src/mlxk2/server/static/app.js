// The chat page: talks to this server's OpenAI routes only (same origin).
// The conversation and settings live in localStorage; an API key, asked for
// only when the server answers 401, lives in sessionStorage (this tab only).
"use strict";

const $ = (id) => document.getElementById(id);
const CHAT_KEY = "mlxk2.chat";
const SETTINGS_KEY = "mlxk2.settings";
const API_KEY = "mlxk2.apiKey";

const ui = {
  log: $("log"), model: $("model"), info: $("model-info"), newChat: $("new-chat"),
  system: $("system"), temperature: $("temperature"), maxTokens: $("max-tokens"),
  composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  notice: $("notice"), keyDialog: $("key-dialog"), keyInput: $("key-input"),
};

let chat = readJSON(CHAT_KEY, { messages: [] });
let models = [];
let running = null; // the AbortController of the answer being streamed

function readJSON(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function saveChat() {
  localStorage.setItem(CHAT_KEY, JSON.stringify(chat));
}

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({
    model: ui.model.value, system: ui.system.value,
    temperature: ui.temperature.value, maxTokens: ui.maxTokens.value,
  }));
}

function notice(text) {
  ui.notice.textContent = text || "";
  ui.notice.hidden = !text;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- talking to the server ----------------------------------------------

async function api(path, init = {}) {
  for (;;) {
    const headers = { ...(init.headers || {}) };
    const key = sessionStorage.getItem(API_KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401 || !(await askForKey(Boolean(key)))) return response;
  }
}

function askForKey(refused) {
  ui.keyInput.value = "";
  ui.keyDialog.querySelector("p").textContent = refused
    ? "The server refused that key. Enter it again."
    : "This server needs an API key. It is kept for this browser tab only.";
  ui.keyDialog.showModal();
  return new Promise((resolve) => {
    ui.keyDialog.addEventListener("close", () => {
      const key = ui.keyInput.value.trim();
      const save = ui.keyDialog.returnValue === "save" && key !== "";
      if (save) sessionStorage.setItem(API_KEY, key);
      resolve(save);
    }, { once: true });
  });
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error?.message) return `${body.error.message} (HTTP ${response.status})`;
  } catch { /* not JSON: say what we know */ }
  return `The server answered HTTP ${response.status} ${response.statusText}`.trim();
}

// The JSON payloads of a server-sent event stream, up to [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart()).join("\n");
        if (data === "[DONE]") return;
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---- models -------------------------------------------------------------

function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function timeLeft(iso) {
  const seconds = Math.max(0, (Date.parse(iso) - Date.now()) / 1000);
  return seconds < 90 ? `in ${Math.round(seconds)} s` : `in ${Math.round(seconds / 60)} min`;
}

async function loadModels() {
  let response;
  try {
    response = await api("/v1/models");
  } catch (error) {
    notice(`Cannot reach the server: ${error.message}`);
    return;
  }
  if (!response.ok) {
    notice(`Cannot list the models: ${await errorText(response)}`);
    return;
  }
  models = (await response.json()).data;
  const wanted = ui.model.value || readJSON(SETTINGS_KEY, {}).model;
  ui.model.replaceChildren(...models.map((m) => {
    const traits = [...m.capabilities, ...(m.loaded ? ["loaded"] : [])].join(", ");
    const option = el("option", "", `${m.id} (${traits})`);
    option.value = m.id;
    return option;
  }));
  // The last pick, else a loaded chat model, else any chat model.
  const chatty = (m) => m.capabilities.includes("chat");
  const pick = models.find((m) => m.id === wanted) || models.find((m) => m.loaded && chatty(m))
    || models.find(chatty);
  if (pick) ui.model.value = pick.id;
  describeModel();
  if (models.length === 0) notice("This server has no model to chat with yet.");
}

function describeModel() {
  const m = models.find((x) => x.id === ui.model.value);
  ui.info.textContent = !m ? "" : [
    m.capabilities.join(", ") || "no known capabilities",
    m.context_length ? `${m.context_length.toLocaleString()} tokens of context` : null,
    m.loaded ? `loaded, ${humanSize(m.memory_bytes)}` : `not loaded, ${humanSize(m.size_bytes)}`,
    m.expires_at ? `unloads ${timeLeft(m.expires_at)} if idle` : null,
  ].filter(Boolean).join(" · ");
}

// ---- the conversation ---------------------------------------------------

function statsText(stats) {
  const parts = [];
  if (stats.stopped) parts.push("stopped");
  if (stats.completion_tokens !== undefined) {
    parts.push(`${stats.completion_tokens} tokens`);
    if (stats.tokens_per_second) parts.push(`${stats.tokens_per_second.toFixed(1)} tok/s`);
  }
  if (stats.ttft_ms !== undefined) parts.push(`first token ${Math.round(stats.ttft_ms)} ms`);
  if (stats.prompt_tokens !== undefined) parts.push(`prompt ${stats.prompt_tokens} tokens`);
  return parts.join(" · ");
}

// One message's box; given the box it replaces, the reasoning stays open or shut.
function renderMessage(msg, previous) {
  const box = el("article", `msg ${msg.role}`);
  box.append(el("h2", "who", msg.role === "user" ? "You" : msg.model || "Assistant"));
  if (msg.reasoning) {
    const details = el("details", "reasoning");
    details.open = Boolean(previous?.querySelector("details.reasoning")?.open);
    details.append(el("summary", "", "Reasoning"));
    const thought = el("div", "reasoning-text");
    thought.append(Markdown.render(msg.reasoning));
    details.append(thought);
    box.append(details);
  }
  const content = el("div", "content");
  if (msg.role === "user") content.textContent = msg.content;
  else content.append(Markdown.render(msg.content));
  box.append(content);
  if (msg.error) box.append(el("p", "error", msg.error));
  if (msg.stats) box.append(el("p", "stats", statsText(msg.stats)));
  previous?.replaceWith(box);
  return box;
}

function renderAll() {
  ui.log.replaceChildren(...chat.messages.map((msg) => renderMessage(msg)));
  ui.log.scrollTop = ui.log.scrollHeight;
}

function history() {
  const turns = chat.messages.slice(0, -1)
    .filter((m) => m.role === "user" || (m.role === "assistant" && m.content))
    .map((m) => ({ role: m.role, content: m.content }));
  const system = ui.system.value.trim();
  return system ? [{ role: "system", content: system }, ...turns] : turns;
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
}

function numberOr(input, fallback, parse) {
  const value = parse(input.value);
  return Number.isFinite(value) ? value : fallback;
}

async function send(text) {
  const model = ui.model.value;
  if (!model) {
    notice("Pick a model first.");
    return;
  }
  notice("");
  const reply = { role: "assistant", content: "", reasoning: "", model };
  chat.messages.push({ role: "user", content: text }, reply);
  saveChat();
  renderAll();
  let box = ui.log.lastElementChild;
  const body = {
    model, messages: history(), stream: true, stream_options: { include_usage: true },
    temperature: numberOr(ui.temperature, 0.7, parseFloat),
    max_tokens: numberOr(ui.maxTokens, 1024, (v) => parseInt(v, 10)),
  };
  running = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null;
  let usage = null;
  let painting = false;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) {
      reply.error = await errorText(response);
    } else {
      for await (const event of sseEvents(response)) {
        if (event.error) {
          reply.error = event.error.message;
          break;
        }
        if (event.usage) usage = event.usage;
        const delta = event.choices?.[0]?.delta || {};
        if (delta.content || delta.reasoning_content) {
          first ??= performance.now();
          reply.content += delta.content || "";
          reply.reasoning += delta.reasoning_content || "";
          if (!painting) {
            painting = true;
            requestAnimationFrame(() => {
              painting = false;
              box = renderMessage(reply, box);
              ui.log.scrollTop = ui.log.scrollHeight;
            });
          }
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") reply.error = `Cannot reach the server: ${error.message}`;
  } finally {
    const stopped = running.signal.aborted;
    running = null;
    reply.stats = { stopped };
    if (first !== null) reply.stats.ttft_ms = first - started;
    if (usage && first !== null) {
      const seconds = (performance.now() - first) / 1000;
      reply.stats.completion_tokens = usage.completion_tokens;
      reply.stats.prompt_tokens = usage.prompt_tokens;
      if (usage.completion_tokens > 1 && seconds > 0) {
        reply.stats.tokens_per_second = (usage.completion_tokens - 1) / seconds;
      }
    }
    setBusy(false);
    saveChat();
    requestAnimationFrame(() => {
      box = renderMessage(reply, box);
      ui.log.scrollTop = ui.log.scrollHeight;
    });
    loadModels();
  }
}

// ---- wiring -------------------------------------------------------------

function restore() {
  const settings = readJSON(SETTINGS_KEY, {});
  if (settings.system !== undefined) ui.system.value = settings.system;
  if (settings.temperature !== undefined) ui.temperature.value = settings.temperature;
  if (settings.maxTokens !== undefined) ui.maxTokens.value = settings.maxTokens;
  if (!Array.isArray(chat.messages)) chat = { messages: [] };
  for (const msg of chat.messages) {
    // An answer that was streaming when the page closed ended there.
    if (msg.role === "assistant" && !msg.stats && !msg.error) msg.stats = { stopped: true };
  }
  renderAll();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || running) return;
  ui.prompt.value = "";
  send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running) running.abort();
});

ui.stop.addEventListener("click", () => running?.abort());

ui.newChat.addEventListener("click", () => {
  running?.abort();
  chat = { messages: [] };
  saveChat();
  renderAll();
  ui.prompt.focus();
});

ui.model.addEventListener("change", () => {
  describeModel();
  saveSettings();
});
for (const input of [ui.system, ui.temperature, ui.maxTokens]) {
  input.addEventListener("change", saveSettings);
}

restore();
loadModels();
ui.prompt.focus();
