"""What the command-line jobs share: `--config` for `argparse` commands, student loading kwargs, 4-bit checks."""

import argparse
import importlib.util
import os
import sys


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """
    `parser.parse_args(argv)` with TRL's `--config recipe.yaml` convention, for commands built on `argparse`.

    The YAML mapping's keys are option destinations (`reference_model` for `--reference-model`); its values become the
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
