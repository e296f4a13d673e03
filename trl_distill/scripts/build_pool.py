"""`trl-distill build-pool`: several teachers' verified answers to a prompt dataset, as a candidate pool.

```bash
# two teachers with their own sampling settings, 4 answers each per prompt, numeric verifier
trl-distill build-pool \
    --teachers "name=qwen-7b,model=Qwen/Qwen2.5-7B-Instruct,temperature=0.7" ./my-teacher \
    --dataset_name prompts.jsonl --n 4 --verifier numeric --output_dir pools/math

# from a recipe (vLLM, one teacher at a time); command-line flags override it
trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml --max_prompts 8

# the packaged toy recipe: offline, CPU (its teachers and prompts are named by source, built and cached locally)
trl-distill build-pool --config build_pool/toy --max_prompts 8

# data-parallel over 8 GPUs (transformers backend, a whole teacher per process)
accelerate launch --num_processes 8 -m trl_distill.scripts.build_pool --teachers ./teacher-a ./teacher-b \
    --dataset_name prompts.jsonl --output_dir pools/dp
```

Rerunning a killed command resumes it; see [`build_pool`].
"""

import os
import sys
from dataclasses import fields, replace

from ..core.data import load_data
from ..core.sources import resolve_model_path
from ..pool.build_pool_config import BuildPoolConfig
from ..pool.builder import PoolIncompleteError, build_pool


def make_parser(prog: str | None = "trl-distill build-pool"):
    """The `TrlParser` over [`BuildPoolConfig`]."""
    from trl import TrlParser

    from .utils import with_docstring_help

    types = (BuildPoolConfig,)
    return with_docstring_help(TrlParser(types, prog=prog, description=__doc__.splitlines()[0]), types)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (a `--config` YAML and/or flags of [`BuildPoolConfig`]), builds the pool, prints the summary."""
    from .utils import config_argv

    parser = make_parser()
    try:
        (config,) = parser.parse_args_and_config(config_argv(argv))
        settings = {f.name: getattr(config, f.name) for f in fields(config)}
        if not config.dataset_name:
            raise ValueError(
                "Give the prompt dataset with --dataset_name (a Hub id, a directory, a data file or a source)."
            )
        settings["teachers"] = [
            spec
            if spec.backend == "endpoint"
            else replace(spec, model=resolve_model_path(spec.model, f"teacher {spec.name!r} (--teachers)"))
            for spec in config.teacher_specs
        ]
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
