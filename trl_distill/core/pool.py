"""The candidate-pool format shared by SCAS, DMC and the pool builder.

Two equivalent forms:

- **long**: one row per answer, columns `prompt_id`, `prompt`, `completion`, `teacher`, `correct`;
- **grouped**: one row per prompt, columns `prompt`, `candidates` (a list of `{completion, teacher, correct}`),
  and optionally `prompt_id`.

Other columns (e.g. `answer`, `task`, generation settings) are kept: per answer in the long form; in the grouped form
per prompt, or inside each candidate when they differ between the answers to one prompt. A plain SFT dataset
(`prompt`, `completion`) is a pool with one candidate per prompt.

Every function here also takes a list of rows or a dict of columns (see [`as_dataset`]), and the released SCAS pool
directory (one JSONL file per teacher) loads straight into the long form with [`load_released_pool`].

Prompts and answers are strings or lists of messages. A conversational answer may also come whole, as `messages`
(per row in the long form, per candidate in the grouped form): it is split before its trailing assistant turns into
`prompt` and `completion` messages.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset

from .data import did_you_mean
from .rewards import as_completions, as_reward_funcs, call_reward_funcs, is_correct, weighted_reward
from .tokenizers import chat_messages


LONG_COLUMNS = ("prompt_id", "prompt", "completion", "teacher", "correct")
CANDIDATE_KEYS = ("completion", "teacher", "correct")


def as_dataset(data, name: str = "The pool", released_pool: bool = True) -> Dataset:
    """`data` as a `datasets.Dataset`: a `Dataset` as it is, a list of rows (dicts) or a dict of columns converted,
    and, where `released_pool`, the path of a released SCAS pool directory loaded (see [`load_released_pool`]).

    Where `released_pool`, a column of rows whose values Arrow cannot hold in one type (e.g. `True` and `0.5`) becomes
    a string column, so that the pool's validation names the bad value.

    Args:
        data: the dataset, rows, columns or (where `released_pool`) path.
        name (`str`, defaults to `"The pool"`): what `data` is, as the errors name it.
        released_pool (`bool`, defaults to `True`): whether a path is read as a released pool directory (otherwise
            a string is refused like any other non-dataset).

    Raises:
        `TypeError` that says what is accepted for anything else (e.g. an `IterableDataset` or a pandas frame);
        `ValueError` for a path that is not a released pool directory.
    """
    if isinstance(data, Dataset):
        return data
    if released_pool and isinstance(data, str | os.PathLike):
        if is_released_pool_dir(data):
            return load_released_pool(data)
        raise ValueError(
            f"{name} path {str(data)!r} is not a released SCAS pool directory (one `<teacher>.jsonl` per "
            "teacher); load other files with `datasets.load_dataset` and pass the `Dataset`."
        )
    if isinstance(data, Mapping) and all(_is_column(values) for values in data.values()):
        return Dataset.from_dict({k: list(v) for k, v in data.items()})
    if isinstance(data, Sequence) and not isinstance(data, str) and all(isinstance(row, Mapping) for row in data):
        rows = [dict(row) for row in data]
        try:
            return Dataset.from_list(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if not released_pool:
                raise
            # a pool column of mixed types (e.g. True and 0.5) as strings: `validate_pool` then names the bad value
            return _from_rows(rows)
    accepted = (
        "a list of rows (dicts), a dict of columns or a released pool directory"
        if released_pool
        else "a list of row dicts or a dict of columns"
    )
    raise TypeError(
        f"{name} must be a `datasets.Dataset`, {accepted}, got {type(data).__name__}. Convert it first, e.g. "
        "`Dataset.from_list(rows)` (an IterableDataset: `Dataset.from_list(list(ds))`)."
    )


def _is_column(values) -> bool:
    # a column of a dict of columns: a list, tuple or array of values (a string or a dataset is not one)
    return isinstance(values, Sequence | np.ndarray) and not isinstance(values, str)


POOL_MARKERS = ("candidates", "prompt_id", "teacher")


def is_candidate_pool(dataset) -> bool:
    """Whether `dataset` is a candidate pool (it has a `candidates`, `prompt_id` or `teacher` column).

    Anything else (`text`, `messages`, `prompt`/`completion`, `conversations`, pre-tokenized `input_ids`, with any
    extra columns, e.g. the `correct` flags DMC's candidate datasets carry) is a plain SFT dataset, left to
    `SFTTrainer` as it is. A dataset with some pool columns but not all is a pool, so that [`validate_pool`] names
    what is missing.
    """
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, dict):  # a DatasetDict: not a single training dataset
        return False
    return bool(set(POOL_MARKERS) & set(columns or ()))


def pool_form(dataset: Dataset) -> str:
    """`"grouped"`, `"long"` or `"sft"` (plain `prompt`/`completion` or `messages` rows), judged by the columns.

    A dataset with a `correct` column but neither `teacher` nor `prompt_id` is refused: trained as plain SFT it would
    train its wrong answers too, and it does not say which answers belong to one prompt.
    """
    dataset = as_dataset(dataset)
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: it needs at least one prompt with one answer.")
    columns = set(dataset.column_names)
    if "candidates" in columns:
        return "grouped"
    if is_candidate_pool(dataset):
        return "long"
    if {"prompt", "completion"} <= columns or "messages" in columns:
        if "correct" in columns:
            raise ValueError(
                "The dataset has a `correct` column but no `prompt_id` or `teacher` column, so it is neither a "
                "candidate pool nor plain SFT data (plain SFT would train the wrong answers too). Add `prompt_id` "
                "(the same id for answers to one prompt) and `teacher` columns to select among verified answers, or "
                "drop the rows with `correct=False` and the `correct` column to train on every row."
            )
        return "sft"
    raise ValueError(
        f"Not a candidate pool: columns are {sorted(columns)}. Give either one row per answer with columns "
        f"{list(LONG_COLUMNS)}, or one row per prompt with `prompt` and `candidates` "
        "(a list of {completion, teacher, correct}), or a plain SFT dataset with `prompt` and `completion` (or "
        "`messages`)." + did_you_mean([c for c in ("prompt", "completion", "candidates") if c not in columns], columns)
    )


def parse_correct(value, where: str = "") -> bool:
    """A `correct` flag as a `bool`: `True`/`False`, the integers 0/1 (or 0.0/1.0), or the strings
    `"true"`/`"false"` (any case). Anything else — NaN, `None`, `"yes"`, `0.5` — raises a `ValueError` naming `where`
    and the value, never counted through `bool()` (which takes `"False"` and NaN for correct)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(
        f"{where + ': ' if where else ''}`correct` must be a boolean (True/False, 0/1 or the strings "
        f'"true"/"false"), got {value!r}. Verify the answers first, and drop or re-verify rows without a verdict.'
    )


ANSWER_ROLES = ("assistant", "gpt")


def split_conversation(messages: list[dict], where: str = "") -> tuple[list[dict], list[dict]]:
    """A conversation as `(prompt, completion)`: the completion is the trailing run of assistant messages.

    The answer roles are `assistant`, and ShareGPT's `gpt` (kept as is: the template renders what SFT trains).
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}`messages` must be a non-empty list of {{role, content}} dicts, got {messages!r}.")
    k = len(messages)
    while k > 0 and messages[k - 1].get("role") in ANSWER_ROLES:
        k -= 1
    if k == len(messages) or k == 0:
        raise ValueError(
            f"{where}`messages` must end with the assistant's answer after at least one other turn (roles: "
            f"{[m.get('role') for m in messages]}); give `prompt` and `completion` instead."
        )
    return messages[:k], messages[k:]


def conversational_to_prompt_completion(dataset: Dataset, where: str = "Row") -> Dataset:
    """A pool (or SFT dataset) whose answers are whole conversations, as `prompt`/`completion` messages.

    Each `messages` value (a row's, or a grouped candidate's) is split before its trailing assistant turns (see
    [`split_conversation`]); the answers to one prompt must share the prompt turns. Other datasets are returned as is.
    Errors name the row as `f"{where} {i}"`.
    """
    columns = dataset.column_names
    if "messages" in columns and "prompt" not in columns:

        def split(row, i):
            prompt, completion = split_conversation(row["messages"], f"{where} {i}: ")
            return {"prompt": prompt, "completion": completion}

        return dataset.map(split, with_indices=True, remove_columns=["messages"])
    if "candidates" not in columns:
        return dataset
    if not any(isinstance(c, dict) and "messages" in c for cands in dataset["candidates"] for c in cands or []):
        return dataset
    rows = []
    for i, row in enumerate(dataset):
        candidates, prompt = [], row.get("prompt")
        for j, candidate in enumerate(row["candidates"] or []):
            candidate = {k: v for k, v in candidate.items() if v is not None}
            if "messages" in candidate:
                turns, answer = split_conversation(candidate.pop("messages"), f"Row {i}, candidate {j}: ")
                if prompt is None:
                    prompt = turns
                elif prompt != turns:
                    raise ValueError(
                        f"Row {i}, candidate {j}: its `messages` start with other prompt turns than the row's "
                        "prompt; the answers to one prompt must share its prompt turns."
                    )
                candidate["completion"] = answer
            candidates.append(candidate)
        rows.append({**row, "prompt": prompt, "candidates": candidates})
    return Dataset.from_list(rows)


def _check_correct(value, where: str) -> None:
    parse_correct(value, where)


def _check_prompt_ids(prompt_ids, prompts, where: str = "Rows") -> None:
    first: dict = {}
    for i, (prompt_id, prompt) in enumerate(zip(prompt_ids, prompts)):
        j = first.setdefault(prompt_id, i)
        if j != i and prompts[j] != prompt:
            raise ValueError(
                f"{where} {j} and {i} share prompt_id {prompt_id!r} but have different prompts ({prompts[j]!r} vs "
                f"{prompt!r}); each prompt needs its own `prompt_id`."
            )


def validate_pool(dataset: Dataset, require_correct: bool = True) -> str:
    """Checks a pool's columns and values and returns its form (see [`pool_form`]).

    Raises a `ValueError` naming the column and row at fault: missing columns (with the closest column name, for a
    misspelled one), an empty candidate list, a candidate without a completion, a row without a `teacher` or
    `prompt_id` (None or NaN), a non-boolean `correct` flag (NaN, `None`, `"yes"`, `0.5`), two prompts under one
    `prompt_id`, or an empty pool.

    Args:
        dataset (`Dataset`): the pool, long or grouped (or a plain SFT dataset); a list of rows or a dict of columns
            is accepted too.
        require_correct (`bool`, defaults to `True`): whether each answer must carry a `correct` flag.
    """
    dataset = as_dataset(dataset)
    if len(dataset) == 0:
        raise ValueError("The candidate pool is empty: it needs at least one prompt with one answer.")
    form = pool_form(dataset)
    columns = set(dataset.column_names)
    if form == "long":
        required = set(LONG_COLUMNS) - (set() if require_correct else {"correct"})
        missing = sorted(required - columns)
        if missing:
            raise ValueError(
                f"The long-form pool is missing column(s) {missing}; it needs {list(LONG_COLUMNS)}."
                + did_you_mean(missing, columns)
            )
        for i, (completion, correct, teacher, prompt_id) in enumerate(
            zip(
                dataset["completion"],
                dataset["correct"] if "correct" in columns else [True] * len(dataset),
                dataset["teacher"],
                dataset["prompt_id"],
            )
        ):
            if completion is None or (isinstance(completion, str) and not completion.strip()):
                raise ValueError(f"Row {i}: `completion` is empty; drop the row or regenerate the answer.")
            # a missing teacher or prompt id would silently be the teacher "None", or join every such row to one prompt
            for column, value in (("teacher", teacher), ("prompt_id", prompt_id)):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    raise ValueError(f"Row {i}: `{column}` is missing ({value!r}); fill it or drop the row.")
            if require_correct or correct is not None:
                _check_correct(correct, f"Row {i}")
        _check_prompt_ids(dataset["prompt_id"], dataset["prompt"])
    elif form == "grouped":
        if "prompt" not in columns:
            raise ValueError("The grouped pool is missing the `prompt` column." + did_you_mean("prompt", columns))
        for i, candidates in enumerate(dataset["candidates"]):
            if not candidates:
                raise ValueError(f"Row {i}: `candidates` is empty; every prompt needs at least one answer.")
            for j, candidate in enumerate(candidates):
                where = f"Row {i}, candidate {j}"
                keys = CANDIDATE_KEYS if require_correct else CANDIDATE_KEYS[:2]
                missing = [k for k in keys if candidate.get(k) is None]
                if missing:
                    raise ValueError(f"{where}: missing {missing}; each candidate needs {list(keys)}.")
                if require_correct or candidate.get("correct") is not None:
                    _check_correct(candidate["correct"], where)
        if "prompt_id" in columns:
            _check_prompt_ids(dataset["prompt_id"], dataset["prompt"])
    return form


def to_long_pool(dataset: Dataset, require_correct: bool = True) -> Dataset:
    """The pool as one row per answer (a long-form input is returned as is; grouped rows unfold in order).

    A plain SFT dataset becomes one candidate per prompt (teacher `"dataset"`, `correct=True`). `correct` flags are
    parsed into booleans (see [`parse_correct`]); a missing flag (allowed with `require_correct=False`) counts as
    `True`. Conversational answers given as whole `messages` are split into `prompt`/`completion` messages first
    ([`conversational_to_prompt_completion`]).
    """
    dataset = conversational_to_prompt_completion(as_dataset(dataset))
    form = validate_pool(dataset, require_correct)
    if form == "long":
        if "correct" in dataset.column_names and not all(isinstance(c, bool) for c in dataset["correct"]):
            flags = [True if c is None else parse_correct(c) for c in dataset["correct"]]
            dataset = dataset.remove_columns("correct").add_column("correct", flags)
        return dataset
    if form == "sft":
        return dataset.map(
            lambda row, i: {"prompt_id": i, "teacher": "dataset", "correct": True},
            with_indices=True,
        )
    extra = [c for c in dataset.column_names if c not in ("candidates", "prompt_id")]
    rows = []
    for i, row in enumerate(dataset):
        prompt_id = row.get("prompt_id", i)
        for candidate in row["candidates"]:
            rows.append(
                {
                    **{c: row[c] for c in extra},
                    **{k: v for k, v in candidate.items() if k not in CANDIDATE_KEYS},
                    "prompt_id": prompt_id,
                    "completion": candidate["completion"],
                    "teacher": candidate["teacher"],
                    "correct": True if candidate.get("correct") is None else parse_correct(candidate["correct"]),
                }
            )
    return Dataset.from_list(rows)


def verify_pool(dataset: Dataset, reward_funcs, correct_threshold: float = 1.0) -> Dataset:
    """The pool in long form with each answer's `correct` flag set by `reward_funcs`, as the pool builder sets it.

    The reward functions are called as `GRPOTrainer` calls them (see [`trl_distill.core.rewards`]): `prompts` and
    `completions` as the pool holds them (text, or messages after a conversational prompt), the pool's other columns
    as keyword arguments. An answer is correct when its summed reward reaches `correct_threshold`; one no function
    scored (every reward `None`) is not. The summed reward is kept in a `reward` column (`None` where unscored), any
    earlier `correct` and `reward` columns replaced.

    Args:
        dataset (`Dataset`): a candidate pool in any form [`to_long_pool`] takes (the `correct` column may be absent).
        reward_funcs (`Callable`, `str` or `list`): TRL reward functions or verifier names (e.g.
            `trl.rewards.accuracy_reward`, `"exact_match"`).
        correct_threshold (`float`, *optional*, defaults to `1.0`): the reward at which an answer is correct.

    Returns:
        `Dataset`: the long-form pool with `correct` and `reward` columns.
    """
    long = to_long_pool(dataset, require_correct=False)
    long = long.remove_columns([c for c in ("correct", "reward") if c in long.column_names])
    prompts = long["prompt"]
    columns = {c: long[c] for c in long.column_names}
    per_func = call_reward_funcs(
        as_reward_funcs(reward_funcs), prompts, as_completions(prompts, long["completion"]), columns, where=" (pool)"
    )
    rewards = weighted_reward(per_func)
    return long.add_column("reward", [None if math.isnan(r) else r for r in rewards.tolist()]).add_column(
        "correct", [bool(c) for c in is_correct(rewards, correct_threshold)]
    )


def to_grouped_pool(dataset: Dataset, require_correct: bool = True) -> Dataset:
    """The pool as one row per prompt with a `candidates` list, in order of first appearance of each prompt."""
    dataset = conversational_to_prompt_completion(as_dataset(dataset))
    form = validate_pool(dataset, require_correct)
    if form == "grouped":
        return dataset
    long = to_long_pool(dataset, require_correct)
    per_answer = {"completion", "teacher", "correct"}
    extra = [c for c in long.column_names if c not in per_answer]
    # a column that differs between answers to one prompt (a reward, a teacher's settings) stays with each candidate
    rows_of = prompt_groups(long["prompt_id"]).values()
    varying = set()
    for c in extra:
        values = list(long[c])
        if any(values[i] != values[rows[0]] for rows in rows_of for i in rows[1:]):
            varying.add(c)
    groups: dict = {}
    for row in long:
        prompt_columns = {c: row[c] for c in extra if c not in varying}
        group = groups.setdefault(row["prompt_id"], prompt_columns | {"candidates": []})
        group["candidates"].append(
            {c: row[c] for c in extra if c in varying}
            | {"completion": row["completion"], "teacher": row["teacher"], "correct": row.get("correct", True)}
        )
    return Dataset.from_list(list(groups.values()))


def prompt_groups(prompt_ids) -> dict:
    """Row indices of each `prompt_id`, in order of first appearance."""
    groups: dict = {}
    for i, prompt_id in enumerate(prompt_ids):
        groups.setdefault(prompt_id, []).append(i)
    return groups


# The released SCAS pool (docs/methods.md §1): a directory per source corpus with one JSONL file per teacher. File names
# the released scorer recognises, longest suffix first; the teacher is the name before the suffix.
RELEASED_SUFFIXES = (
    "_teacher_responses_evaluated.jsonl",
    "_teacher_responses.jsonl",
    "_student_train.jsonl",
    ".jsonl",
)
RELEASED_DEFAULT_SYSTEM = "You are a helpful assistant."


def _released_teacher_files(directory) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        if path.name.endswith("_scas_scores.jsonl"):  # the released scorer's outputs, not candidates
            continue
        suffix = next(s for s in RELEASED_SUFFIXES if path.name.endswith(s))
        teacher = path.name[: -len(suffix)]
        if teacher in files:
            raise ValueError(
                f"{str(directory)!r} holds two candidate files for teacher {teacher!r} ({files[teacher].name} and "
                f"{path.name}); keep one per teacher."
            )
        files[teacher] = path
    return files


def is_released_pool_dir(path) -> bool:
    """Whether `path` is a directory laid out as the released SCAS pool: `*.jsonl` files (one per teacher) whose
    first row has `id`, `instruction` and `teacher_output` (or `output`)."""
    if not isinstance(path, str | os.PathLike) or not os.path.isdir(path):
        return False
    try:
        files = _released_teacher_files(path)
    except ValueError:  # two files for one teacher: a pool directory, and the loader says what is wrong
        return True
    if not files:
        return False
    for file in files.values():
        with open(file, encoding="utf-8") as f:
            line = next((line for line in f if line.strip()), None)
        if line is None:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return False
        return (
            isinstance(row, dict)
            and {"id", "instruction"} <= row.keys()
            and bool({"teacher_output", "output"} & row.keys())
        )
    return False


def load_released_pool(directory, default_system: str | None = RELEASED_DEFAULT_SYSTEM) -> Dataset:
    """Loads the released SCAS candidate pool, as published, into the long pool format.

    Two layouts, both one JSONL file per teacher in `directory`:

    - the verified pool (`scas_verified_teacher_pool/data/<corpus>/<teacher_name>.jsonl`), rows `id`,
      `source_dataset`, `teacher_name`, `system`, `instruction`, `teacher_output`, `reference_answer`,
      `reference_solution`, `is_common_correct`;
    - the demo candidates (`<teacher>_student_train.jsonl`), rows `id`, `instruction`, `teacher_output` or `output`,
      `system`, `teacher`.

    Each row becomes one candidate: `prompt_id` = `id`, `prompt` = `[system, user: instruction]` (conversational, so
    the student's chat template renders it as the released scorer does), `completion` = `[assistant:
    teacher_output]`, `teacher` = `teacher_name` or `teacher` or the file's name, `correct` = `is_common_correct`
    (`True` where the row has none, as in the demo files, whose candidates are verified beforehand). Every other
    field is kept as a column. Files are read in name order, rows in file order.

    Args:
        directory (`str` or `os.PathLike`): one source-corpus directory (e.g. `.../data/deepscaler`).
        default_system (`str`, *optional*, defaults to `"You are a helpful assistant."`): the system message of rows
            without one (the released scorer's default); `None` renders no system message for them.

    Returns:
        `Dataset`: the long-form pool.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{str(directory)!r} is not a directory.")
    files = _released_teacher_files(directory)
    if not files:
        corpora = sorted({p.parent.name for p in directory.glob("*/*.jsonl")})
        hint = f" It has sub-directories with JSONL files ({corpora}): pass one of them." if corpora else ""
        raise ValueError(f"{str(directory)!r} holds no `<teacher>.jsonl` candidate files.{hint}")
    rows = [
        _released_candidate(row, where, file_teacher, default_system)
        for file_teacher, path in files.items()
        for where, row in _jsonl_rows(path)
    ]
    return _from_rows(rows)


def _jsonl_rows(path: Path):
    """`(where, row)` for each non-blank line of a JSONL file, `where` naming the file and line for errors."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name}, line {line_number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error}).") from None


# the released fields that become the candidate's own columns; every other field is kept as it is
_RELEASED_CANDIDATE_FIELDS = ("id", "instruction", "teacher_output", "output", "teacher", "teacher_name",
                              "is_common_correct")  # fmt: skip


def _released_candidate(row: dict, where: str, file_teacher: str, default_system: str | None) -> dict:
    """One released row as a long-pool candidate (see [`load_released_pool`] for the mapping)."""
    completion = row.get("teacher_output") or row.get("output")
    if row.get("id") is None or not row.get("instruction") or not completion:
        raise ValueError(
            f"{where}: a candidate needs `id`, `instruction` and `teacher_output` (or `output`); got the "
            f"fields {sorted(k for k, v in row.items() if v not in (None, ''))}."
        )
    system = row.get("system") or default_system
    correct = row.get("is_common_correct")
    extra = {k: v for k, v in row.items() if k not in _RELEASED_CANDIDATE_FIELDS}
    return {
        "prompt_id": row["id"],
        "prompt": chat_messages(row["instruction"], system),
        "completion": [{"role": "assistant", "content": completion}],
        "teacher": str(row.get("teacher_name") or row.get("teacher") or file_teacher),
        **extra,
        "correct": True if correct is None else parse_correct(correct, where),
    }


def _from_rows(rows: list[dict]) -> Dataset:
    # Arrow needs one type per column: a field that is an int in one file and a string in another (ids, reference
    # answers) becomes a string column, and a field missing from some rows is None there.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = {k: [row.get(k) for row in rows] for k in keys}
    for k, values in columns.items():
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float} and not all(issubclass(t, list | dict) for t in kinds):
            columns[k] = [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
    return Dataset.from_dict(columns)
