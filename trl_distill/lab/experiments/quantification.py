"""Experiment 5, quantification: token diagnostics and automatic RSE of students against their teachers, and an ICE
toy in which teachers carry distinct identities in their answers and students inherit them."""

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from ...evaluation.diagnostics import token_diagnostics
from ...evaluation.ice import ice
from ...evaluation.judges import AutomaticJudge, IdentityClaimJudge
from ...evaluation.rse import rse
from ..world.models import Pretraining
from .common import Lab, Phase, answers, each_seed, fit, load, trainer_settings
from .teachers import CAST_STEPS, OWN_IDENTITY, STUDENT_IDENTITY, cast, cast_runs, ice_prompts, identity_rows
from .verdicts import combined_verdict, compare, gated, precondition, summary


CLAIM = (
    "Distillation leaves measurable traces: students inherit their teachers' identity claims (ICE Strict above a "
    "control distilled from a teacher with the student's own identity); the precondition is that RSE and token KL "
    "trace each student to the teacher it was distilled from."
)
SOURCE = "SFT on best teacher"  # the student whose closest teacher the notes name
DOMINANT_SHARE = 0.5  # a student has one training teacher when that teacher gave at least this share of its answers
# name -> the identity sentence its answers carry
IDENTITY_TEACHERS = {
    "Qwen-like teacher": "I am Qwen, made by Alibaba Cloud.",
    "Claude-like teacher": "I am Claude, made by Anthropic.",
    "control (own identity)": OWN_IDENTITY,
}


def similarity(lab: Lab, world: dict, bar) -> dict:
    """RSE (automatic judge) and token diagnostics of every kept student against every teacher."""
    p, tok = lab.preset, lab.tokenizer
    test = world["splits"]["test"]
    prompts = test["prompt"]
    teachers = {name: load(path) for name, path in world["teachers"].items()}
    students = {"base student": load(world["student"]), **lab.shared.get("students", {})}
    teacher_texts = {name: answers(model, tok, test, p.max_new_tokens) for name, model in teachers.items()}
    judge = AutomaticJudge()
    table = {}
    for student_name, student in students.items():
        texts = answers(student, tok, test, p.max_new_tokens)
        row = {}
        for teacher_name, teacher in teachers.items():
            similar = rse({"arithmetic": prompts}, responses={"arithmetic": texts},
                          references={"arithmetic": teacher_texts[teacher_name]}, judge=judge)  # fmt: skip
            diagnostics = token_diagnostics(student, teacher, tok, teacher_texts[teacher_name], prompts=prompts)
            row[teacher_name] = {
                "rse": similar.rse,
                "forward_kl": diagnostics["forward_kl"],
                "top1_agreement": diagnostics["top1_agreement"],
            }
        table[student_name] = row
        bar.update(1)
    return table


def identity_runs(lab: Lab) -> dict[str, Pretraining]:
    """The identity teachers' pre-training runs: each is the base student taught to claim another identity (the
    control: its own)."""
    p, train_prompts, student = lab.preset, ice_prompts(0, 2), cast_runs(lab)["student"].path
    return {
        name: Pretraining(
            f"lab-identity-{k}",
            identity_rows(sentence, train_prompts),
            p.identity_steps * 3 // 2,
            p.size,
            seed=10 + k,
            start=student,
        )  # fmt: skip
        for k, (name, sentence) in enumerate(IDENTITY_TEACHERS.items())
    }


