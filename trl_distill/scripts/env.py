"""`trl-distill env`: what to paste into a bug report, as `trl env` prints it: the versions of trl-distill and of the
libraries it runs on, whether CUDA is visible, and where the tiny world caches its models (`$TRL_DISTILL_CACHE`).

Versions are read from the installed distributions' metadata, so a broken library does not stop the report; only
`torch` is imported (for CUDA).
"""

import argparse
import os
import platform
from importlib import metadata

from ..core.checkpoints import cache_dir


LIBRARIES = (
    "trl",
    "transformers",
    "torch",
    "accelerate",
    "deepspeed",
    "peft",
    "datasets",
    "bitsandbytes",
    "vllm",
    "gguf",
)


def version(distribution: str) -> str:
    """The installed version of `distribution`, or `"not installed"`."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cuda_line() -> str:
    """`"yes (<n> x <device name>)"`, `"no"`, or why torch could not say."""
    try:
        import torch
    except Exception as error:  # a broken torch is what a user runs `env` to find
        return f"unknown (torch failed to import: {error})"
    if not torch.cuda.is_available():
        return "no"
    count = torch.cuda.device_count()
    return f"yes ({count} x {torch.cuda.get_device_name(0)})"


def collect() -> dict[str, str]:
    """The report as an ordered mapping of label -> value."""
    import trl_distill

    info = {
        "Platform": platform.platform(),
        "Python version": platform.python_version(),
        "trl-distill version": trl_distill.__version__,
        "trl-distill location": os.path.dirname(os.path.abspath(trl_distill.__file__)),
    }
    info.update({f"{name} version": version(name) for name in LIBRARIES})
    info["CUDA available"] = cuda_line()
    info["Cache path ($TRL_DISTILL_CACHE)"] = cache_dir()
    return info


def make_parser(prog: str | None = "trl-distill env") -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    make_parser().parse_args(argv)
    info = collect()
    width = max(map(len, info))
    print("\nCopy-paste the following information when reporting an issue:\n")
    for label, value in info.items():
        print(f"- {label + ':':<{width + 1}} {value}")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
