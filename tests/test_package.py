"""What a pip user gets: `trl-distill --version`, `--help` and `recipes` without loading TRL, `trl-distill env`, the
recipes and accelerate configs inside the package, `--config NAME` and `--lab` without a recipe, `--dtype` with
`--lab`, and the built wheel working in a fresh venv from an empty folder."""

import ast
import glob
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from trl_distill import cli
from trl_distill.scripts import recipes
from trl_distill.scripts.utils import config_argv


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SITE = os.path.join(
    os.path.dirname(os.path.dirname(sys.executable)),
    "lib",
    f"python{sys.version_info.major}.{sys.version_info.minor}",
    "site-packages",
)


def run(args: list[str], cwd: str, python: str = sys.executable, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=environment, timeout=900)


def test_version_help_and_recipes_do_not_import_trl_or_torch():
    code = (
        "import sys; from trl_distill import cli\n"
        "for argv in (['--version'], ['--help'], ['recipes']): assert cli.main(argv) == 0\n"
        "print(sorted(m for m in ('trl', 'torch', 'transformers') if m in sys.modules))"
    )
    result = run([sys.executable, "-c", code], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"trl-distill {metadata.version('trl-distill')}" and lines[-1] == "[]"
    assert "env" in result.stdout and "recipes" in result.stdout


def test_env_prints_each_library_version_cuda_and_the_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    assert cli.main(["env"]) == 0
    lines = {
        line[2:].split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("- ")
    }
    for name in ("trl", "transformers", "torch", "accelerate", "peft", "datasets"):
        assert lines[f"{name} version"] == metadata.version(name), name
    for name in ("deepspeed", "bitsandbytes", "vllm"):  # optional: a version or "not installed"
        try:
            expected = metadata.version(name)
        except metadata.PackageNotFoundError:
            expected = "not installed"
        assert lines[f"{name} version"] == expected, name
    assert lines["CUDA available"].startswith("yes" if torch.cuda.is_available() else "no")
    assert lines["Cache path ($TRL_DISTILL_CACHE)"] == str(tmp_path / "cache")


def test_the_package_holds_every_recipe_and_accelerate_config():
    on_disk = sorted(
        os.path.relpath(path, os.path.join(ROOT, "recipes")).removesuffix(".yaml")
        for path in glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True)
    )
    assert recipes.list_recipes() == on_disk
    assert {"scas/toy", "dmc/toy", "ogls_sd/toy", "camopd/toy", "accelerate/multi_cpu"} <= set(on_disk)


def test_recipes_cp_copies_a_recipe_and_refuses_to_overwrite(tmp_path, capsys):
    assert cli.main(["recipes", "cp", "ogls-sd/toy", str(tmp_path / "mine") + "/"]) == 0
    copied = tmp_path / "mine" / "toy.yaml"
    assert copied.read_bytes() == open(os.path.join(ROOT, "recipes", "ogls_sd", "toy.yaml"), "rb").read()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["recipes", "cp", "ogls_sd/toy", str(tmp_path / "mine")])
    assert exit_info.value.code == 1 and "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["recipes", "cp", "scas/nope", str(tmp_path)])
    assert "No packaged recipe 'scas/nope'" in capsys.readouterr().err and "scas/toy" in recipes.recipe_path(
        "scas/toy"
    )


