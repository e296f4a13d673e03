"""CaMOPD's teachers by name (docs/methods.md §4: a general teacher and a domain teacher, or any named set).

The trainer takes one teacher or a dict of named ones (model ids, paths, models or served-teacher URLs), and optionally
a tokenizer per teacher that does not share the student's. Names and arguments are checked here before anything is
loaded; loading and the shared-tokenizer checks are [`~trl_distill.core.teachers.load_teacher`]'s, once per model.
"""

from collections.abc import Mapping

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..core.cross_tokenizer import TeacherTokenizerBridge
from ..core.data import check_local_path
from ..core.parameters import full_shape
from ..core.served_teacher import is_served_teacher
from ..core.teachers import INIT_KWARGS_WITH_INSTANCE, check_tokenizer_fits, load_teacher
from .camopd_config import CaMOPDConfig
from .routing import DEFAULT_NAME


def teacher_specs(teacher_model, args: CaMOPDConfig) -> dict:
    """The teachers by name, as given (paths, models or served-teacher URLs), checked before anything is loaded.

    Args:
        teacher_model (`str`, [`~transformers.PreTrainedModel`], `dict` or `None`):
            One teacher (named `"default"`) or teachers by name; `None` reads `args.teacher_models` or
            `args.teacher_model_name_or_path`.
        args ([`CaMOPDConfig`]): the config (init kwargs per teacher, 4-bit loading).

    Returns:
        `dict`: teacher name → what was given for it.
    """
    if teacher_model is None:
        teacher_model = args.teacher_models or args.teacher_model_name_or_path
    if teacher_model is None:
        raise ValueError(
            "CaMOPDTrainer needs at least one teacher: pass `teacher_model` (a model, a path, or a dict of named "
            "ones) or set `teacher_models` / `teacher_model_name_or_path` in the config."
        )
    if not isinstance(teacher_model, Mapping):
        teacher_model = {DEFAULT_NAME: teacher_model}
    if not teacher_model:
        raise ValueError("`teacher_model` is an empty dict; give at least one named teacher.")
    teacher_model = dict(teacher_model)
    paths = {name: t for name, t in teacher_model.items() if isinstance(t, str) and not is_served_teacher(t)}
    _check_init_kwargs(teacher_model, paths, args)
    for name, path in paths.items():
        check_local_path(path, "teacher" if name == DEFAULT_NAME else f"teacher {name!r}")
    if args.teacher_load_in_4bit and paths and not torch.cuda.is_available():
        raise ValueError(
            f"`teacher_load_in_4bit=True` needs a CUDA device (bitsandbytes 4-bit), but none is visible while "
            f"loading teachers {sorted(paths)}. Unset it on CPU."
        )
    return teacher_model


def _check_init_kwargs(teacher_model: dict, paths: dict, args: CaMOPDConfig) -> None:
    """Init kwargs apply only to teachers loaded from a path: refuses those that would apply to none."""
    per_teacher = args.teachers_init_kwargs or {}
    unknown = sorted(set(per_teacher) - set(teacher_model))
    if unknown:
        raise ValueError(
            f"`teachers_init_kwargs` names teachers {unknown} that were not given; the teachers are "
            f"{sorted(teacher_model)}."
        )
    for name in teacher_model:
        if name not in paths and name in per_teacher and not is_served_teacher(teacher_model[name]):
            raise ValueError(f"`teachers_init_kwargs[{name!r}]` is set but teacher {name!r} is already instantiated.")
    if args.teacher_model_init_kwargs is not None and not paths:
        # as trl.DistillationTrainer: the kwargs would apply to no teacher
        raise ValueError(INIT_KWARGS_WITH_INSTANCE)


