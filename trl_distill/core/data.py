"""The one dataset loader every job uses: a local data file, a directory, a Hub dataset name, or a source
(`lab:scas_pool`, [`~trl_distill.core.sources`]).

A local path that does not exist is reported as such, not passed on to the Hub (whose error would be
`Repo id must be in the form ...`).
"""

import os
from collections.abc import Callable, Mapping, Sequence

from datasets import Dataset, DatasetDict


DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")


def looks_like_local_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub id (`namespace/name`): it exists, starts with `.`,
    `/` or `~`, ends with a data-file suffix, or is not a valid Hub repo id (e.g. more than one `/`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = str(name)
    if os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~")):
        return True
    if os.path.splitext(name)[1].lower() in DATA_FILE_BUILDERS:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_local_path(name: str, what: str = "path") -> None:
    """Raises `FileNotFoundError` naming `what` when `name` is meant as a local path (see [`looks_like_local_path`])
    and does not exist. Without it a missing path reaches the Hub client, whose error (`Repo id must be in the form
    ...`) does not say that the path does not exist. A valid Hub id is left to the Hub."""
    path = os.path.expanduser(str(name))
    if looks_like_local_path(name) and not os.path.exists(path):
        raise FileNotFoundError(
            f"The {what} path {str(name)!r} does not exist (resolved to {os.path.abspath(path)!r}), and it is not a Hub "
            "id (`namespace/name`) either. Check the path, or give a Hub id."
        )


def did_you_mean(names, columns) -> str:
    """`" Did you mean 'x'?"` for the column of `columns` closest to each missing name of `names` (by
    `difflib`), or `""`: the hint a "missing column" error ends with, for a misspelled or renamed column."""
    import difflib

    names = [names] if isinstance(names, str) else list(names)
    close = {
        name: difflib.get_close_matches(name, [str(c) for c in columns if c not in names], 1, 0.6) for name in names
    }
    hints = [f"{match[0]!r} for {name!r}" for name, match in close.items() if match]
    return f" Did you mean {', '.join(hints)}? Rename it with `dataset.rename_column(old, new)`." if hints else ""


def named_datasets(
    data, convert: Callable, expected: str, what: str = "datasets", default_name: str = "dataset", columns=()
) -> dict:
    """`data` as `{name: convert(value, name)}`: a mapping of names to datasets, or one dataset named `default_name`
    (converted as `convert(data, None)`).

    One dataset is anything with `column_names` (a `datasets.Dataset`), a list, or a mapping holding one of `columns`
    (a dict of columns); any other mapping names its datasets. Names are strings: two keys with one string form (`1`
    and `"1"`) are refused, since one would silently replace the other.

    Args:
        data: the datasets by name, or one dataset.
        convert (`Callable`): `(value, name) -> dataset`, which checks and converts each value (`name` is `None` for
            a single dataset).
        expected (`str`): what `data` must be, the start of the `TypeError` for anything else.
        what (`str`, defaults to `"datasets"`): what the datasets are, for the duplicate-name error.
        default_name (`str`, defaults to `"dataset"`): the name of a single dataset.
        columns (`Sequence[str]`, defaults to `()`): keys that make a mapping one dataset (a dict of columns).

    Returns:
        `dict[str, Any]`: the converted datasets by name, in order.
    """
    if isinstance(data, Mapping) and not any(c in data for c in columns):
        named: dict = {}
        for name, value in data.items():
            if str(name) in named:
                keys = [k for k in data if str(k) == str(name)]
                raise ValueError(f"Two {what} are named {str(name)!r} (keys {keys}); give each its own name.")
            named[str(name)] = convert(value, name)
        return named
    if hasattr(data, "column_names") or (isinstance(data, Mapping | Sequence) and not isinstance(data, str)):
        return {default_name: convert(data, None)}
    raise TypeError(f"{expected}, got {type(data).__name__}.")


def is_train_split(split: str) -> bool:
    """Whether `split` asks for the `train` split, whole or sliced (`"train"`, `"train[:90%]"`, `"train[10:20]"`)."""
    return str(split).replace(" ", "") == "train" or str(split).replace(" ", "").startswith("train[")


def load_data(name_or_path: str, config: str | None = None, split: str = "train", whole_file: bool = False) -> Dataset:
    """
    One split of a dataset from wherever it is.

    Args:
        name_or_path (`str`):
            A `.jsonl`/`.json`/`.parquet`/`.csv` file (one split, `train`: the whole file), a `save_to_disk`
            directory, a directory of data files (split by file name as `datasets.load_dataset` does: `train.jsonl`,
            `test.jsonl`, ...), a directory in the released SCAS pool layout (one `<teacher>.jsonl` per teacher, see
            [`~trl_distill.core.pool.load_released_pool`]; one split, `train`), a Hub dataset id, or a source name
            (`scheme:name?options`, built by [`~trl_distill.core.sources.resolve_source`] for `split`).
        config (`str`, *optional*):
            The Hub dataset's configuration name.
        split (`str`, *optional*, defaults to `"train"`):
            The split to return; `datasets`' slices (`"train[:90%]"`, `"train[90%:]"`) are taken too.
        whole_file (`bool`, *optional*, defaults to `False`):
            Return a single data file (or a saved `Dataset`, or a released pool directory) whole whatever `split`
            names: for an argument that names a set of its own (a dev or eval file), where the file *is* the split.

    Returns:
        [`~datasets.Dataset`]: the split.

    Raises:
        `FileNotFoundError`: a local path that does not exist.
        `ValueError`: a file of another format; an empty file; a split the data does not have, naming the splits it
            has. A single file, a saved `Dataset` and a released pool directory have only a `train` split: asking
            them for `test` would evaluate on the training rows, so it is refused (unless `whole_file`) with the fix:
            a directory with `train.jsonl` and `test.jsonl`, a separate eval file, or a slice such as
            `"train[90%:]"`.
    """
    from .sources import is_source, resolve_source

    if is_source(name_or_path):
        return resolve_source(name_or_path, kind="dataset", split=split)
    path = os.path.expanduser(str(name_or_path))
    if os.path.isfile(path):
        return _load_file(path, split, whole_file)
    if os.path.isdir(path):
        return _load_directory(path, config, split, whole_file)
    check_local_path(name_or_path, "dataset")
    return _load_split(name_or_path, config, split)


def _load_file(path: str, split: str, whole_file: bool) -> Dataset:
    """A single data file: one split, `train` (all its rows)."""
    from datasets import load_dataset

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in DATA_FILE_BUILDERS:
        raise ValueError(f"Cannot read {path!r}: give a {'/'.join(DATA_FILE_BUILDERS)} file or a directory.")
    with open(path, "rb") as f:
        if not f.read(4096).strip():
            raise ValueError(f"The data file {path!r} is empty; give a file with at least one row.")
    if whole_file:
        split = "train"
    _check_one_split(split, path, "a single data file")
    try:
        return load_dataset(DATA_FILE_BUILDERS[suffix], data_files=path, split=split)
    except ValueError as error:
        if "corresponds to no data" in str(error):  # `[]`, or a CSV header without rows
            raise ValueError(f"The data file {path!r} has no rows; give a file with at least one row.") from None
        raise


def _load_directory(path: str, config: str | None, split: str, whole_file: bool) -> Dataset:
    """A `save_to_disk` directory, a released pool directory (one split, `train`) or a directory of data files."""
    from datasets import load_from_disk

    from .pool import is_released_pool_dir, load_released_pool

    if any(os.path.exists(os.path.join(path, f)) for f in SAVED_DATASET_FILES):
        return _split(load_from_disk(path), split, path, whole_file)
    if is_released_pool_dir(path):
        _check_one_split("train" if whole_file else split, path, "a released pool directory")
        return load_released_pool(path)
    return _load_split(path, config, split)


def _check_one_split(split: str, path: str, what: str) -> None:
    if not is_train_split(split):
        raise ValueError(
            f"{path!r} is {what}, which has one split, `train` (all its rows); it has no {split!r} split, and using the "
            "whole file for it would evaluate on the training rows. Give a directory with one file per split "
            "(`train.jsonl`, `test.jsonl`), a separate eval file, or a slice of the file, e.g. "
            "`--dataset_train_split 'train[:90%]' --dataset_test_split 'train[90%:]'`."
        )


def _load_split(name_or_path: str, config: str | None, split: str) -> Dataset:
    from datasets import load_dataset

    try:
        return load_dataset(name_or_path, config, split=split)
    except ValueError as error:
        if str(error).startswith("Unknown split"):  # datasets: 'Unknown split "test". Should be one of [...]'
            raise ValueError(f"{name_or_path!r}: {error} Pick one of them as the split.") from None
        raise


def _split(data, split: str, path: str, whole_file: bool = False) -> Dataset:
    if not isinstance(data, DatasetDict):
        if whole_file or str(split) in ("train", str(data.split)):
            return data
        _check_one_split(split, path, "a saved `Dataset` (not a `DatasetDict`)")
        raise ValueError(
            f"{path!r} is a saved `Dataset`, which `load_data` does not slice ({split!r}); split it with "
            "`dataset.train_test_split(...)` and save the `DatasetDict`, or pass `'train'`."
        )
    if split not in data:
        raise ValueError(f"The dataset at {path!r} has splits {sorted(data)}, not {split!r}.")
    return data[split]
