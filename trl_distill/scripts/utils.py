"""What every command-line job shares, so a flag means the same in each: `--config` for `argparse` commands, the
student's loading kwargs and 4-bit check, the dataset loader and verifier names, and the end of a training run (save,
push, end). Models, datasets and rewards may be named by source (`scheme:name`, [`~trl_distill.core.sources`]): the
loaders here resolve them."""

import argparse
import importlib.util
import os
import sys
import warnings

from ..core.data import load_data
from ..core.sources import is_source, resolve_model


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """
    `parser.parse_args(argv)` with TRL's `--config recipe.yaml` convention, for commands built on `argparse`.

    The YAML mapping's keys are option names without dashes (`reference_model` for `--reference_model`); its values become the
    parser's defaults (sub-commands included; required options become optional), so flags on the command line
    override them. An `env` mapping sets environment variables, as in TRL.

    Args:
        parser (`argparse.ArgumentParser`):
            The command's parser.
        argv (`list[str]`, *optional*):
            The arguments; `sys.argv[1:]` when omitted.

    Returns:
        `argparse.Namespace`: the parsed arguments.
    """
    import yaml
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            parser.error("--config needs a YAML file.")
        path = argv[index + 1]
        del argv[index : index + 2]
        with open(path) as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            parser.error(f"The config file {path} must contain a YAML mapping of option names to values.")
        for key, value in (config.pop("env", None) or {}).items():
            os.environ[key] = str(value)
        # TRL's own defaults setter walks `parser._actions` (and sub-parsers): it works on any argparse parser.
        unknown = TrlParser.set_defaults_with_config(parser, **config)
        if unknown:
            parser.error(f"Unknown keys in {path}: {unknown[::2]}. Use the option names of --help, with underscores.")
    return parser.parse_args(argv)


def check_quantization(model_args) -> None:
    """
    Raises a clear error before any model is loaded when [`~trl.ModelConfig`] asks for a bitsandbytes student
    (`load_in_4bit` / `load_in_8bit`) that this machine cannot run: bitsandbytes needs a CUDA device and the package.
    """
    if not (getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False)):
        return
    import torch

    flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{flag} quantizes the model with bitsandbytes, which needs a CUDA device, and none is visible. Drop "
            f"{flag} on CPU (the tiny world trains in full precision), or run on a GPU machine."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"{flag} needs bitsandbytes: `pip install 'trl-distill[quant]'`.")


def quantization_config(model_args):
    """[`~trl.get_quantization_config`] after [`check_quantization`]: the student's `BitsAndBytesConfig` or `None`."""
    from trl import get_quantization_config

    check_quantization(model_args)
    return get_quantization_config(model_args)


def student_quantization_config(model_args):
    """[`quantization_config`] of a student given as a checkpoint; `None` for a student named by source
    ([`~trl_distill.core.sources`]): such a model is built small and trained in full precision."""
    if not is_source(model_args.model_name_or_path):
        return quantization_config(model_args)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        warnings.warn(
            f"The student {model_args.model_name_or_path!r} is built in full precision: --load_in_4bit/--load_in_8bit "
            "are ignored for it (they apply to a student checkpoint given by --model_name_or_path).",
            UserWarning,
            stacklevel=2,
        )
    return None


def student_init_kwargs(model_args, training_args) -> dict:
    """
    `from_pretrained` kwargs of a student given as a path, from [`~trl.ModelConfig`], merged under
    `training_args.model_init_kwargs`. Trainers that load the path themselves do so after DeepSpeed's config is live,
    so ZeRO-3 with `zero3_init_flag` shards the weights at load time.
    """
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype or "auto",
    }
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    return {**kwargs, **(training_args.model_init_kwargs or {})}


def load_train_eval(script_args, training_args) -> tuple:
    """The train split of `script_args.dataset_name` and, when `training_args.eval_strategy` is not `"no"`, its
    `dataset_test_split` (as TRL's scripts do). A single data file has no `test` split and is refused then (see
    [`load_data`]): give a directory with one file per split, or slices (`train[:90%]`, `train[90%:]`)."""
    name, config = script_args.dataset_name, script_args.dataset_config
    train = load_data(name, config, script_args.dataset_train_split)
    evaluate = str(getattr(training_args, "eval_strategy", "no")) not in ("no", "IntervalStrategy.NO")
    return train, load_data(name, config, script_args.dataset_test_split) if evaluate else None


