"""`trl-distill`: one subcommand per job. Each dispatches to its method's own `main(argv)`.

```bash
trl-distill scas --config recipes/scas/toy.yaml --lab              # a recipe, as `trl sft --config ...`
trl-distill scas --config recipes/scas/toy.yaml --lab --num_train_epochs 1   # flags override the recipe
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli camopd --config ...
```

Training commands parse with TRL's `TrlParser` (dataclass fields as flags, `--config recipe.yaml`); the other commands
use `argparse` and accept `--config` through [`parse_args_with_config`].
"""

import argparse
import importlib
import sys


COMMANDS = {
    "scas": ("trl_distill.scas.train_cli", "train with SCASTrainer (student-centric answer selection)"),
    "dmc": ("trl_distill.dmc.train_cli", "SFT with DMCCallback (data-model compatibility reselection)"),
    "ogls-sd": ("trl_distill.ogls_sd.cli", "train with OGLSSDTrainer (outcome-guided self-distillation)"),
    "camopd": ("trl_distill.camopd.train_cli", "train with CaMOPDTrainer (multi-teacher on-policy distillation)"),
    "evaluate": ("trl_distill.evaluation.cli", "RSE / ICE distillation quantification"),
    "build-pool": ("trl_distill.pool.cli", "build a verified multi-teacher candidate pool"),
    "scas-score": ("trl_distill.scas.cli", "score a candidate pool for a student and write the selection"),
    "dmc-rank": ("trl_distill.dmc.cli", "rank candidate datasets by data-model compatibility"),
    "lab": ("trl_distill.lab.cli", "run the embedded default job on the offline tiny world"),
}


def usage() -> str:
    lines = ["usage: trl-distill <command> [--config recipe.yaml] [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`trl-distill <command> --help` lists a command's options."]
    return "\n".join(lines)


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """
    `parser.parse_args(argv)` with TRL's `--config recipe.yaml` convention, for commands built on `argparse`.

    The YAML mapping's keys are option destinations (`reference_model` for `--reference-model`); its values become the
    parser's defaults (sub-commands included, required options then optional), so flags on the command line override
    them. An `env` mapping sets environment variables, as in TRL.

    Args:
        parser (`argparse.ArgumentParser`):
            The command's parser.
        argv (`list[str]`, *optional*):
            The arguments; `sys.argv[1:]` when omitted.

    Returns:
        `argparse.Namespace`: the parsed arguments.
    """
    import os

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
        # TRL's own defaults setter walks `parser._actions` (and sub-parsers); it works on any argparse parser.
        unknown = TrlParser.set_defaults_with_config(parser, **config)
        if unknown:
            parser.error(f"Unknown keys in {path}: {unknown[::2]}. Use the option names of `--help`, with underscores.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs `trl-distill <command> ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"trl-distill: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    status = module.main(rest)
    # some commands return their result (a summary, a table) for Python callers: that is success
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
