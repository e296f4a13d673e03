"""CaMOPD's routing: named prompt sources, each corrected by a named teacher (docs/methods.md §4).

The trainer receives `train_dataset` as one dataset or a dict of named sources, and teachers by name. Sources are
combined into one dataset that carries each prompt's source in a `prompt_source` column, and every generated sample
is sent to the teacher of its source.
"""

from collections.abc import Iterator, Mapping

import torch
from datasets import IterableDataset, concatenate_datasets


SOURCE_COLUMN = "prompt_source"
DEFAULT_NAME = "default"


def route_sources(
    source_names: list[str], teacher_names: list[str], source_teachers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Maps every prompt source to the teacher that corrects it.

    Explicit `source_teachers` entries win; otherwise a source goes to the only teacher, or to the teacher of the same
    name. Unknown names raise an error that lists the known ones.

    Args:
        source_names (`list[str]`): names of the prompt sources.
        teacher_names (`list[str]`): names of the teachers.
        source_teachers (`Mapping[str, str]`, *optional*): explicit source → teacher entries.

    Returns:
        `dict[str, str]`: source name → teacher name.
    """
    source_teachers = dict(source_teachers or {})
    unknown_sources = sorted(set(source_teachers) - set(source_names))
    if unknown_sources:
        raise ValueError(
            f"`source_teachers` names prompt sources {unknown_sources} that were not given; the sources are "
            f"{sorted(source_names)} (the keys of `train_dataset`)."
        )
    unknown_teachers = sorted(set(source_teachers.values()) - set(teacher_names))
    if unknown_teachers:
        raise ValueError(
            f"`source_teachers` names teachers {unknown_teachers} that were not given; the teachers are "
            f"{sorted(teacher_names)} (the keys of `teacher_model` or `teacher_models`)."
        )
    routing = {}
    for source in source_names:
        if source in source_teachers:
            routing[source] = source_teachers[source]
        elif len(teacher_names) == 1:
            routing[source] = teacher_names[0]
        elif source in teacher_names:
            routing[source] = source
        else:
            raise ValueError(
                f"Prompt source {source!r} has no teacher: the teachers are {sorted(teacher_names)}. Name the source "
                f"after its teacher or set `source_teachers={{{source!r}: '<teacher name>'}}` in the config."
            )
    return routing


def named_sources(train_dataset) -> dict:
    """`train_dataset` as `{source name: dataset}` (a single dataset is the source `"default"`), each checked to have
    a `"prompt"` column; several sources must be map-style, and no two may hold the same prompts (the same dataset
    given twice, e.g. as both the general and the domain source, is refused)."""
    if train_dataset is None:
        return {}
    sources = dict(train_dataset) if isinstance(train_dataset, Mapping) else {DEFAULT_NAME: train_dataset}
    if not sources:
        raise ValueError("`train_dataset` is an empty dict; give at least one named prompt source.")
    for name, dataset in sources.items():
        if dataset.column_names is not None and "prompt" not in dataset.column_names:
            raise ValueError(
                f"Prompt source {name!r} has no 'prompt' column (columns: {dataset.column_names}); on-policy "
                "distillation generates from the prompts, so rename the prompt column to 'prompt'."
            )
        if len(sources) > 1 and isinstance(dataset, IterableDataset):
            raise ValueError(
                f"Prompt source {name!r} is an IterableDataset; several sources need map-style datasets "
                "(the schedule samples each one)."
            )
    names = list(sources)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if _same_prompts(sources[first], sources[second]):
                raise ValueError(
                    f"`train_dataset[{first!r}]` and `train_dataset[{second!r}]` are the same dataset "
                    f"({len(sources[first])} identical prompts): each source is corrected by its own teacher, so one "
                    "set of prompts under two names trains on it twice and never on the other source. Give each "
                    "source its own prompts (e.g. proxy general prompts and domain prompts)."
                )
    return sources


def _same_prompts(a, b) -> bool:
    """Whether two map-style sources are one dataset: the same object, the same fingerprint, or the same prompts."""
    if a is b:
        return True
    if isinstance(a, IterableDataset) or isinstance(b, IterableDataset):
        return False
    if getattr(a, "_fingerprint", None) is not None and a._fingerprint == getattr(b, "_fingerprint", None):
        return True
    return len(a) == len(b) and len(a) > 0 and a["prompt"] == b["prompt"]


def combine_sources(sources: dict) -> tuple:
    """One dataset holding the sources one after another, tagged with `prompt_source`, and each source's index range.

    A single source is returned unchanged (so a one-dataset run reads exactly what `trl.DistillationTrainer` reads).

    Returns:
        `tuple`: `(combined dataset or None, {source name: range of its indices, or None for an iterable dataset})`.
    """
    if len(sources) <= 1:
        return (next(iter(sources.values())) if sources else None), {
            name: range(len(ds)) if not isinstance(ds, IterableDataset) else None for name, ds in sources.items()
        }
    parts, ranges, start = [], {}, 0
    for name, dataset in sources.items():
        keep = [c for c in ("prompt", "image", "images") if c in dataset.column_names]
        part = dataset.select_columns(keep)
        if SOURCE_COLUMN in part.column_names:
            part = part.remove_columns(SOURCE_COLUMN)
        parts.append(part.add_column(SOURCE_COLUMN, [name] * len(part)))
        ranges[name] = range(start, start + len(part))
        start += len(part)
    try:
        combined = concatenate_datasets(parts)
    except ValueError as error:
        raise ValueError(
            f"The prompt sources {list(sources)} have different prompt formats ({[p.features['prompt'] for p in parts]}); "
            "give every source the same format (all conversational or all plain text)."
        ) from error
    return combined, ranges


def tag_eval_sources(eval_dataset, routing: Mapping[str, str], source_names: list[str], single_source: bool):
    """Evaluation prompts tagged with their source: a dict keyed by source names gets a `prompt_source` column; with
    several sources a plain dataset must already have one."""
    if eval_dataset is None:
        return None
    if isinstance(eval_dataset, Mapping):
        tagged = {}
        for name, dataset in eval_dataset.items():
            if name in routing and SOURCE_COLUMN not in dataset.column_names:
                dataset = dataset.add_column(SOURCE_COLUMN, [name] * len(dataset))
            tagged[name] = dataset
        datasets = tagged.values()
        eval_dataset = tagged
    else:
        datasets = [eval_dataset]
    if not single_source:
        for dataset in datasets:
            if SOURCE_COLUMN not in (dataset.column_names or []):
                raise ValueError(
                    f"With several prompt sources, evaluation prompts must say which teacher to use: key "
                    f"`eval_dataset` by source name ({source_names}) or add a '{SOURCE_COLUMN}' column."
                )
    return eval_dataset


def teacher_rows(
    routing: Mapping[str, str], source_names: list[str], sources: list[str], lockstep: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """`(teacher name, indices of the rows it corrects)` for each teacher, in a fixed order.

    With `lockstep` (DeepSpeed: every rank must run the same forwards) a teacher without rows is still yielded, with
    empty indices; the caller runs it on a dummy row and drops the result.
    """
    for name in dict.fromkeys(routing[s] for s in source_names):
        rows = [i for i, source in enumerate(sources) if routing[source] == name]
        if rows or lockstep:
            yield name, torch.tensor(rows, dtype=torch.long)
