"""The README's "On a real model" block runs as printed (about 2 minutes on 2 cores, so `slow`: the real tier's other
tests cover each of its commands on the same checkpoint; run it with `pytest -m slow tests/real/test_readme_real.py`)."""

import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_real_block() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("```bash", text.index("## On a real model")) + len("```bash\n")
    return text[start : text.index("```", start)]


@pytest.mark.slow
def test_the_readme_real_model_commands_run_as_printed(smollm2_dir, tmp_path):
    block = readme_real_block()
    assert "fetch-model smollm2-135m-instruct" in block
    # the block activates the clone's .venv; here the running interpreter's bin directory plays that part
    script = block.replace("source .venv/bin/activate", f"export PATH={os.path.dirname(sys.executable)}:$PATH")
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for produced in ("pool/pool.jsonl", "scores/selected.jsonl", "scas/model.safetensors", "rse.json"):
        assert (tmp_path / "real_run" / produced).exists(), produced


def test_the_readme_real_model_block_uses_files_that_exist():
    block = readme_real_block()
    for word in block.split():
        if word.startswith("examples/"):
            assert os.path.exists(os.path.join(ROOT, word)), word
