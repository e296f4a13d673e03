"""`build-pool` from the command line: a SIGKILLed run resumes to the uninterrupted pool; recipes parse."""

import os
import signal
import subprocess
import sys
import time

import pytest
from trl import TrlParser

from trl_distill.pool.build_pool_config import BuildPoolConfig
from trl_distill.pool.builder import load_pool
from trl_distill.scripts.build_pool import main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes", "build_pool")
NUM_PROMPTS = 10


@pytest.fixture(scope="module")
def cli_args(tmp_path_factory, tokenizer):
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.lab.world.tasks import make_task_splits

    root = tmp_path_factory.mktemp("cli")
    for name, seed in (("t1", 0), ("t2", 1)):
        tiny_model(tokenizer, "xs", "llama", seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    prompts = make_task_splits(("arithmetic",), train_size=NUM_PROMPTS, dev_size=1, test_size=1, seed=0)["train"]
    prompts.to_json(root / "prompts.jsonl")
    teachers = [str(root / "t1"), f"name=t2-hot,model={root / 't2'},temperature=1.3"]
    # one prompt per shard: 20 shards, so the kill below lands well before the end
    return ["--teachers", *teachers, "--dataset_name", str(root / "prompts.jsonl"), "--n", "2", "--verifier", "numeric",
            "--max_new_tokens", "8", "--shard_size", "1", "--seed", "5"]  # fmt: skip


def shard_files(output_dir):
    shards = os.path.join(output_dir, "shards")
    if not os.path.isdir(shards):
        return []
    return [f for d in os.listdir(shards) for f in os.listdir(os.path.join(shards, d)) if f.endswith(".jsonl")]


def test_sigkilled_cli_run_resumes_to_the_uninterrupted_pool(tmp_path, cli_args, capsys):
    reference_dir, killed_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
    assert main([*cli_args, "--output_dir", reference_dir]) == 0
    assert "any teacher" in capsys.readouterr().out  # the summary table

    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "trl_distill.scripts.build_pool", *cli_args, "--output_dir", killed_dir]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(shard_files(killed_dir)) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    done = len(shard_files(killed_dir))
    assert 3 <= done < 2 * NUM_PROMPTS and not os.path.exists(os.path.join(killed_dir, "pool.jsonl"))

    assert main([*cli_args, "--output_dir", killed_dir]) == 0
    assert load_pool(killed_dir).to_list() == load_pool(reference_dir).to_list()
    for name in ("pool.jsonl", "summary.json"):
        with open(os.path.join(killed_dir, name)) as a, open(os.path.join(reference_dir, name)) as b:
            assert a.read() == b.read(), name

    # other arguments against the finished pool: refused with the difference named, exit status 2
    capsys.readouterr()
    assert main([*cli_args, "--output_dir", killed_dir, "--n", "3"]) == 2
    assert "n was 2, now 3" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(os.listdir(RECIPES)))
def test_recipe_parses_into_config(recipe, tmp_path):
    parser = TrlParser((BuildPoolConfig,))
    (config,) = parser.parse_args_and_config(
        args=["--config", os.path.join(RECIPES, recipe), "--output_dir", str(tmp_path)]
    )
    assert isinstance(config, BuildPoolConfig) and len(config.teacher_specs) >= 2
    assert len({spec.name for spec in config.teacher_specs}) == len(config.teacher_specs)
    assert config.n >= 2 and all(spec.temperature > 0 for spec in config.teacher_specs)
    if recipe == "toy.yaml":
        assert all(spec.model.startswith("lab:") for spec in config.teacher_specs) and config.verifier == "lab:task"
        assert config.dataset_name == "lab:pool_prompts?prompts=64"
    elif recipe == "endpoint-teachers.yaml":
        backends = [spec.backend for spec in config.teacher_specs]
        assert backends == ["endpoint", "endpoint", "endpoint", "vllm"]
        hosted = next(spec for spec in config.teacher_specs if spec.name == "hosted")
        assert hosted.api_key_env == "HOSTED_API_KEY" and hosted.requests_per_second == 5
    else:
        assert config.dataset_name and config.backend == "vllm" and config.verifier == "math_verify"
        r1 = next(spec for spec in config.teacher_specs if spec.name.startswith("r1"))
        assert r1.system == "" and r1.temperature == 0.6  # per-teacher settings override the defaults
        assert config.teacher_specs[0].system.endswith(r"\boxed{}.")


@pytest.mark.slow  # two extra interpreters; shard seeding independent of who answers is covered by the resume tests
def test_two_processes_write_the_single_process_pool(tmp_path, cli_args):
    """Two real CPU processes (`accelerate launch --multi_gpu` with no GPU visible: torchrun underneath; `--cpu`
    would start one process) split the shards between them and write the one-process pool byte for byte."""
    import json

    single, double, records = str(tmp_path / "single"), str(tmp_path / "double"), tmp_path / "records"
    records.mkdir()
    assert main([*cli_args, "--output_dir", single, "--shard_size", "3"]) == 0
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    launch += [os.path.join(ROOT, "tests", "multiprocess_pool.py"), str(records)]
    result = subprocess.run(
        [*launch, *cli_args, "--output_dir", double, "--shard_size", "3"], env=env, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["num_processes"]) for r in ranks] == [(0, 2), (1, 2)]
    # 10 prompts in shards of 3: 4 shards per teacher, dealt round-robin (0, 2 to rank 0; 1, 3 to rank 1)
    assert ranks[0]["generated"] == [[t, k] for t in (0, 1) for k in (0, 2)]
    assert ranks[1]["generated"] == [[t, k] for t in (0, 1) for k in (1, 3)]
    with open(os.path.join(single, "pool.jsonl")) as a, open(os.path.join(double, "pool.jsonl")) as b:
        assert a.read() == b.read()


def test_config_names_a_packaged_recipe(tmp_path, monkeypatch):
    """`--config build_pool/toy` is the packaged recipe, as in the command's docstring (before: FileNotFoundError)."""
    from datasets import Dataset

    import trl_distill.scripts.build_pool as command

    built = {}
    monkeypatch.setattr(command, "resolve_model_path", lambda model, what: model)  # no teacher is loaded
    monkeypatch.setattr(command, "load_data", lambda *a: Dataset.from_dict({"prompt": ["1 + 1 ="] * 4}))
    monkeypatch.setattr(command, "build_pool", lambda dataset, **settings: built.update(settings, rows=len(dataset)))
    assert main(["--config", "build_pool/toy", "--max_prompts", "2", "--output_dir", str(tmp_path)]) == 0
    assert built["rows"] == 2 and built["verifier"] == "lab:task"
    assert all(spec.model.startswith("lab:") for spec in built["teachers"])