def test_config_names_and_lab_without_a_config_use_the_packaged_recipes(tmp_path):
    from trl_distill.cli import expand_lab_alias

    toy = os.path.join(recipes.recipes_dir(), "scas", "toy.yaml")
    assert os.path.samefile(expand_lab_alias("scas", ["--lab"])[1], toy)
    assert expand_lab_alias("scas", ["--lab"])[0] == "--config"
    assert expand_lab_alias("scas", ["--lab=true", "--max_steps", "1"])[2:] == ["--max_steps", "1"]
    assert expand_lab_alias("scas", ["--lab", "false"]) == []  # no lab, no recipe added
    assert config_argv(["--config", "scas/toy"]) == ["--config", toy]
    mine = tmp_path / "mine.yaml"
    mine.write_text("max_steps: 1\n")
    assert expand_lab_alias("scas", ["--lab", "--config", str(mine)]) == ["--config", str(mine)]  # the user's recipe
    # dmc-rank has no recipe: --lab stands for the toy world's flags
    flags = expand_lab_alias("dmc-rank", ["--lab"])
    assert flags[:2] == ["--model_name_or_path", "lab:dmc_student"] and "lab:task" in flags
    with pytest.raises(FileNotFoundError, match="--config scas/tyo: no such file.*scas/toy"):
        config_argv(["--config", "scas/tyo"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_lab_student_honours_dtype(dtype, tmp_path):
    from trl_distill.scripts.scas import load_model_and_pool, make_parser

    argv = config_argv(["--config", "scas/toy", "--dataset_name", "lab:scas_pool?prompts=2"])
    argv += ["--model_name_or_path", "lab:scas_student?size=xs", "--dtype", dtype]
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        args=[*argv, "--output_dir", str(tmp_path)]
    )
    assert training_args.use_cpu  # the toy recipe's CPU-safe settings
    model, *_ = load_model_and_pool(script_args, training_args, model_args)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


def test_the_wheel_installs_in_a_fresh_venv_and_runs_from_an_empty_folder(tmp_path):
    """Build the wheel, install it (no deps) in a venv that reuses this interpreter's installed libraries through a
    `.pth` line, and run `trl-distill env` and `trl-distill scas --lab --max_steps 1` from an empty folder."""
    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    build = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), ROOT], ROOT
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = glob.glob(str(wheels / "trl_distill-*.whl"))
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], ROOT).returncode == 0
    python = str(venv / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], ROOT).stdout.strip()
    # a plain path line: the shared libraries without their `.pth` hooks (so no editable trl_distill leaks in)
    with open(os.path.join(site, "zz_shared_site.pth"), "w") as f:
        f.write(SHARED_SITE + "\n")
    install = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], ROOT)
    assert install.returncode == 0, install.stderr
    trl_distill = str(venv / "bin" / "trl-distill")

    env = run([trl_distill, "env"], str(empty), PYTHONPATH="")
    assert env.returncode == 0, env.stderr
    assert f"trl-distill location:            {os.path.join(site, 'trl_distill')}" in env.stdout
    assert f"trl version:                     {metadata.version('trl')}" in env.stdout
    listed = run([trl_distill, "recipes"], str(empty), PYTHONPATH="")
    assert "accelerate/multi_cpu" in listed.stdout and "scas/toy" in listed.stdout

    argv = [trl_distill, "scas", "--lab", "--max_steps", "1", "--dataset_name", "lab:scas_pool?prompts=4"]
    argv += ["--model_name_or_path", "lab:scas_student?size=xs"]
    train = run(
        [*argv, "--per_device_train_batch_size", "4"], str(empty), PYTHONPATH="", TRL_DISTILL_CACHE=str(tmp_path)
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert os.path.exists(empty / "outputs" / "scas-toy" / "model.safetensors"), sorted(os.listdir(empty))


def test_every_option_of_every_command_has_help_and_an_underscore_spelling():
    import argparse
    import importlib

    from trl import TrlParser

    for name, (module, _) in cli.COMMANDS.items():
        parser = importlib.import_module(module).make_parser()
        # TrlParser adds a hyphenated alias to every dataclass field: TRL's convention. The `argparse` commands
        # register one spelling only.
        aliases_allowed = isinstance(parser, TrlParser)
        parsers = [parser] + [
            sub
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for sub in action.choices.values()
        ]
        for sub in parsers:
            for action in sub._actions:
                if not action.option_strings or action.dest == "help":
                    continue
                first = action.option_strings[0]
                assert action.help, f"{name} {first} has no help"
                assert "-" not in first.lstrip("-"), f"{name} {first}: TRL spells flags with underscores"
                if not aliases_allowed:
                    assert action.option_strings == [first], f"{name} {first}: one spelling, no hyphenated alias"


def test_dmc_options_take_their_help_from_the_docstrings():
    from trl_distill.dmc.dmc_callback import DMCArguments
    from trl_distill.scripts.dmc import make_parser
    from trl_distill.scripts.utils import _docstring_fields

    documented = _docstring_fields(DMCArguments)
    assert "beta" in documented and "strategy" in documented
    actions = {action.dest: action for action in make_parser()._actions}
    assert actions["beta"].help == documented["beta"].replace("%", "%%")


def test_model_cards_cite_scas_and_tag_a_dmc_trained_model(tmp_path, tokenizer):
    from trl import SFTConfig, SFTTrainer

    from trl_distill import DMCCallback, SCASConfig, SCASTrainer
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.lab.world.tasks import task_reward
    from trl_distill.lab.world.toys import toy_candidates, toy_pool

    common = {"report_to": "none", "use_cpu": True, "max_length": 64}
    scas = SCASTrainer(
        model=tiny_model(tokenizer, "xs"),
        args=SCASConfig(str(tmp_path / "scas"), **common),
        train_dataset=toy_pool(4),
        processing_class=tokenizer,
    )
    scas.create_model_card(model_name="scas")
    card = (tmp_path / "scas" / "README.md").read_text()
    assert "2605.26872" in card and "Student-Centric Answer Selection" in card and "- scas" in card

    candidates, dev = toy_candidates(train_size=8, dev_size=4)
    from trl_distill import CandidateDatasets

    pool = CandidateDatasets(candidates)
    sft = SFTTrainer(
        model=tiny_model(tokenizer, "xs"),
        args=SFTConfig(str(tmp_path / "dmc"), **common),
        train_dataset=pool.train_dataset,
        processing_class=tokenizer,
    )
    sft.add_callback(DMCCallback(pool, dev, task_reward, trainer=sft, probe_size=4, dev_size=4))
    sft.create_model_card(model_name="dmc")
    card = (tmp_path / "dmc" / "README.md").read_text()
    assert "- dmc" in card and "- trl-distill" in card and "2605.29229" in card
    assert "dmc" not in SFTTrainer._tag_names  # the class is untouched: only this trainer's card is tagged


def test_accelerate_config_and_num_processes_relaunch_the_command_under_accelerate(monkeypatch):
    import accelerate.commands.launch

    from trl_distill.scripts.utils import relaunch_under_accelerate

    launched = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", launched.append)
    argv = ["--lab", "--accelerate_config", "zero3", "--num_processes=2", "--max_steps", "1"]
    assert cli.main(["ogls-sd", *argv]) == 0
    (args,) = launched
    assert os.path.samefile(args.config_file, os.path.join(ROOT, "recipes", "accelerate", "zero3.yaml"))
    assert args.num_processes == 2 and args.module and args.training_script == "trl_distill.cli"
    toy = recipes.recipe_path("ogls_sd/toy")
    assert args.training_script_args == ["ogls-sd", "--config", toy, "--max_steps", "1"]  # --lab: the toy recipe

    # multi_cpu without an mpirun hostfile: torch.distributed.run starts the CPU processes
    commands = []
    argv = ["--config", "scas/toy", "--accelerate_config", "multi_cpu", "--max_steps", "1"]
    assert relaunch_under_accelerate("scas", argv, run=lambda cmd, check: commands.append(cmd))
    (command,) = commands
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]  # multi_cpu.yaml's count
    assert command[5:] == ["-m", "trl_distill.cli", "scas", "--config", "scas/toy", "--max_steps", "1"]

    assert not relaunch_under_accelerate("scas", ["--config", "scas/toy"], launch_command=launched.append)
    assert len(launched) == 1
    with pytest.raises(FileNotFoundError, match="--accelerate_config zero4: no such file.*accelerate/zero3"):
        relaunch_under_accelerate("scas", ["--accelerate_config", "zero4"], launch_command=launched.append)
    with pytest.raises(ValueError, match="--num_processes must be a positive integer, got '0'"):
        relaunch_under_accelerate("scas", ["--num_processes", "0"], launch_command=launched.append)


