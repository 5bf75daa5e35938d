"""The README's first command runs end to end: the real demo model, list, show, run, chat, serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import REPO_ROOT, cli_env


@pytest.mark.timeout(900)  # imports and runs a real 135M model on a shared CPU
def test_demo_script_runs_the_main_job_offline(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "hf_home", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "demo.sh")], env=env,
                          capture_output=True, text=True, timeout=840, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "mlxk2/SmolLM2-135M-Instruct" in out
    assert "Paris" in out
    assert "\033[" not in out
    chat_completion = json.loads(out[out.index('{\n  "id": "chatcmpl-'):].split("\n}\n")[0] + "\n}")
    assert chat_completion["object"] == "chat.completion"
    assert chat_completion["usage"]["completion_tokens"] > 0
    assert (tmp_path / "hf_home" / "hub" / "models--mlxk2--SmolLM2-135M-Instruct").is_dir()
    embedded = [line for line in out.splitlines() if "dim=64  norm=1.0000" in line]
    assert [line.split("  [")[0].strip() for line in embedded] == \
        ["A cat sits on the mat", "Stock markets fell today"]
