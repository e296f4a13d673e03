"""`trl-distill build-pool`: several teachers' verified answers to a prompt dataset, as a candidate pool.

```bash
# two teachers with their own sampling settings, 4 answers each per prompt, numeric verifier
trl-distill build-pool \
    --teachers "name=qwen-7b,model=Qwen/Qwen2.5-7B-Instruct,temperature=0.7" ./my-teacher \
    --dataset_name prompts.jsonl --n 4 --verifier numeric --output_dir pools/math

# from a recipe (vLLM, one teacher at a time); command-line flags override it
trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml --max_prompts 8

# data-parallel over 8 GPUs (transformers backend, a whole teacher per process)
accelerate launch --num_processes 8 -m trl_distill.pool.cli --teachers ./teacher-a ./teacher-b \
    --dataset_name prompts.jsonl --output_dir pools/dp
```

Rerunning a killed command resumes it; see [`build_pool`].
"""

import os
import sys
from dataclasses import fields

from datasets import Dataset, load_dataset, load_from_disk

from .build_pool_config import BuildPoolConfig
from .builder import build_pool


FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_prompt_dataset(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """A prompt dataset from a data file, a `save_to_disk` directory, or the Hub."""
    extension = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if extension not in FILE_FORMATS:
            raise ValueError(f"Cannot read {name!r}: give a {sorted(FILE_FORMATS)} file or a dataset directory.")
        return load_dataset(FILE_FORMATS[extension], data_files=name, split="train")
    if os.path.isdir(name) and os.path.exists(os.path.join(name, "dataset_info.json")):
        dataset = load_from_disk(name)
        return dataset[split] if hasattr(dataset, "keys") else dataset
    return load_dataset(name, config, split=split)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (a `--config` YAML and/or flags of [`BuildPoolConfig`]), builds the pool, prints the summary."""
    from trl import TrlParser

    parser = TrlParser(BuildPoolConfig, prog="trl-distill build-pool", description=__doc__.splitlines()[0])
    try:
        (config,) = parser.parse_args_and_config(argv)
        if not config.dataset_name:
            raise ValueError("Give the prompt dataset with --dataset_name (a Hub id, a directory or a data file).")
        dataset = load_prompt_dataset(config.dataset_name, config.dataset_config, config.dataset_split)
        if config.max_prompts is not None:
            dataset = dataset.select(range(min(config.max_prompts, len(dataset))))
        build_pool(dataset=dataset, **{f.name: getattr(config, f.name) for f in fields(config)})
    except (ValueError, ImportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Pool written to {os.path.join(config.output_dir, 'pool.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
