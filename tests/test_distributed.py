"""Each trainer under `accelerate launch` with DeepSpeed ZeRO-3 (`recipes/accelerate/zero3_cpu.yaml`: one CPU process,
`zero3_init_flag`), through the `trl-distill` commands; more ranks need GPUs."""

import os
import subprocess
import sys

import pytest
import torch


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ("scas", "dmc", "ogls-sd", "camopd")


def launch(
    config: str, num_processes: int, output_dir: str, jobs, extra=(), timeout: int = 600
) -> dict[str, list[str]]:
    """Runs `tests/distributed_smoke.py` under `accelerate launch`; returns each job's `SMOKE` line, split."""
    pytest.importorskip("deepspeed")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config]
    command += ["--num_processes", str(num_processes), os.path.join(ROOT, "tests", "distributed_smoke.py")]
    result = subprocess.run(
        command + [output_dir, *jobs, "--", *extra], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("SMOKE ")]
    return {parts[1]: parts[2:] for parts in lines}


def test_every_trainer_runs_under_zero3_with_one_cpu_process(tmp_path, monkeypatch):
    """All four trainers in one launched process (one DeepSpeed start-up), two optimizer steps each."""
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    config = os.path.join(ROOT, "recipes", "accelerate", "zero3_cpu.yaml")
    smoke = launch(config, 1, str(tmp_path / "out"), JOBS)
    trainers = {"scas": "SCASTrainer", "dmc": "SFTTrainer", "ogls-sd": "OGLSSDTrainer", "camopd": "CaMOPDTrainer"}
    for job in JOBS:
        distributed_type, stage, trainer, _, status, steps = smoke[job]
        assert (distributed_type, stage, trainer) == ("DEEPSPEED", "3", trainers[job]), smoke[job]
        assert status == "status=0" and steps == "steps=2"
        # zero3_save_16bit_model gathers the shards into one full checkpoint
        assert os.path.exists(tmp_path / "out" / job / "model.safetensors")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="ZeRO-3 across ranks needs at least 2 GPUs")
@pytest.mark.parametrize("config", ["zero3.yaml", "zero2.yaml", "multi_gpu.yaml"])
def test_every_trainer_runs_on_two_gpus(config, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    overrides = ["--use_cpu", "false"]  # the toy recipes pin the CPU; their `bf16: false` runs as it is (fp32)
    smoke = launch(os.path.join(ROOT, "recipes", "accelerate", config), 2, str(tmp_path / "out"), JOBS, overrides)
    assert sorted(smoke) == sorted(JOBS) and all(parts[-1] == "steps=2" for parts in smoke.values())
