"""`trl-distill`: one subcommand per job. Each dispatches to its method's own `main(argv)`."""

import importlib
import sys


COMMANDS = {
    "lab": ("trl_distill.lab.cli", "run the embedded default job on the offline tiny world"),
    "scas": ("trl_distill.scas.cli", "train with SCASTrainer (student-centric answer selection)"),
    "scas-score": ("trl_distill.scas.cli", "score a candidate pool for a student and write the selection"),
    "dmc": ("trl_distill.dmc.cli", "rank candidate datasets by data-model compatibility"),
    "ogls-sd": ("trl_distill.ogls_sd.cli", "train with OGLSSDTrainer (outcome-guided self-distillation)"),
    "camopd": ("trl_distill.camopd.cli", "train with CaMOPDTrainer (multi-teacher on-policy distillation)"),
    "evaluate": ("trl_distill.evaluation.cli", "RSE / ICE distillation quantification"),
    "build-pool": ("trl_distill.pool.cli", "build a verified multi-teacher candidate pool"),
}


def usage() -> str:
    lines = ["usage: trl-distill <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"trl-distill: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
