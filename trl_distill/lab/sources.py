"""The tiny world as a source of models, datasets and rewards: the `lab:` names of
[`~trl_distill.core.sources`], registered when a `lab:` name is first resolved.

The packaged toy recipes (`trl-distill recipes`: `scas/toy`, `dmc/toy`, ...) name these sources, so a command runs on
the tiny world the way it runs on a checkpoint and a data file: `trl-distill scas --config scas/toy`, with options
in the name where a test wants it smaller (`--dataset_name "lab:scas_pool?prompts=8"`). `--lab` on the command line
is an alias for the command's toy recipe ([`toy_arguments`]). Models are built (and cached) on first use; every
model comes with the tiny world's byte-level tokenizer.
"""

import functools

from datasets import Dataset

from ..core.sources import register_source
from .world.models import pretrained_model, tiny_model
from .world.tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits, task_reward
from .world.tokenizer import build_tokenizer
from .world.toys import pool_prompts, pool_teacher, toy_candidates, toy_pool, toy_student


OGLS_SD_EVAL_PROMPTS = 16  # a whole pass of rollouts over all 512 prompts takes minutes on CPU


def scas_student(size: str = "s", arch: str = "qwen2", seed: int = 0):
    """A random-init student of `size` (`xs`, `s`, `m`, `l`) for SCAS, seeded by the training seed."""
    tokenizer = build_tokenizer()
    return tiny_model(tokenizer, size, arch, seed=seed), tokenizer


def scas_pool(split: str = "train", prompts: int = 64) -> Dataset:
    """The grouped arithmetic pool of five teachers (one of them half wrong); one split: evaluation reads it too."""
    if prompts < 1:
        raise ValueError(f"lab:scas_pool needs prompts >= 1, got {prompts}.")
    return toy_pool(prompts)


def dmc_student(size: str = "xs", steps: int = 60):
    """The student briefly pre-trained on equation-style arithmetic (cached), so DMC's components are not flat."""
    tokenizer = build_tokenizer()
    model, _ = toy_student(tokenizer, size=size, steps=steps)
    return model, tokenizer


@functools.cache
def _dmc_candidates():
    return toy_candidates()


def dmc_candidate(name: str):
    """The DMC candidate dataset `name` (the same one for any split)."""

    def build(split: str = "train") -> Dataset:
        return _dmc_candidates()[0][name]

    build.__doc__ = f"The `{name}` arithmetic candidate dataset of [`toy_candidates`]."
    return build


def dmc_dev(split: str = "test") -> Dataset:
    """The held-out arithmetic prompts with answers DMC measures capability on."""
    return _dmc_candidates()[1]


def ogls_sd_student(pretrain_steps: int = 150):
    """An `xs` student pre-trained briefly on arithmetic (cached): its path and tokenizer."""
    tokenizer = build_tokenizer()
    splits = make_task_splits(("arithmetic",), 512, 32, 32, seed=0)
    return pretrained_model(tokenizer, "ogls-sd-student", splits["train"], pretrain_steps), tokenizer


def ogls_sd_rows(split: str = "train") -> Dataset:
    """Arithmetic rows whose privileged context is the reference solution; any split other than `train` is the
    first [`OGLS_SD_EVAL_PROMPTS`] of them (the tiny world evaluates on a slice of its training prompts)."""
    rows = make_task_splits(("arithmetic",), 512, 32, 32, seed=0)["train"]
    rows = rows.map(lambda row: {"privileged_context": row["completion"][0]["content"]})
    return rows if split == "train" else rows.select(range(min(OGLS_SD_EVAL_PROMPTS, len(rows))))


def camopd_student(pretrain_steps: int = 150):
    """The student specialised on arithmetic (cached; also CaMOPD's domain teacher, its copy)."""
    tokenizer = build_tokenizer()
    domain = make_task_splits(DOMAIN_TASKS, 512, 32, 32, seed=0)["train"]
    return pretrained_model(tokenizer, "camopd-student", domain, pretrain_steps, seed=0), tokenizer


def camopd_general_teacher(pretrain_steps: int = 150):
    """The general teacher, trained on the string tasks (cached)."""
    tokenizer = build_tokenizer()
    general = make_task_splits(GENERAL_TASKS, 512, 32, 32, seed=0)["train"]
    return pretrained_model(tokenizer, "camopd-general", general, pretrain_steps, seed=1), tokenizer


def camopd_prompts(tasks: tuple[str, ...]):
    def build(split: str = "train") -> Dataset:
        return make_task_splits(tasks, 512, 32, 32, seed=0)["train"]

    build.__doc__ = f"Prompts of the tasks {', '.join(tasks)} (the training ones, for any split)."
    return build


def teacher(style: str = "cot", pretrain_steps: int = 300, seed: int = 0):
    """An `xs` Llama pre-trained on arithmetic written in `style` (`cot`, `terse`, `verbose`, `equation`; cached),
    for the pool builder."""
    tokenizer = build_tokenizer()
    return pool_teacher(tokenizer, style, pretrain_steps, seed=seed), tokenizer


def pool_builder_prompts(split: str = "test", prompts: int = 64) -> Dataset:
    """Held-out arithmetic prompts (`prompt`, `answer`, `task`) for the pool builder."""
    return pool_prompts(prompts)


def task() -> callable:
    """The tiny world's verifier, dispatching on the `task` column."""
    return task_reward


SOURCES = {
    "scas_student": ("model", scas_student),
    "scas_pool": ("dataset", scas_pool),
    "dmc_student": ("model", dmc_student),
    **{f"dmc_{name}": ("dataset", dmc_candidate(name)) for name in ("cot", "terse", "verbose", "noisy_cot")},
    "dmc_dev": ("dataset", dmc_dev),
    "ogls_sd_student": ("model", ogls_sd_student),
    "ogls_sd_rows": ("dataset", ogls_sd_rows),
    "camopd_student": ("model", camopd_student),
    "camopd_general_teacher": ("model", camopd_general_teacher),
    "camopd_general_prompts": ("dataset", camopd_prompts(GENERAL_TASKS)),
    "camopd_domain_prompts": ("dataset", camopd_prompts(DOMAIN_TASKS)),
    "teacher": ("model", teacher),
    "pool_prompts": ("dataset", pool_builder_prompts),
    "task": ("reward", task),
}
for _name, (_kind, _build) in SOURCES.items():
    register_source("lab", _name, _kind, _build, (_build.__doc__ or "").split("\n")[0])


# `trl-distill dmc-rank` has no recipe of its own (its flags are DMC's data arguments and the student)
DMC_RANK_TOY = [
    "--model_name_or_path",
    "lab:dmc_student",
    "--datasets",
    *(f"{name}=lab:dmc_{name}" for name in ("cot", "terse", "verbose", "noisy_cot")),
    "--dev_dataset",
    "lab:dmc_dev",
    "--verifier",
    "lab:task",
]


def toy_arguments(command: str) -> list[str]:
    """What `--lab` stands for in `trl-distill <command>`: the command's packaged toy recipe by name
    (`--config <job>/toy`), or, for `dmc-rank`, the toy world's flags."""
    if command == "dmc-rank":
        return list(DMC_RANK_TOY)
    return ["--config", f"{command.replace('-', '_')}/toy"]
