"""Task families of the tiny world, deterministic by seed, with train/dev/test splits.

- `arithmetic` (the *domain* task): multi-step addition/subtraction with a chain of thought and a final
  `Answer:` line. `style` changes how the reasoning is written (teachers of different styles): `cot` (one line per
  step), `verbose` (`Step k:` before each line), `explained` (cot's lines and a sentence restating the result),
  `equation` (the whole expression on one line), `terse` (the answer alone).
- `reverse`, `sort`, `count`, `copy` (the *general* tasks): string operations with an `Answer:` line.

Rows are conversational prompt–completion pairs, as TRL expects, plus `answer` and `task` columns.
"""

import random
import string

from datasets import Dataset, DatasetDict

from ...core.verifiers import exact_match_reward, numeric_reward, register_verifier


STYLES = ("cot", "terse", "verbose", "equation", "explained")
GENERAL_TASKS = ("reverse", "sort", "count", "copy")
DOMAIN_TASKS = ("arithmetic",)
SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}


def arithmetic_example(rng: random.Random, steps: int = 2, max_value: int = 20, style: str = "cot") -> dict:
    """One multi-step arithmetic problem with its worked solution in `style`."""
    if style not in STYLES:
        raise ValueError(f"Unknown arithmetic style {style!r}; choose one of {STYLES}.")
    value = rng.randint(0, max_value)
    expression, lines = str(value), []
    for i in range(steps):
        op, operand = rng.choice("+-"), rng.randint(0, max_value)
        result = value + operand if op == "+" else value - operand
        expression += f"{op}{operand}"
        lines.append(
            f"Step {i + 1}: {value}{op}{operand}={result}" if style == "verbose" else f"{value}{op}{operand}={result}"
        )
        value = result
    if style == "terse":
        body = ""
    elif style == "explained":  # cot's lines, then a sentence restating the result: cot with extra words
        body = "\n".join(lines) + f"\nSo the result is {value}.\n"
    elif style == "equation":
        body = f"{expression}={value}\n"
    else:
        body = "\n".join(lines) + "\n"
    return {"question": f"Compute {expression}.", "solution": f"{body}Answer: {value}", "answer": str(value)}


def general_example(rng: random.Random, task: str, min_len: int = 3, max_len: int = 6) -> dict:
    """One string-operation problem (`reverse`, `sort`, `count` or `copy`)."""
    word = "".join(rng.choice(string.ascii_lowercase[:8]) for _ in range(rng.randint(min_len, max_len)))
    if task == "reverse":
        question, answer = f"Reverse: {word}", word[::-1]
    elif task == "sort":
        question, answer = f"Sort: {word}", "".join(sorted(word))
    elif task == "count":
        letter = rng.choice(word)
        question, answer = f"Count {letter} in: {word}", str(word.count(letter))
    elif task == "copy":
        question, answer = f"Copy: {word}", word
    else:
        raise ValueError(f"Unknown general task {task!r}; choose one of {GENERAL_TASKS}.")
    return {"question": question, "solution": f"Answer: {answer}", "answer": answer}


def make_example(rng: random.Random, task: str, style: str = "cot", steps: int = 2, max_value: int = 20) -> dict:
    """A conversational prompt–completion row of `task`."""
    if task == "arithmetic":
        ex = arithmetic_example(rng, steps=steps, max_value=max_value, style=style)
    else:
        ex = general_example(rng, task)
    return {
        "prompt": [{"role": "user", "content": ex["question"]}],
        "completion": [{"role": "assistant", "content": ex["solution"]}],
        "answer": ex["answer"],
        "task": task,
    }


def make_split(
    tasks: tuple[str, ...] | list[str],
    size: int,
    seed: int,
    split: str = "train",
    exclude: set | None = None,
    **kwargs,
) -> Dataset:
    """`size` distinct rows drawn round-robin from `tasks`; prompts in `exclude` are skipped (held-out splits)."""
    unknown = set(tasks) - set(GENERAL_TASKS + DOMAIN_TASKS)
    if unknown:
        raise ValueError(f"Unknown tasks {sorted(unknown)}; choose from {GENERAL_TASKS + DOMAIN_TASKS}.")
    rng = random.Random(f"{seed}-{SPLIT_SEEDS.get(split, split)}")
    rows, seen = [], set(exclude or ())
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > 50 * size + 1000:
            raise ValueError(f"Could not draw {size} distinct {split} examples of {tasks}; lower the size.")
        row = make_example(rng, tasks[len(rows) % len(tasks)], **kwargs)
        key = row["prompt"][0]["content"]
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return Dataset.from_list(rows)


def make_task_splits(
    tasks, train_size: int = 2000, dev_size: int = 200, test_size: int = 200, seed: int = 0, **kwargs
) -> DatasetDict:
    """Train/dev/test splits of `tasks` with no prompt shared between splits."""
    splits, seen = {}, set()
    for split, size in (("test", test_size), ("dev", dev_size), ("train", train_size)):
        splits[split] = make_split(tuple(tasks), size, seed, split=split, exclude=seen, **kwargs)
        seen |= {p[0]["content"] for p in splits[split]["prompt"]}
    return DatasetDict(train=splits["train"], dev=splits["dev"], test=splits["test"])


def verifier_for(task: str):
    """The reward function that checks `task`: numeric for arithmetic and counting, exact otherwise."""
    return numeric_reward if task in ("arithmetic", "count") else exact_match_reward


def task_reward(prompts=None, completions=None, answer=None, task=None, **kwargs) -> list[float | None]:
    """Verifier of the whole tiny world: dispatches each row to its task's verifier by the `task` column."""
    if task is None:
        raise ValueError("task_reward needs the `task` column to choose each row's verifier.")
    rewards = []
    for completion, reference, name in zip(completions, answer, task):
        rewards += verifier_for(name)(completions=[completion], answer=[reference])
    return rewards


# every job that takes a verifier name (`--verifier lab_task`) resolves it through the core registry
register_verifier("lab_task", task_reward)
