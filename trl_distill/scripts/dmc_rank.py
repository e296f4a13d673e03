"""`trl-distill dmc-rank`: rank candidate distillation datasets for a student by data–model compatibility.

```bash
trl-distill dmc-rank --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --datasets cot=data/cot.jsonl short=data/short.jsonl --dev_dataset data/dev.jsonl --verifier numeric
trl-distill dmc-rank --config ranking.yaml   # keys = the flags below
```
"""

import json
from dataclasses import asdict, dataclass, field

from trl import TrlParser

from ..core.data import load_data
from ..core.verifiers import resolve_verifier
from ..dmc.compatibility import rank_datasets
from ..dmc.dmc_callback import DMCArguments
from .utils import config_argv, load_pretrained, with_docstring_help


@dataclass
class DMCDataArguments:
    r"""
    The candidate datasets, the dev split and the verifier (for `trl-distill dmc`, `trl-distill dmc-rank` and
    `examples/dmc.py`).

    Parameters:
        datasets (`list[str]`, *optional*, defaults to `[]`):
            Candidate datasets as `name=path`: a `save_to_disk` directory, a `.json`/`.jsonl`/`.parquet`/`.csv` file,
            a Hub dataset id or a source (`name=scheme:source`). Rows need `prompt`, `completion` and a `correct` flag
            or what the verifier reads.
            Refused: a spec without `name=`, and two datasets of one name.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the candidate datasets to use.
        dev_dataset (`str` or `None`, *optional*, defaults to `None`):
            Held-out prompts with reference answers for the capability (same path forms as `datasets`).
        dev_split (`str`, *optional*, defaults to `"test"`):
            Split of `dev_dataset` to use (a single file, held out of its own, is the dev split whole).
        verifier (`str`, *optional*, defaults to `"numeric"`):
            A verifier name of the registry (`"numeric"`, `"exact_match"`, `"math_verify"`), a source (`"scheme:name"`)
            or a `module:function` reward function.
        eval_dataset (`str` or `None`, *optional*, defaults to `None`):
            SFT evaluation rows (`prompt`, `completion`) for `trl-distill dmc`, loaded when `eval_strategy` is not
            `"no"`; required then.
        eval_split (`str`, *optional*, defaults to `"test"`):
            Split of `eval_dataset` (a single file is its own split).
    """

    datasets: list[str] = field(
        default_factory=list, metadata={"help": "Candidate datasets as name=path (a file, a directory or a Hub id)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of the candidate datasets."})
    dev_dataset: str | None = field(
        default=None, metadata={"help": "Held-out prompts with reference answers, to measure capability."}
    )
    dev_split: str = field(default="test", metadata={"help": "Split of dev_dataset."})
    verifier: str = field(
        default="numeric",
        metadata={"help": "Verifier: numeric, exact_match, math_verify, a source (scheme:name) or module:function."},
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "SFT eval rows (prompt, completion), loaded when eval_strategy is set (trl-distill dmc)."},
    )
    eval_split: str = field(default="test", metadata={"help": "Split of eval_dataset."})

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("Give candidate datasets with `--datasets name=path [name=path ...]`.")
        if not self.dev_dataset:
            raise ValueError("Give held-out prompts with answers with `--dev_dataset` to measure capability.")
        paths: dict[str, str] = {}
        for spec in self.datasets:
            if "=" not in spec or not spec.split("=", 1)[0]:
                raise ValueError(f"Candidate dataset {spec!r} is not `name=path`.")
            name, path = spec.split("=", 1)
            if name in paths:  # a dict by name would keep the last one and rank the other not at all
                raise ValueError(
                    f"Two candidate datasets are named {name!r} ({name}={paths[name]} and {spec}); each needs its own "
                    f"name, e.g. `{name}_2={path}`."
                )
            paths[name] = path

    def load(self):
        """The candidate datasets by name, the dev split and the verifier."""
        datasets = {
            name: load_data(path, split=self.dataset_split) for name, path in (s.split("=", 1) for s in self.datasets)
        }
        dev = load_data(self.dev_dataset, split=self.dev_split, whole_file=True)  # a file of its own: the dev split
        return datasets, dev, resolve_verifier(self.verifier)


@dataclass
class DMCRankArguments(DMCDataArguments):
    r"""
    What `trl-distill dmc-rank` ranks: [`DMCDataArguments`] plus the student. Scoring settings are [`DMCArguments`].

    Parameters:
        model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            The student (a local directory, a Hub id or a source).
        output_json (`str` or `None`, *optional*, defaults to `None`):
            Also write the table to this JSON file.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "The student (a directory or Hub id)."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the table to this JSON file."})

    def __post_init__(self):
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("Give the student with `--model_name_or_path`.")


def make_parser(prog: str | None = "trl-distill dmc-rank") -> TrlParser:
    """The `TrlParser` over ([`DMCRankArguments`], [`DMCArguments`]), every option described."""
    types = (DMCRankArguments, DMCArguments)
    return with_docstring_help(TrlParser(types, prog=prog), types)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parses `argv`, ranks the candidate datasets, prints the table and returns its rows."""
    parser = make_parser()
    rank_args, dmc_args = parser.parse_args_and_config(args=config_argv(argv))
    datasets, dev, verifier = rank_args.load()
    model, tokenizer = load_pretrained(rank_args.model_name_or_path, "student (--model_name_or_path)")
    settings = asdict(dmc_args)
    for unused in ("strategy", "temperature", "top_fraction", "reselect_every"):  # training-time
        settings.pop(unused)
    settings["seed"] = settings.pop("selection_seed") or 0  # no trainer seed to fall back on here
    table = rank_datasets(model, tokenizer, datasets, dev, verifier, print_table=True, **settings)
    if rank_args.output_json:
        with open(rank_args.output_json, "w") as f:
            json.dump(table, f, indent=1)
    return table


if __name__ == "__main__":
    main()
