"""A candidate pool in the tiny world, for examples, tests and benchmarks (no model needed to build it)."""

from datasets import Dataset

from ..lab.tasks import make_task_splits


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
