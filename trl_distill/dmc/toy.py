"""DMC's toy world: candidate datasets of one arithmetic task written by "teachers" of different styles and quality.

Used by `trl-distill dmc --lab`, `trl-distill dmc-rank --lab`, `examples/dmc.py --lab` and `benchmarks/bench_dmc.py`;
everything is
built offline in seconds from `trl_distill.lab`.
"""

from datasets import Dataset
from transformers import AutoModelForCausalLM

from ..lab.models import pretrained_model
from ..lab.tasks import make_task_splits, task_reward


def _corrupt(row: dict, index: int, every: int) -> dict:
    """Makes the final answer of every `every`-th row wrong (off by one), as a careless teacher would."""
    if index % every:
        return row
    text = row["completion"][0]["content"]
    head, _, value = text.rpartition("Answer: ")
    wrong = str(int(value) + 1)
    return {**row, "completion": [{"role": "assistant", "content": f"{head}Answer: {wrong}"}]}


def toy_candidates(train_size: int = 256, dev_size: int = 64, seed: int = 0) -> tuple[dict[str, Dataset], Dataset]:
    """Candidate arithmetic datasets (`cot`, `terse`, `verbose`, `noisy_cot`) and a dev split.

    The datasets share their prompts and differ in how their teacher writes the solution; `noisy_cot` has every
    second final answer wrong. Each row carries `answer`, `task` and a `correct` flag checked by the task verifier.

    Returns:
        `tuple[dict[str, Dataset], Dataset]`: the candidates by name and the dev split (`prompt`, `answer`, `task`).
    """
    candidates, dev = {}, None
    for name, style, every in (
        ("cot", "cot", 0),
        ("terse", "terse", 0),
        ("verbose", "verbose", 0),
        ("noisy_cot", "cot", 2),
    ):
        splits = make_task_splits(("arithmetic",), train_size, dev_size, 8, seed=seed, style=style)
        train = splits["train"]
        if every:
            train = train.map(_corrupt, with_indices=True, fn_kwargs={"every": every})
        correct = task_reward(completions=train["completion"], answer=train["answer"], task=train["task"])
        candidates[name] = train.add_column("correct", [bool(c) for c in correct])
        dev = splits["dev"]
    return candidates, dev


def toy_student(tokenizer, size: str = "xs", steps: int = 60, seed: int = 0):
    """A tiny student pre-trained briefly on equation-style arithmetic (cached), so DMC's components are not flat."""
    data = make_task_splits(("arithmetic",), 512, 8, 8, seed=seed + 100, style="equation")["train"]
    path = pretrained_model(tokenizer, "dmc-toy-student", data, steps, size, seed=seed)
    return AutoModelForCausalLM.from_pretrained(path), path