def identity_toy(lab: Lab, bar) -> dict:
    """ICE Strict of students distilled from identity-carrying teachers, and of a control student."""
    p, tok = lab.preset, lab.tokenizer
    train_prompts, test_prompts = ice_prompts(0, 2), ice_prompts(1, 3)
    runs = identity_runs(lab)
    strict = {name: [] for name in IDENTITY_TEACHERS}
    loose = {name: [] for name in IDENTITY_TEACHERS}
    distill = {}
    for name, sentence in IDENTITY_TEACHERS.items():
        rows = identity_rows(sentence, train_prompts)
        # the student is distilled on what the teacher *says*, not on the sentence itself
        said = answers(load(runs[name].build(tok)), tok, rows, max_new_tokens=p.max_new_tokens)
        distill[name] = Dataset.from_list(
            [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": s}]} for r, s in zip(rows, said)]
        )

    def student(run: tuple[str, int]):
        """ICE of one student distilled from one identity teacher (in a worker process)."""
        name, seed = run
        args = SFTConfig(**trainer_settings(lab, seed, max_steps=p.identity_steps, learning_rate=3e-3, max_length=256))
        trainer = SFTTrainer(
            load(lab.shared["cast"]["student"]), args=args, train_dataset=distill[name], processing_class=tok
        )
        fit(trainer)
        return ice(
            STUDENT_IDENTITY, model=trainer.model, tokenizer=tok, prompts=test_prompts, judge=IdentityClaimJudge(),
            max_new_tokens=48, batch_size=64, show_progress=False,
        )  # fmt: skip

    for name, result in each_seed(lab, student, IDENTITY_TEACHERS, bar):
        strict[name].append(result.strict)
        loose[name].append(result.loose)
    base = ice(
        STUDENT_IDENTITY, model=load(lab.shared["cast"]["student"]), tokenizer=tok, prompts=test_prompts,
        judge=IdentityClaimJudge(), max_new_tokens=48, batch_size=64, show_progress=False,
    )  # fmt: skip
    return {
        "base_student": base.strict,
        "strict": {n: summary(v) for n, v in strict.items()},
        "loose": {n: summary(v) for n, v in loose.items()},
        "num_prompts": len(test_prompts),
    }


def trace_students(lab: Lab, table: dict) -> dict:
    """Each SCAS-experiment student with one dominant training teacher (the one that gave at least `DOMINANT_SHARE`
    of its answers), and the teachers closest to it by RSE and by token KL in `table` ([`similarity`])."""
    training_teacher = {
        student: max(shares, key=shares.get)
        for student, shares in lab.shared.get("student_teacher_shares", {}).items()
        if student in table and shares and max(shares.values()) >= DOMINANT_SHARE
    }
    return {
        student: {
            "teacher": teacher,
            "closest_by_rse": max(table[student], key=lambda t: table[student][t]["rse"]),
            "closest_by_kl": min(table[student], key=lambda t: table[student][t]["forward_kl"]),
        }
        for student, teacher in training_teacher.items()
    }


def tracing_precondition(world: dict, table: dict, traced: dict) -> dict:
    """Similarity traces distillation here: every traced student is closest (RSE and token KL) to its teacher."""
    base_row = table.get("base student")
    base_closest = max(base_row, key=lambda t: base_row[t]["rse"]) if base_row else None
    hits = [t["closest_by_rse"] == t["teacher"] == t["closest_by_kl"] for t in traced.values()]
    return precondition(
        "share of students closest (RSE and token KL) to their training teacher",
        sum(hits) / len(hits) if hits else 0.0,
        f"= 1 (all {len(hits)} students)" if hits else "= 1 (no student to trace: run the scas experiment first)",
        bool(hits) and all(hits),
        "The SCAS experiment's seed-0 students whose training answers came mostly (≥ "
        f"{DOMINANT_SHARE:.0%}) from one teacher, against every teacher on {len(world['splits']['test'])} test "
        "prompts: the highest automatic RSE and the lowest token KL(teacher ‖ student) must both name the teacher "
        "it was distilled from, or similarity cannot trace distillation here.",
        detail="; ".join(
            f"{s}: trained on {t['teacher']}, closest by RSE {t['closest_by_rse']}, by KL {t['closest_by_kl']}"
            for s, t in traced.items()
        )
        + (f"; the untrained base student is closest by RSE to {base_closest} already" if base_closest else ""),
    )


def quantification_notes(world: dict, table: dict, identified: bool | None, identity: dict) -> list[str]:
    """The report's notes: the RSE of the best teacher's student, and every ICE Strict score."""
    best = max(world["teacher_accuracy"], key=world["teacher_accuracy"].get)
    return [
        f"RSE (automatic judge: ROUGE-L + chrF mapped to 1–5, ranks models but is not comparable to LLM-judge scores) "
        f"of the student trained on the best teacher ({best}): "
        + (", ".join(f"{t} {v['rse']:.2f}" for t, v in table[SOURCE].items()) if SOURCE in table else "not run")
        + (
            f"; its closest teacher is {'the' if identified else 'not the'} best teacher."
            if identified is not None
            else "."
        ),
        "ICE Strict (share of answers claiming another named model) on "
        f"{identity['num_prompts']} held-out identity prompts: "
        + ", ".join(f"{n} {s['mean']:.2f} ± {s['std']:.2f}" for n, s in identity["strict"].items())
        + ".",
    ]


def run(lab: Lab, timings: dict) -> dict:
    """The experiment: similarity of every kept student to every teacher (the precondition), then the ICE toy."""
    p = lab.preset
    with Phase("Quantification: teachers", CAST_STEPS, timings) as bar:
        world = cast(lab, bar)
        bar.update(CAST_STEPS - bar.n)
    with Phase("Quantification: RSE and token diagnostics", 1 + len(lab.shared.get("students", {})), timings) as bar:
        table = similarity(lab, world, bar)
    with Phase("Quantification: ICE identity toy", len(IDENTITY_TEACHERS) * len(p.seeds), timings) as bar:
        identity = identity_toy(lab, bar)
    traced = trace_students(lab, table)
    identified = traced[SOURCE]["closest_by_rse"] == traced[SOURCE]["teacher"] if SOURCE in traced else None
    preconditions = [tracing_precondition(world, table, traced)]
    control = identity["strict"]["control (own identity)"]
    comparisons = [
        {"method": name, "baseline": "control (own identity)", **compare(identity["strict"][name], control)}
        for name in IDENTITY_TEACHERS
        if not name.startswith("control")
    ]
    verdict = combined_verdict([c["verdict"] for c in comparisons])
    return {
        "title": "Quantification: RSE, token diagnostics and ICE",
        "claim": CLAIM,
        "metric": "ICE Strict (higher = more identity inherited)",
        "methods": identity["strict"],
        "comparisons": comparisons,
        "verdict": gated(verdict, preconditions),
        "preconditions": preconditions,
        "base_student": identity["base_student"],
        "similarity": table,
        "similarity_seed": lab.preset.seeds[0],
        "traced": traced,
        "source_identified": identified,
        "ice": identity,
        "notes": quantification_notes(world, table, identified, identity),
    }


def pretraining(lab: Lab) -> list:
    """The models this experiment needs pre-trained: the cast's (its teachers and students) and the identity
    teachers."""
    return [*cast_runs(lab).values(), *identity_runs(lab).values()]
