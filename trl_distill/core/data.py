"""The one dataset loader every job uses: a local data file, a directory, or a Hub dataset name.

A local path that does not exist is reported as such, not passed on to the Hub (whose error would be
`Repo id must be in the form ...`).
"""

import os

from datasets import Dataset, DatasetDict


DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")


def looks_like_local_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub id (`org/name`): it exists, starts with `.`, `/` or
    `~`, ends with a data-file suffix, or has more than one `/`."""
    name = str(name)
    return (
        os.path.exists(os.path.expanduser(name))
        or name.startswith((".", "/", "~"))
        or os.path.splitext(name)[1].lower() in DATA_FILE_BUILDERS
        or name.count("/") > 1
    )


def check_local_path(name: str, what: str = "path") -> None:
    """Raises `FileNotFoundError` naming `what` when `name` is a local path that does not exist."""
    if looks_like_local_path(name) and not os.path.exists(os.path.expanduser(str(name))):
        raise FileNotFoundError(
            f"The {what} {name!r} does not exist. Give an existing local file or directory, or a Hub id of the form "
            "`org/name`."
        )


def load_data(name_or_path: str, config: str | None = None, split: str = "train") -> Dataset:
    """
    One split of a dataset from wherever it is.

    Args:
        name_or_path (`str`):
            A `.jsonl`/`.json`/`.parquet`/`.csv` file (the whole file is the split), a `save_to_disk` directory, a
            directory of data files (split by file name as `datasets.load_dataset` does: `train.jsonl`,
            `test.jsonl`, ...), a directory in the released SCAS pool layout (one `<teacher>.jsonl` per teacher, see
            [`~trl_distill.core.pool.load_released_pool`]), or a Hub dataset id.
        config (`str`, *optional*):
            The Hub dataset's configuration name.
        split (`str`, *optional*, defaults to `"train"`):
            The split to return.

    Returns:
        [`~datasets.Dataset`]: the split.
    """
    from datasets import load_dataset, load_from_disk

    path = os.path.expanduser(str(name_or_path))
    if os.path.isfile(path):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in DATA_FILE_BUILDERS:
            raise ValueError(f"Cannot read {path!r}: give a {'/'.join(DATA_FILE_BUILDERS)} file or a directory.")
        return load_dataset(DATA_FILE_BUILDERS[suffix], data_files=path, split="train")
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, f)) for f in SAVED_DATASET_FILES):
            data = load_from_disk(path)
            return _split(data, split, path)
        from .pool import is_released_pool_dir, load_released_pool

        if is_released_pool_dir(path):
            return load_released_pool(path)
        return load_dataset(path, config, split=split)
    check_local_path(name_or_path, "dataset")
    return load_dataset(name_or_path, config, split=split)


def _split(data, split: str, path: str) -> Dataset:
    if not isinstance(data, DatasetDict):
        return data
    if split not in data:
        raise ValueError(f"The dataset at {path!r} has splits {sorted(data)}, not {split!r}.")
    return data[split]