def teacher_tokenizer_specs(teacher_tokenizers, args: CaMOPDConfig, specs: dict) -> dict:
    """The teachers with their own tokenizer, by name (`args.teacher_tokenizers` updated by `teacher_tokenizers`),
    checked against the teacher names `specs` (see [`teacher_specs`]) before anything is loaded."""
    tokenizers = {**(args.teacher_tokenizers or {}), **(teacher_tokenizers or {})}
    unknown = sorted(set(tokenizers) - set(specs))
    if unknown:
        raise ValueError(
            f"`teacher_tokenizers` names teachers {unknown} that were not given; the teachers are {sorted(specs)}."
        )
    for name in tokenizers:
        if is_served_teacher(specs[name]):
            raise ValueError(
                f"Teacher {name!r} is served and has its own tokenizer: a served teacher returns top-k ids of its "
                "vocabulary for the student's tokens, which cannot be aligned. Load it locally for cross-tokenizer "
                "distillation, or serve a teacher that shares the student's tokenizer."
            )
    return tokenizers


def load_teachers(specs: dict, args: CaMOPDConfig, tokenizer_specs: dict, student, tokenizer, accelerator) -> dict:
    """Every teacher of `specs` loaded, checked against the student and prepared
    ([`~trl_distill.core.teachers.load_teacher`]); one model serving several names (the same object, or the same path
    and kwargs) is loaded once. Teachers named in `tokenizer_specs` skip the shared-tokenizer checks."""
    per_teacher = args.teachers_init_kwargs or {}
    single = len(specs) == 1
    loaded: dict = {}
    teachers = {}
    for name, spec in specs.items():
        if isinstance(spec, str) and is_served_teacher(spec):  # a URL: the config's top-k
            spec = {"url": spec, "top_k": args.served_teacher_top_k}
        if isinstance(spec, str):
            kwargs = {**(args.teacher_model_init_kwargs or {}), **per_teacher.get(name, {})}
            key = (spec, repr(sorted(kwargs.items())))
        elif is_served_teacher(spec):
            kwargs, key = None, repr(spec)
        else:
            kwargs, key = None, id(spec)
        if name in tokenizer_specs:
            key = ("cross", key)  # loaded without the shared-tokenizer checks
        if key not in loaded:
            loaded[key] = load_teacher(
                spec,
                args,
                name="teacher" if single else name,
                init_kwargs=kwargs,
                revision=args.teacher_model_revision if single else None,
                load_in_4bit=args.teacher_load_in_4bit and isinstance(spec, str),
                student=None if name in tokenizer_specs else student,
                tokenizer=None if name in tokenizer_specs else tokenizer,
                accelerator=accelerator,
            )
        teachers[name] = loaded[key]
    return teachers


def build_bridges(
    tokenizer_specs: dict,
    specs: dict,
    teachers: dict,
    student_tokenizer: PreTrainedTokenizerBase,
    stop_ids,
    accelerator,
    trust_remote_code: bool = False,
) -> dict[str, TeacherTokenizerBridge]:
    """A [`~trl_distill.core.cross_tokenizer.TeacherTokenizerBridge`] per teacher with its own tokenizer (loaded when
    given as a path or `"auto"`: the one saved beside the teacher), checked against the teacher's embedding."""
    bridges = {}
    for name, spec in tokenizer_specs.items():
        tokenizer = spec
        if isinstance(spec, str):
            source = specs[name] if spec == "auto" else spec
            if not isinstance(source, str):
                source = getattr(source.config, "_name_or_path", "") or ""
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"Teacher {name!r}: its tokenizer ({spec!r}) could not be loaded from {source!r} ({error}). "
                    "Pass the tokenizer itself in `teacher_tokenizers`, or save it beside the teacher."
                ) from error
        check_tokenizer_fits(tokenizer, accelerator.unwrap_model(teachers[name]), f"teacher {name!r}")
        bridges[name] = TeacherTokenizerBridge(student_tokenizer, tokenizer, name, stop_ids=stop_ids)
    return bridges


def hidden_size(model) -> int:
    """Width of the final hidden states (the output head's input), whole even when the head is sharded."""
    return int(full_shape(model.get_output_embeddings().weight)[-1])
