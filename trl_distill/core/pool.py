"""The candidate-pool format shared by SCAS, DMC and the pool builder.

Two equivalent forms:

- **long**: one row per answer, columns `prompt_id`, `prompt`, `completion`, `teacher`, `correct`;
- **grouped**: one row per prompt, columns `prompt`, `candidates` (a list of `{completion, teacher, correct}`),
  and optionally `prompt_id`.

Other columns (e.g. `answer`, `task`, generation settings) are kept: per answer in the long form; in the grouped form
per prompt, or inside each candidate when they differ between the answers to one prompt. A plain SFT dataset
(`prompt`, `completion`) is a pool with one candidate per prompt.

Prompts and answers are strings or lists of messages. A conversational answer may also come whole, as `messages`
(per row in the long form, per candidate in the grouped form): it is split before its trailing assistant turns into
`prompt` and `completion` messages.
"""

from datasets import Dataset


LONG_COLUMNS = ("prompt_id", "prompt", "completion", "teacher", "correct")
CANDIDATE_KEYS = ("completion", "teacher", "correct")


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
    """`"grouped"`, `"long"` or `"sft"` (plain `prompt`/`completion` or `messages` rows), judged by the columns."""
    columns = set(dataset.column_names)
    if "candidates" in columns:
        return "grouped"
    if is_candidate_pool(dataset):
        return "long"
    if {"prompt", "completion"} <= columns or "messages" in columns:
        return "sft"
    raise ValueError(
        f"Not a candidate pool: columns are {sorted(columns)}. Give either one row per answer with columns "
        f"{list(LONG_COLUMNS)}, or one row per prompt with `prompt` and `candidates` "
        "(a list of {completion, teacher, correct}), or a plain SFT dataset with `prompt` and `completion` (or "
        "`messages`)."
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


def conversational_to_prompt_completion(dataset: Dataset) -> Dataset:
    """A pool (or SFT dataset) whose answers are whole conversations, as `prompt`/`completion` messages.

    Each `messages` value (a row's, or a grouped candidate's) is split before its trailing assistant turns (see
    [`split_conversation`]); the answers to one prompt must share the prompt turns. Other datasets are returned as is.
    """
    columns = dataset.column_names
    if "messages" in columns and "prompt" not in columns:

        def split(row, i):
            prompt, completion = split_conversation(row["messages"], f"Row {i}: ")
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

    A plain SFT dataset becomes one candidate per prompt (teacher `"dataset"`, `correct=True`). Conversational
    answers given as whole `messages` are split into `prompt`/`completion` messages first
    ([`conversational_to_prompt_completion`]).
    """
    dataset = conversational_to_prompt_completion(dataset)
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
    dataset = conversational_to_prompt_completion(dataset)
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
