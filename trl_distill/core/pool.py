"""The candidate-pool format shared by SCAS, DMC and the pool builder.

Two equivalent forms:

- **long**: one row per answer, columns `prompt_id`, `prompt`, `completion`, `teacher`, `correct`;
- **grouped**: one row per prompt, columns `prompt`, `candidates` (a list of `{completion, teacher, correct}`),
  and optionally `prompt_id`.

Other columns (e.g. `answer`, `task`, generation settings) are kept: per answer in the long form; in the grouped form
per prompt, or inside each candidate when they differ between the answers to one prompt. A plain SFT dataset
(`prompt`, `completion`) is a pool with one candidate per prompt.
"""

from datasets import Dataset


LONG_COLUMNS = ("prompt_id", "prompt", "completion", "teacher", "correct")
CANDIDATE_KEYS = ("completion", "teacher", "correct")


def pool_form(dataset: Dataset) -> str:
    """`"grouped"`, `"long"` or `"sft"` (plain `prompt`/`completion` rows), judged by the columns."""
    columns = set(dataset.column_names)
    if "candidates" in columns:
        return "grouped"
    if {"completion", "teacher"} <= columns or "prompt_id" in columns:
        return "long"
    if {"prompt", "completion"} <= columns:
        return "sft"
    raise ValueError(
        f"Not a candidate pool: columns are {sorted(columns)}. Give either one row per answer with columns "
        f"{list(LONG_COLUMNS)}, or one row per prompt with `prompt` and `candidates` "
        "(a list of {completion, teacher, correct}), or a plain SFT dataset with `prompt` and `completion`."
    )


def _check_correct(value, where: str) -> None:
    if not isinstance(value, bool | int | float) or value is None:
        raise ValueError(f"{where}: `correct` must be a boolean (or 0/1), got {value!r}. Verify the answers first.")


def validate_pool(dataset: Dataset, require_correct: bool = True) -> str:
    """Checks a pool's columns and values and returns its form (see [`pool_form`]).

    Raises a `ValueError` naming the column and row at fault: missing columns, an empty candidate list, a candidate
    without a completion, a non-boolean `correct` flag, or an empty pool.

    Args:
        dataset (`Dataset`): the pool, long or grouped (or a plain SFT dataset).
        require_correct (`bool`, defaults to `True`): whether each answer must carry a `correct` flag.
    """
    if len(dataset) == 0:
        raise ValueError("The candidate pool is empty: it needs at least one prompt with one answer.")
    form = pool_form(dataset)
    columns = set(dataset.column_names)
    if form == "long":
        required = set(LONG_COLUMNS) - (set() if require_correct else {"correct"})
        missing = sorted(required - columns)
        if missing:
            raise ValueError(f"The long-form pool is missing column(s) {missing}; it needs {list(LONG_COLUMNS)}.")
        for i, (completion, correct) in enumerate(zip(dataset["completion"], dataset["correct"] if "correct" in columns else [True] * len(dataset))):
            if completion is None or (isinstance(completion, str) and not completion.strip()):
                raise ValueError(f"Row {i}: `completion` is empty; drop the row or regenerate the answer.")
            if require_correct:
                _check_correct(correct, f"Row {i}")
    elif form == "grouped":
        if "prompt" not in columns:
            raise ValueError("The grouped pool is missing the `prompt` column.")
        for i, candidates in enumerate(dataset["candidates"]):
            if not candidates:
                raise ValueError(f"Row {i}: `candidates` is empty; every prompt needs at least one answer.")
            for j, candidate in enumerate(candidates):
                where = f"Row {i}, candidate {j}"
                keys = CANDIDATE_KEYS if require_correct else CANDIDATE_KEYS[:2]
                missing = [k for k in keys if candidate.get(k) is None]
                if missing:
                    raise ValueError(f"{where}: missing {missing}; each candidate needs {list(keys)}.")
                if require_correct:
                    _check_correct(candidate["correct"], where)
    return form


def to_long_pool(dataset: Dataset, require_correct: bool = True) -> Dataset:
    """The pool as one row per answer (a long-form input is returned as is; grouped rows unfold in order).

    A plain SFT dataset becomes one candidate per prompt (teacher `"dataset"`, `correct=True`).
    """
    form = validate_pool(dataset, require_correct)
    if form == "long":
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
                    "correct": bool(candidate.get("correct", True)),
                }
            )
    return Dataset.from_list(rows)


def to_grouped_pool(dataset: Dataset, require_correct: bool = True) -> Dataset:
    """The pool as one row per prompt with a `candidates` list, in order of first appearance of each prompt."""
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
            | {"completion": row["completion"], "teacher": row["teacher"], "correct": bool(row.get("correct", True))}
        )
    return Dataset.from_list(list(groups.values()))


def prompt_groups(prompt_ids) -> dict:
    """Row indices of each `prompt_id`, in order of first appearance."""
    groups: dict = {}
    for i, prompt_id in enumerate(prompt_ids):
        groups.setdefault(prompt_id, []).append(i)
    return groups
