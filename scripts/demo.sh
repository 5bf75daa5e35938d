#!/usr/bin/env bash
# The main job end to end, offline: build a demo model, list it, show it,
# generate with it, chat with it, and serve it over the OpenAI API.
# `make demo` runs this with HF_HOME pointing at ./.demo-home.
set -euo pipefail

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "mlxk2 demo  (build a tiny random-weight MLX chat model into the cache)"
mlxk2 demo

step "mlxk2 list"
mlxk2 list

step "mlxk2 show demo-chat --files"
mlxk2 show demo-chat --files

step "mlxk2 health"
mlxk2 health

step "mlxk2 run demo-chat 'Hello!'  (one-shot; random weights, so expect noise)"
mlxk2 run demo-chat "Hello!" --max-tokens 40 --seed 1

step "mlxk2 run demo-chat 'Hello!' --json"
mlxk2 run demo-chat "Hello!" --max-tokens 20 --json

step "a chat session: two turns from a pipe, with history"
printf 'Hi there\nAnd again\n/exit\n' | mlxk2 run demo-chat --max-tokens 20

step "mlxk2 serve --model demo-chat  (OpenAI-compatible API on 127.0.0.1)"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mlxk2 serve --model demo-chat --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python - "$port" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        urllib.request.urlopen(base + "/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
body = {"model": "demo-chat", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Hello from the demo"}]}
req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
reply = json.load(urllib.request.urlopen(req, timeout=60))
print(json.dumps(reply, indent=2))
PY
kill -TERM "$server"
wait "$server" || true
trap - EXIT

step "mlxk2 demo --embedding; mlxk2 embed demo-embed  (a tiny random-weight embedding model)"
mlxk2 demo --embedding
mlxk2 embed demo-embed "A cat sits on the mat" "Stock markets fell today"
step "done: the demo model lives in \$HF_HOME=$HF_HOME"
