"""`trl-distill build-pool`: several teachers' verified answers to a prompt dataset, as a candidate pool.

```bash
# two teachers with their own sampling settings, 4 answers each per prompt, numeric verifier
trl-distill build-pool \
    --teachers "name=qwen-7b,model=Qwen/Qwen2.5-7B-Instruct,temperature=0.7" ./my-teacher \
    --dataset_name prompts.jsonl --n 4 --verifier numeric --output_dir pools/math

# from a recipe (vLLM, one teacher at a time); command-line flags override it
trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml --max_prompts 8

# the offline tiny world (teachers `lab:<style>` are pre-trained and cached locally)
trl-distill build-pool --config recipes/build_pool/toy.yaml --lab --lab_prompts 8

# data-parallel over 8 GPUs (transformers backend, a whole teacher per process)
accelerate launch --num_processes 8 -m trl_distill.scripts.build_pool --teachers ./teacher-a ./teacher-b \
    --dataset_name prompts.jsonl --output_dir pools/dp
```

Rerunning a killed command resumes it; see [`build_pool`].
"""

import os
import sys
from dataclasses import asdict, dataclass, field, fields

from ..core.data import check_local_path, load_data
from ..pool.build_pool_config import BuildPoolConfig
from ..pool.builder import PoolIncompleteError, build_pool
from .utils import lab_tokenizer


@dataclass
class LabArguments:
    r"""
    Tiny-world switches of `trl-distill build-pool` and `examples/build_pool.py`.

    Args:
        lab (`bool`, *optional*, defaults to `False`):
            Run offline on the tiny world: a teacher whose model is `lab:<style>` is an `xs` Llama pre-trained on
            arithmetic written in that style (`cot`, `terse`, `verbose`, `equation`; cached locally), and the prompts
            are held-out arithmetic problems.
        lab_prompts (`int`, *optional*, defaults to `64`):
            Number of tiny-world prompts.
        lab_pretrain_steps (`int`, *optional*, defaults to `300`):
            Pre-training steps of each tiny-world teacher.
    """

    lab: bool = field(default=False, metadata={"help": "Run on the offline tiny world."})
    lab_prompts: int = field(default=64, metadata={"help": "Number of tiny-world prompts."})
    lab_pretrain_steps: int = field(default=300, metadata={"help": "Pre-training steps of each tiny-world teacher."})


def lab_world(config: BuildPoolConfig, lab_args: LabArguments):
    """The teachers with `lab:<style>` models replaced by cached tiny-world teachers, and held-out prompts."""
    from ..lab.world.toys import pool_prompts, pool_teacher

    tokenizer = lab_tokenizer()
    teachers = []
    for seed, spec in enumerate(config.teacher_specs):
        spec = asdict(spec)
        if spec["model"].startswith("lab:"):
            style = spec["model"].removeprefix("lab:")
            spec["model"] = pool_teacher(tokenizer, style, lab_args.lab_pretrain_steps, seed=seed)
        teachers.append(spec)
    return teachers, pool_prompts(lab_args.lab_prompts)


def make_parser(prog: str | None = "trl-distill build-pool"):
    """The `TrlParser` over ([`BuildPoolConfig`], [`LabArguments`])."""
    from trl import TrlParser

    from .utils import with_docstring_help

    types = (BuildPoolConfig, LabArguments)
    return with_docstring_help(TrlParser(types, prog=prog, description=__doc__.splitlines()[0]), types)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (a `--config` YAML and/or flags of [`BuildPoolConfig`]), builds the pool, prints the summary."""
    parser = make_parser()
    try:
        config, lab_args = parser.parse_args_and_config(argv)
        settings = {f.name: getattr(config, f.name) for f in fields(config)}
        if lab_args.lab or config.verifier == "lab_task":
            from ..lab.world import tasks  # noqa: F401  (registers the `lab_task` verifier)
        if lab_args.lab:
            settings["teachers"], dataset = lab_world(config, lab_args)
        else:
            if not config.dataset_name:
                raise ValueError("Give the prompt dataset with --dataset_name (a Hub id, a directory or a data file).")
            for teacher in config.teacher_specs:
                if teacher.backend == "endpoint":
                    continue
                check_local_path(teacher.model, f"teacher {teacher.name!r} (--teachers)")
            dataset = load_data(config.dataset_name, config.dataset_config, config.dataset_split)
        if config.max_prompts is not None:
            dataset = dataset.select(range(min(config.max_prompts, len(dataset))))
        build_pool(dataset=dataset, **settings)
    except (ValueError, ImportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PoolIncompleteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Pool written to {os.path.join(config.output_dir, 'pool.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