def load_student(model_args, training_args, what: str = "student (--model_name_or_path)", **context):
    """
    The student `model_args.model_name_or_path` names, as `(model, tokenizer)`: a path (with `tokenizer` `None`,
    loaded by the caller or the trainer) whose `from_pretrained` kwargs ([`student_init_kwargs`]) are set on
    `training_args.model_init_kwargs`, or a model built by its source ([`~trl_distill.core.sources.resolve_model`]),
    cast to `--dtype` ([`cast_to_dtype`]), with the source's tokenizer. `context` goes to the source (`seed`).
    """
    model, tokenizer = resolve_model(model_args.model_name_or_path, what, **context)
    if isinstance(model, str):
        # As TRL's `trl sft`: the trainer loads the path, so DeepSpeed ZeRO-3 (`zero3_init_flag`) shards it at load time.
        training_args.model_init_kwargs = student_init_kwargs(model_args, training_args)
        return model, tokenizer
    return cast_to_dtype(model, model_args), tokenizer


def load_pretrained(name: str, what: str, dtype: str = "auto"):
    """
    A model to generate with or score (not to train), as `(model, tokenizer)`: a path or Hub id loaded with
    `from_pretrained` in `dtype` (`auto`, `float32`, `bfloat16`, ...), or a source's model
    ([`~trl_distill.core.sources.resolve_model`]) cast to `dtype`; the tokenizer with a pad token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.tokenizers import ensure_pad_token

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model, tokenizer = resolve_model(name, what)
    if isinstance(model, str):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
    elif dtype != "auto":
        model = model.to(torch_dtype)
    ensure_pad_token(tokenizer)
    return model, tokenizer


def cast_to_dtype(model, model_args):
    """An in-memory student (built by its source) cast to `--dtype` (`float32`, `bfloat16`, `float16`); `auto`/unset
    keeps the dtype it is built in. Students given as paths get `dtype` through [`student_init_kwargs`] instead."""
    import torch

    dtype = getattr(model_args, "dtype", None)
    if dtype in (None, "auto"):
        return model
    return model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)


def finish(trainer, training_args, dataset_name: str | None = None) -> None:
    """The end of every training job, as in TRL's scripts: save, push to the Hub when asked, finish the trackers.

    The process group is left for [`end_processes`] (the `trl-distill` entry point does the same on exit), so that
    several jobs can run in one process.
    """
    from ..core.sampler import add_selection_to_model_card, selection_rounds

    trainer.accelerator.print("Training completed.")
    # each selection round (SCAS, DMC) as `Trainer.log_metrics` prints a run's metrics
    for name, epoch, metrics in selection_rounds(trainer):
        trainer.log_metrics(f"{name} selection at epoch {epoch}", metrics)
    trainer.save_model(training_args.output_dir)
    # the model card beside the weights (tags, the method's paper), as TRL's trainers write at each checkpoint, with
    # the selection rounds
    trainer.create_model_card(
        model_name=os.path.basename(os.path.normpath(training_args.output_dir)), dataset_name=dataset_name
    )
    if os.path.isfile(card := os.path.join(training_args.output_dir, "README.md")):
        add_selection_to_model_card(trainer, card)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
        trainer.accelerator.print(f"Model pushed to the Hub as {trainer.hub_model_id}.")
    for tracker in trainer.accelerator.trackers:
        tracker.finish()


def build_trainer(trainer_class, training_args, model_args, **trainer_kwargs):
    """`trainer_class` built as every training command builds it: with `training_args` and the PEFT adapter that
    `model_args` asks for (`--use_peft`, TRL's `get_peft_config`); `trainer_kwargs` give the rest (model, datasets,
    processing class)."""
    from trl import get_peft_config

    return trainer_class(args=training_args, peft_config=get_peft_config(model_args), **trainer_kwargs)


def train_and_finish(trainer, training_args, dataset_name: str | None = None):
    """Trains `trainer` (resuming from `training_args.resume_from_checkpoint`) and ends the job with [`finish`];
    returns the trainer: the `train` of every training command after it has built its trainer."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finish(trainer, training_args, dataset_name)
    return trainer


