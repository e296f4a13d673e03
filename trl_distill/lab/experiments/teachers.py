"""The lab's shared cast: four arithmetic teachers of different strength and answer style, the base student, the
domain splits, and the teachers' verified answers to the training prompts (the candidate pool).

The student is briefly pre-trained on *equation*-style solutions, so the teacher whose answers are cheapest for it to
learn is not necessarily the most accurate one.
"""

from datasets import Dataset

from ..models import pretrained_model
from ..tasks import make_task_splits, task_reward
from .common import TASK_KWARGS, Lab, answers, load


# name -> (answer style, share of the strongest teacher's pre-training steps)
TEACHERS = {
    "verbose-strong": ("verbose", 1.0),
    "cot-medium": ("cot", 0.6),
    "terse-medium": ("terse", 1.0),
    "equation-weak": ("equation", 0.35),
}


def domain_splits(lab: Lab):
    """The student's arithmetic splits: training prompts (with `cot` reference solutions), dev and test."""
    p = lab.preset
    return make_task_splits(("arithmetic",), p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0, **TASK_KWARGS)


def cast(lab: Lab, bar=None) -> dict:
    """Builds (or loads from the cache) the teachers and the base student, and the teachers' answers.

    Returns:
        `dict` with `splits`, `student` (path), `teachers` (name -> path), `pool` (long-form candidate pool: one row
        per prompt and teacher with `prompt_id`, `prompt`, `completion`, `teacher`, `correct`, `answer`, `task`) and
        `teacher_accuracy` (share of correct answers on the training prompts).
    """
    if "cast" in lab.shared:
        return lab.shared["cast"]
    p, tok = lab.preset, lab.tokenizer
    splits = domain_splits(lab)
    teachers = {}
    for i, (name, (style, share)) in enumerate(TEACHERS.items()):
        data = make_task_splits(("arithmetic",), 1024, 1, 1, seed=100 + i, style=style, **TASK_KWARGS)["train"]
        teachers[name] = pretrained_model(tok, f"lab-teacher-{name}", data, max(1, int(p.teacher_steps * share)), p.size)
        if bar is not None:
            bar.update(1)
    student_data = make_task_splits(("arithmetic",), 1024, 1, 1, seed=200, style="equation", **TASK_KWARGS)["train"]
    student = pretrained_model(tok, "lab-student", student_data, p.student_steps, p.size, seed=1)
    if bar is not None:
        bar.update(1)

    train = splits["train"]
    rows, accuracy = [], {}
    for name, path in teachers.items():
        texts = answers(load(path), tok, train, max_new_tokens=p.max_new_tokens + 16)
        correct = task_reward(completions=texts, answer=train["answer"], task=train["task"])
        accuracy[name] = sum(c or 0.0 for c in correct) / len(correct)
        for i, (text, ok) in enumerate(zip(texts, correct)):
            rows.append(
                {
                    "prompt_id": i,
                    "prompt": train[i]["prompt"],
                    "completion": [{"role": "assistant", "content": text}],
                    "teacher": name,
                    "correct": bool(ok),
                    "answer": train[i]["answer"],
                    "task": "arithmetic",
                }
            )
        if bar is not None:
            bar.update(1)
    if not any(row["correct"] for row in rows):
        raise RuntimeError(
            f"No teacher answered any of the {len(train)} training prompts correctly ({accuracy}); the candidate pool "
            "has nothing to select. Raise the preset's `teacher_steps` (or clear a stale `$TRL_DISTILL_CACHE`)."
        )
    # Verified answers first: `scas_select` reads the score format from the first row's score, which is `None` for a
    # wrong answer (a bug in trl_distill.scas.selection, reported); the row order does not matter to SCAS otherwise.
    rows.sort(key=lambda row: not row["correct"])
    lab.shared["cast"] = {
        "splits": splits,
        "student": student,
        "teachers": teachers,
        "pool": Dataset.from_list(rows),
        "teacher_accuracy": accuracy,
    }
    return lab.shared["cast"]


CAST_STEPS = 2 * len(TEACHERS) + 1
