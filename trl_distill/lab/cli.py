"""`trl-distill lab`: the embedded default job, offline on the tiny world."""

import argparse

from .world import demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="trl-distill lab", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and its models")
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps of the base student")
    args = parser.parse_args(argv)
    demo(seed=args.seed, steps=args.steps)
    return 0
