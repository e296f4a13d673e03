"""The toy pools, datasets and models of the tiny world: plain arguments, cached models.

Used by the `lab:` sources ([`~trl_distill.lab.sources`], which the toy recipes name), the examples, the tests and
the benchmarks.
"""

from datasets import Dataset
from transformers import AutoModelForCausalLM

from .models import pretrained_model
from .tasks import make_task_splits, task_reward


def toy_pool(
    num_prompts: int = 32,
    styles: tuple[str, ...] = ("cot", "terse", "verbose", "equation"),
    wrong_teacher: str | None = "sloppy",
    seed: int = 0,
    steps: int = 2,
) -> Dataset:
    """A grouped SCAS pool of arithmetic prompts: one teacher per solution `style`, all correct.

    With `wrong_teacher`, a further teacher answers every prompt in the `cot` style with a final answer off by one
    on every other prompt (`correct=False` there), so verification matters and teacher accuracies differ.

    Returns:
        `Dataset` with columns `prompt_id`, `prompt`, `answer`, `task` and `candidates`.
    """
    splits = {
        style: make_task_splits(("arithmetic",), num_prompts, 1, 1, seed=seed, style=style, steps=steps)["train"]
        for style in styles
    }
    first = splits[styles[0]]
    rows = []
    for i in range(num_prompts):
        candidates = [{"completion": splits[s][i]["completion"], "teacher": s, "correct": True} for s in styles]
        if wrong_teacher:
            text = (
                splits["cot"][i]["completion"][0]["content"]
                if "cot" in splits
                else first[i]["completion"][0]["content"]
            )
            body, _, value = text.rpartition("Answer: ")
            wrong = i % 2 == 0
            answer = str(int(value) + 1) if wrong else value
            candidates.append(
                {
                    "completion": [{"role": "assistant", "content": f"{body}Answer: {answer}"}],
                    "teacher": wrong_teacher,
                    "correct": not wrong,
                }
            )
        rows.append(
            {
                "prompt_id": i,
                "prompt": first[i]["prompt"],
                "answer": first[i]["answer"],
                "task": "arithmetic",
                "candidates": candidates,
            }
        )
    return Dataset.from_list(rows)


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


def pool_teacher(tokenizer, style: str, pretrain_steps: int = 300, seed: int = 0) -> str:
    """The path of a cached `xs` Llama teacher pre-trained on arithmetic written in `style` (`cot`, `terse`,
    `verbose`, `equation`): what a `lab:teacher?style=<style>` source stands for."""
    train = make_task_splits(("arithmetic",), 1024, 16, 16, seed=0, style=style)["train"]
    return pretrained_model(tokenizer, f"pool-teacher-{style}", train, pretrain_steps, seed=seed, arch="llama")


def pool_prompts(num_prompts: int = 64) -> Dataset:
    """Held-out arithmetic prompts (`prompt`, `answer`, `task`) for the pool builder's toy world."""
    return make_task_splits(("arithmetic",), 16, 16, num_prompts, seed=0)["test"]
