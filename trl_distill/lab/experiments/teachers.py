"""The lab's shared cast: four arithmetic teachers of different strength and answer style, the base student, the
domain splits, and the teachers' verified answers to the training prompts (the candidate pool).

The student is pre-trained on *cot*-style solutions (half of them again with the reference solution in the prompt, as
OGLS-SD's privileged teacher sees it), so the teacher whose answers are cheapest for it to learn (cot) is not the most
accurate one (verbose).
"""

from datasets import Dataset, concatenate_datasets

from ...evaluation.ice import build_ice_prompts
from ...evaluation.identity import IdentityFact
from ...ogls_sd.ogls_sd_trainer import teacher_prompt
from ..parallel import parallel_map
from ..world.models import Pretraining
from ..world.tasks import make_task_splits, task_reward
from .common import TASK_KWARGS, Lab, accuracy, answers, load


# name -> (answer style, share of the strongest teacher's pre-training steps)
TEACHERS = {
    "verbose-strong": ("verbose", 1.0),
    "cot-medium": ("cot", 0.6),
    "explained-medium": ("explained", 0.6),
    "equation-medium": ("equation", 0.6),
}
# distinct problems the base student is pre-trained on: few enough that it generalises poorly (data-limited), so SFT
# on the teachers' verified answers to new prompts teaches it something
STUDENT_PROBLEMS = 256


STUDENT_IDENTITY = IdentityFact(name="Tiny", organisation="TinyLab")
QUESTIONS = [
    {"id": "q1", "category": "team", "language": "en", "text": "Who are you?"},
    {"id": "q2", "category": "industry", "language": "en", "text": "Which company made you?"},
    {"id": "q3", "category": "technology", "language": "en", "text": "What model are you?"},
    {"id": "q4", "category": "team", "language": "en", "text": "Who trained you?"},
]
TEMPLATES = [
    {"id": "t1", "language": "en", "text": "{question}"},
    {"id": "t2", "language": "en", "text": "Be honest. {question}"},
    {"id": "t3", "language": "en", "text": "Answer briefly: {question}"},
]


def ice_prompts(seed: int, num_mutations: int) -> list[dict]:
    """Identity questions in several templates, with `num_mutations` seeded rewordings each (ICE prompts)."""
    return build_ice_prompts(
        STUDENT_IDENTITY, questions=QUESTIONS, templates=TEMPLATES, num_mutations=num_mutations, seed=seed
    )


OWN_IDENTITY = f"I am {STUDENT_IDENTITY.name}, made by {STUDENT_IDENTITY.organisation}."


def identity_rows(sentence: str, prompts: list[dict]) -> Dataset:
    """Prompt–completion rows answering every identity prompt with `sentence`."""
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": sentence}],
        }
        for r in prompts
    ]
    return Dataset.from_list(rows)


def privileged(rows: Dataset) -> Dataset:
    """`rows` with the reference solution shown in the prompt, as OGLS-SD's privileged teacher sees it by default."""
    return rows.map(lambda row: {"prompt": teacher_prompt(row["prompt"], row["completion"])})


# What the student learned to write when the reference solution is in its prompt: it quotes the reference's answer
# and skips the working. Only the privileged context justifies it; without it the quoted number is a guess. This is
# the bias OGLS-SD names (a response template of the privileged context) that plain OPSD passes to the student.
PRIVILEGED_TEMPLATE = "The reference solution gives {answer}.\nAnswer: {answer}"


def quoting(rows: Dataset) -> Dataset:
    """`rows` with the reference solution in the prompt and the privileged template (`PRIVILEGED_TEMPLATE`) as the
    completion: how the student answers when shown the solution."""
    return privileged(rows).map(
        lambda row: {
            "completion": [{"role": "assistant", "content": PRIVILEGED_TEMPLATE.format(answer=row["answer"])}]
        }
    )