def end_processes() -> None:
    """Destroys the distributed process group, if one is up: the last step of a command (`trainer.end()` in TRL)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def config_argv(argv: list[str] | None) -> list[str]:
    """A command's arguments with `--config NAME` that is not a file resolved to the packaged recipe of that name
    (`scas/toy`, `build_pool/toy`; `trl-distill recipes` lists them), before [`~trl.TrlParser`] reads them: every
    command that reads a `--config` recipe calls it first."""
    from .recipes import resolve_config

    argv = list(sys.argv[1:] if argv is None else argv)
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            argv[index + 1] = resolve_config(argv[index + 1])
        elif arg.startswith("--config="):
            argv[index] = "--config=" + resolve_config(arg.split("=", 1)[1])
    return argv


def _docstring_fields(cls) -> dict[str, str]:
    """`{field: description}` from the `Args:`/`Parameters:` entries of `cls`'s docstring and its bases'."""
    import inspect
    import re

    found: dict[str, str] = {}
    for klass in reversed(inspect.getmro(cls)):
        lines = inspect.cleandoc(klass.__doc__ or "").splitlines()
        name, indent, text = None, 0, []
        for line in [*lines, ""]:
            entry = re.match(r"^(\s*)(\w+) \((.*)\):\s*$", line)
            deeper = line.strip() and name and len(line) - len(line.lstrip()) > indent
            if deeper:
                text.append(line.strip())
                continue
            if name and text:
                found[name] = " ".join(text)
            name, text = (entry.group(2), []) if entry else (None, [])
            indent = len(entry.group(1)) if entry else 0
    return found


def with_docstring_help(parser, dataclass_types):
    """Fills the help of every option of `parser` whose dataclass field has no `help` metadata with the field's
    entry in the class docstring (`DMCArguments`, `DMCDataArguments`), so `--help` describes every option."""
    described: dict[str, str] = {}
    for cls in dataclass_types:
        described.update(_docstring_fields(cls))
    for action in parser._actions:
        if not action.help and action.dest in described:
            action.help = described[action.dest].replace("%", "%%")
    return parser


LAUNCH_FLAGS = ("--accelerate_config", "--num_processes")


def accelerate_launch_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """
    Splits `--accelerate_config NAME` / `--num_processes N` (as `trl <command>` takes them) off a training
    command's arguments.

    Returns:
        `tuple[list[str], list[str]]`: the `accelerate launch` arguments (`--config_file <file>`, `--num_processes N`;
        empty when neither flag is given) and the remaining arguments. `NAME` is a path or a packaged accelerate
        config (`zero3`, `multi_cpu`, ...; `trl-distill recipes` lists them under `accelerate/`).
    """
    from .recipes import recipe_path

    launch, rest, index = [], [], 0
    while index < len(argv):
        arg = argv[index]
        flag, _, inline = arg.partition("=")
        if flag in LAUNCH_FLAGS:
            value = inline if inline else (argv[index + 1] if index + 1 < len(argv) else None)
            if value is None or value.startswith("--"):
                raise ValueError(f"{flag} needs a value.")
            index += 1 if inline else 2
            if flag == "--accelerate_config":
                if not os.path.isfile(value):
                    try:
                        value = recipe_path(f"accelerate/{value}")
                    except FileNotFoundError as error:
                        raise FileNotFoundError(f"--accelerate_config {value}: no such file, and {error}") from None
                launch += ["--config_file", value]
            else:
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"--num_processes must be a positive integer, got {value!r}.")
                launch += ["--num_processes", value]
            continue
        rest.append(arg)
        index += 1
    return launch, rest


def relaunch_under_accelerate(command: str, argv: list[str], launch_command=None, run=None) -> bool:
    """
    When `argv` has `--accelerate_config` / `--num_processes`, re-runs the command in that many processes and returns
    `True`; otherwise returns `False` and the caller trains in this process.

    It runs `accelerate launch <those> -m trl_distill.cli <command> <the other arguments>`, as `trl sft
    --accelerate_config zero3` does, except on CPU: `accelerate launch` starts several CPU processes only through
    `mpirun` (a `mpirun_hostfile` in the config), so a `MULTI_CPU` config without one, or `--num_processes N` alone
    on a machine without CUDA, runs `python -m torch.distributed.run --nproc_per_node N` instead (gloo, one process
    per rank; the command's `use_cpu` must be true, as in every toy recipe).

    Args:
        launch_command (`Callable`, *optional*): replaces `accelerate.commands.launch.launch_command` (tests).
        run (`Callable`, *optional*): replaces `subprocess.run` for the CPU launcher (tests).
    """
    launch, rest = accelerate_launch_args(argv)
    if not launch:
        return False
    options = dict(zip(launch[::2], launch[1::2]))
    config = {}
    if "--config_file" in options:
        import yaml

        with open(options["--config_file"]) as f:
            config = yaml.safe_load(f) or {}
    processes = int(options.get("--num_processes", config.get("num_processes", 1)))
    multi_cpu = config.get("distributed_type") == "MULTI_CPU" and not config.get("mpirun_hostfile")
    if not config:
        import torch

        multi_cpu = not torch.cuda.is_available()
    if multi_cpu:
        import subprocess

        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        (run or subprocess.run)([*torchrun, "-m", "trl_distill.cli", command, *rest], check=True)
        return True
    from accelerate.commands.launch import launch_command_parser

    if launch_command is None:
        from accelerate.commands.launch import launch_command
    launch_command(launch_command_parser().parse_args([*launch, "--module", "trl_distill.cli", command, *rest]))
    return True


LAUNCH_EPILOG = (
    "launching: --accelerate_config NAME (a file, or a packaged config: single_device, multi_cpu, multi_gpu, zero2, "
    "zero3, zero3_cpu, fsdp2) and --num_processes N re-run this command under `accelerate launch`, as `trl` does. "
    "--config NAME takes a packaged recipe (`trl-distill recipes` lists them: <command>/toy runs offline)."
)


def training_parser(dataclass_types: tuple, prog: str | None):
    """A training command's [`~trl.TrlParser`]: every option described ([`with_docstring_help`]) and the launch
    flags of [`relaunch_under_accelerate`] in the epilog (they are not dataclass fields)."""
    from trl import TrlParser

    return with_docstring_help(TrlParser(dataclass_types, prog=prog, epilog=LAUNCH_EPILOG), dataclass_types)


def run_training_command(command: str, make_parser, train, argv: list[str] | None) -> int:
    """The `main` of every training command: the recipe resolved ([`config_argv`]), a relaunch under `accelerate
    launch` when `--accelerate_config`/`--num_processes` ask for one, else parse (`--config` plus overriding flags),
    train and save; returns the exit status."""
    argv = config_argv(argv)
    if relaunch_under_accelerate(command, argv):
        return 0
    train(*make_parser().parse_args_and_config(args=argv))
    return 0


def training_command(command: str, dataclass_types: tuple, train) -> tuple:
    """The `make_parser` and `main` of the training command `trl-distill <command>`, as TRL's scripts have them.

    Args:
        command (`str`): the command's name (`"scas"`, `"ogls-sd"`).
        dataclass_types (`tuple`): the argument dataclasses its parser reads (script arguments, the method's config,
            `ModelConfig`), in the order `train` takes them.
        train (`Callable`): builds the trainer from the parsed arguments, trains and saves.

    Returns:
        `tuple`: `make_parser(prog="trl-distill <command>")`, the command's [`training_parser`], and
        `main(argv=None) -> int`, which runs it ([`run_training_command`]).
    """

    def make_parser(prog: str | None = f"trl-distill {command}"):
        """The command's `TrlParser` over its argument dataclasses (see [`training_parser`])."""
        return training_parser(dataclass_types, prog)

    def main(argv: list[str] | None = None) -> int:
        """Parses `argv` (`--config recipe.yaml` and flags that override it), trains, saves; returns the exit status."""
        return run_training_command(command, make_parser, train, argv)

    return make_parser, main