@pytest.mark.slow
def test_multi_cpu_runs_two_processes_for_real(tmp_path):
    """Two gloo ranks on CPU through `--accelerate_config multi_cpu`: 4 prompts, 2 per device, one step is one epoch."""
    argv = [sys.executable, "-m", "trl_distill.cli", "scas", "--lab", "--accelerate_config", "multi_cpu"]
    argv += ["--max_steps", "1", "--dataset_name", "lab:scas_pool?prompts=4", "--model_name_or_path"]
    argv += ["lab:scas_student?size=xs", "--per_device_train_batch_size", "2"]
    result = run([*argv, "--output_dir", str(tmp_path / "out")], ROOT, TRL_DISTILL_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out" / "README.md") as f:
        assert "2605.26872" in f.read()
    assert "'epoch': '1'" in result.stdout or "'epoch': 1.0" in result.stdout, result.stdout[-2000:]


def test_trl_imports_are_public_or_listed_in_the_compatibility_notes():
    notes = open(os.path.join(ROOT, "docs", "trl_compatibility.md")).read()
    from_submodules = set()
    for path in glob.glob(os.path.join(ROOT, "trl_distill", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("trl."):
                from_submodules |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("trl.") for alias in node.names), f"{path}: import trl.<module>"
    assert from_submodules == {
        "trl.kernels.ChunkedLogProbFunction",
        "trl.models.prepare_deepspeed",
        "trl.kernels.chunked_divergence.ChunkedDivergenceFunction",
        "trl.trainer.utils.RepeatSampler",
        "trl.trainer.utils.maybe_gather_lm_head_ctx",
        "trl.trainer.utils.pad",
        "trl.trainer.utils.create_model_from_path",
    }
    assert not [name for name in from_submodules if name.rsplit(".", 1)[1].startswith("_")]
    for name in from_submodules:
        assert f"`{name}`" in notes, f"{name} is missing from docs/trl_compatibility.md"


def test_the_installed_trl_is_in_the_supported_range_and_the_makefile_tests_its_floor():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    supported = SpecifierSet(re.search(r'"trl(>=[^"]+)"', pyproject).group(1))
    floor = re.search(r"^TRL_LOWEST \?= (\S+)$", open(os.path.join(ROOT, "Makefile")).read(), re.M).group(1)
    assert metadata.version("trl") in supported
    (lower,) = [spec.version for spec in supported if spec.operator == ">="]
    assert Version(floor) == Version(lower)