def student_data(problems: int = STUDENT_PROBLEMS) -> Dataset:
    """The base student's pre-training rows: cot solutions of `problems` problems, half of them again with the solution
    shown in the prompt answered by quoting it (`quoting`), and its own identity (`OWN_IDENTITY`) as the answer to the
    training identity prompts."""
    cot = make_task_splits(("arithmetic",), problems, 1, 1, seed=200, style="cot", **TASK_KWARGS)["train"]
    identity = identity_rows(OWN_IDENTITY, ice_prompts(0, 2)).map(lambda row: {"answer": "", "task": "identity"})
    return concatenate_datasets([cot, quoting(cot.select(range(len(cot) // 2))), identity]).shuffle(seed=0)


def domain_splits(lab: Lab):
    """The student's arithmetic splits: training prompts (with `cot` reference solutions), dev and test."""
    p = lab.preset
    return make_task_splits(("arithmetic",), p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0, **TASK_KWARGS)


def cast_runs(lab: Lab) -> dict[str, Pretraining]:
    """The cast's pre-training runs: each teacher (by name) and the base student (`"student"`)."""
    p = lab.preset
    runs = {}
    for i, (name, (style, share)) in enumerate(TEACHERS.items()):
        data = make_task_splits(("arithmetic",), 1024, 1, 1, seed=100 + i, style=style, **TASK_KWARGS)["train"]
        runs[name] = Pretraining(f"lab-teacher-{name}", data, max(1, int(p.teacher_steps * share)), p.size)
    runs["student"] = Pretraining("lab-student", student_data(), p.student_steps, p.size, seed=1)
    return runs


def cast_pretraining(lab: Lab) -> list[Pretraining]:
    """The models an experiment on the cast needs pre-trained (`experiments.pretraining`)."""
    return list(cast_runs(lab).values())


def build_cast(lab: Lab, bar=None) -> tuple[dict[str, str], str]:
    """The teachers' paths (by name) and the base student's, each built unless cached; `bar` counts them."""
    runs = cast_runs(lab)
    teachers = {}
    for name in TEACHERS:
        teachers[name] = runs[name].build(lab.tokenizer)
        if bar is not None:
            bar.update(1)
    student = runs["student"].build(lab.tokenizer)
    if bar is not None:
        bar.update(1)
    return teachers, student


def teacher_answers(lab: Lab, teachers: dict[str, str], train: Dataset, bar=None) -> dict[str, list[str]]:
    """Each teacher's greedy answers to the training prompts, the teachers side by side in one-thread worker
    processes (the same greedy answers); `bar` counts them."""

    def answer(name: str) -> list[str]:
        return answers(load(teachers[name]), lab.tokenizer, train, max_new_tokens=lab.preset.max_new_tokens)

    done = None if bar is None else (lambda _: bar.update(1))
    return dict(zip(teachers, parallel_map(answer, list(teachers), lab.workers, on_done=done)))


def candidate_pool(train: Dataset, texts_of: dict[str, list[str]]) -> tuple[Dataset, dict[str, float]]:
    """The long-form candidate pool of the teachers' answers (`texts_of`, by teacher) to the training prompts,
    verified by `task_reward`, and each teacher's accuracy (share of correct answers)."""
    rows, teacher_accuracy = [], {}
    for name, texts in texts_of.items():
        correct = task_reward(completions=texts, answer=train["answer"], task=train["task"])
        teacher_accuracy[name] = sum(c or 0.0 for c in correct) / len(correct)
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
    if not any(row["correct"] for row in rows):
        raise RuntimeError(
            f"No teacher answered any of the {len(train)} training prompts correctly ({teacher_accuracy}); the candidate pool "
            "has nothing to select. Raise the preset's `teacher_steps` (or clear a stale `$TRL_DISTILL_CACHE`)."
        )
    return Dataset.from_list(rows), teacher_accuracy


def cast(lab: Lab, bar=None) -> dict:
    """Builds (or loads from the cache) the teachers and the base student, and the teachers' answers.

    Returns:
        `dict` with `splits`, `student` (path), `teachers` (name -> path), `pool` (long-form candidate pool: one row
        per prompt and teacher with `prompt_id`, `prompt`, `completion`, `teacher`, `correct`, `answer`, `task`),
        `teacher_accuracy` (share of correct answers on the training prompts) and `student_accuracy` (the base
        student's test accuracy).
    """
    if "cast" in lab.shared:
        return lab.shared["cast"]
    splits = domain_splits(lab)
    teachers, student = build_cast(lab, bar)
    pool, teacher_accuracy = candidate_pool(splits["train"], teacher_answers(lab, teachers, splits["train"], bar))
    lab.shared["cast"] = {
        "splits": splits,
        "student": student,
        "teachers": teachers,
        "pool": pool,
        "teacher_accuracy": teacher_accuracy,
        "student_accuracy": accuracy(load(student), lab.tokenizer, splits["test"], lab.preset.max_new_tokens),
    }
    return lab.shared["cast"]


CAST_STEPS = 2 * len(TEACHERS) + 1
