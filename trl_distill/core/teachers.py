"""One teacher loader for every trainer that distils from a frozen model, and the checks that a teacher fits.

[`load_teacher`] takes a teacher as a model id, a local path or an instantiated model and returns it loaded (with
`from_pretrained` keyword arguments, optionally in 4-bit), checked against the student (vocabulary size, the
tokenizers themselves when the teacher comes with one, the tokenizer against the embedding) and, given the
accelerator, prepared as TRL prepares its teacher: `trl.models.prepare_deepspeed` under DeepSpeed (ZeRO-3 shards it),
otherwise `accelerator.prepare_model(..., evaluation_mode=True)`. It also makes frozen copies of the student
(`copy=True`), reloading from the student's path under ZeRO-3, where a deep copy would clone empty shards.

The checks are separate functions too ([`~trl_distill.core.data.check_local_path`], [`check_vocab_size`],
[`check_tokenizers_match`], [`check_tokenizer_fits`]) so that a trainer can run them before anything is loaded.
"""

import copy as copy_module
import os
from typing import Any

import torch
from accelerate.logging import get_logger
from transformers import AutoTokenizer, BitsAndBytesConfig, PreTrainedModel
from trl.models import prepare_deepspeed
from trl.trainer.utils import create_model_from_path

from .data import check_local_path
from .parameters import full_shape
from .served_teacher import ServedTeacher, is_served_teacher


logger = get_logger(__name__)

# TRL's own message (trl.DistillationTrainer), kept word for word so that code matching it keeps working
INIT_KWARGS_WITH_INSTANCE = (
    "You passed teacher_model_init_kwargs to the config, but your teacher_model is already instantiated."
)
MAX_LISTED = 5


def vocab_size(model) -> int:
    """Rows of the output projection: the vocabulary the divergence compares (ZeRO-3 keeps the shape in `ds_shape`)."""
    return int(full_shape(model.get_output_embeddings().weight)[0])


def embedding_size(model) -> int:
    """Rows of the input embedding: the largest token id the model can read, plus one."""
    return int(full_shape(model.get_input_embeddings().weight)[0])


def _describe_tokenizer(tokenizer) -> str:
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    return f"{tokenizer.name_or_path or 'unnamed'!r} ({len(tokenizer)} tokens)"


def check_vocab_size(student, teacher, name: str | None = None, tokenizer=None) -> None:
    """Raises, as `trl.DistillationTrainer` does (naming `vocab_size`), when the two output vocabularies differ. The
    error names both models (and the student's tokenizer, when given): a teacher of another model family is the
    usual cause, and the two sizes alone do not say which model is which."""
    student_size, teacher_size = vocab_size(student), vocab_size(teacher)
    if student_size != teacher_size:
        label = "the teacher model" if name is None else f"the teacher model {name!r}"
        if teacher.config.name_or_path:
            label += f" ({teacher.config.name_or_path})"
        student_label = repr(student.config.name_or_path or "unnamed")
        if tokenizer is not None:
            student_label += f" with the tokenizer {_describe_tokenizer(tokenizer)}"
        raise ValueError(
            f"The student model has vocab_size {student_size} but {label} has vocab_size {teacher_size} (the "
            f"student is {student_label}). "
            "Distillation compares the teacher's full next-token distribution, which "
            "requires a shared vocabulary. Use a teacher with the same vocab_size (e.g. `resize_token_embeddings` to "
            "a common size), or GOLD for cross-tokenizer distillation."
        )


def check_tokenizer_fits(tokenizer, model, what: str = "model") -> None:
    """Raises when the tokenizer has more tokens than the model has embedding rows (ids past the end would fail later
    with `IndexError: index out of range in self`)."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
    rows = embedding_size(model)
    if len(tokenizer) > rows:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the {what} ({model.config.name_or_path or ''}) has "
            f"only {rows} embedding rows, so token ids {rows}..{len(tokenizer) - 1} cannot be embedded. Call "
            f"`model.resize_token_embeddings(len(tokenizer))` (and train the new rows), or use the model's own "
            "tokenizer."
        )


def _special_tokens(tokenizer) -> set[str]:
    # The pad *role* is left out (trainers set pad = EOS when it is missing, which changes nothing the loss sees); a
    # pad token that is an added special token is still counted through `added_tokens_decoder`.
    roles = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token} - {None}
    return roles | {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}


def check_tokenizers_match(student_tokenizer, teacher_tokenizer, name: str = "teacher") -> None:
    """Raises when two tokenizers do not map the same ids to the same tokens, or mark different tokens as special.

    The divergence compares the two models' distributions id by id, so an id must mean the same token for both; equal
    vocabulary *sizes* are not enough. The error names the first mismatching ids and tokens.

    Args:
        student_tokenizer: the student's tokenizer (or processor).
        teacher_tokenizer: the teacher's tokenizer (or processor).
        name (`str`, defaults to `"teacher"`): the teacher's name in the error.
    """
    student_tokenizer = getattr(student_tokenizer, "tokenizer", student_tokenizer)
    teacher_tokenizer = getattr(teacher_tokenizer, "tokenizer", teacher_tokenizer)
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    which = (
        f"The student's tokenizer is {_describe_tokenizer(student_tokenizer)}, the teacher's "
        f"{_describe_tokenizer(teacher_tokenizer)}."
    )
    hint = (
        "On-policy distillation compares distributions over the same token ids, so the teacher must use the "
        "student's tokenizer (GOLD handles different tokenizers). To skip this check, pass the teacher as a loaded "
        "model instead of a path."
    )
    if student_vocab != teacher_vocab:
        student_by_id = {i: t for t, i in student_vocab.items()}
        teacher_by_id = {i: t for t, i in teacher_vocab.items()}
        differing = [
            i for i in sorted(set(student_by_id) | set(teacher_by_id)) if student_by_id.get(i) != teacher_by_id.get(i)
        ]
        listed = "; ".join(
            f"id {i}: student {student_by_id.get(i)!r}, teacher {teacher_by_id.get(i)!r}"
            for i in differing[:MAX_LISTED]
        )
        raise ValueError(
            f"The tokenizer of teacher {name!r} differs from the student's: {len(differing)} token ids differ "
            f"(student tokenizer {_describe_tokenizer(student_tokenizer)}, teacher tokenizer "
            f"{_describe_tokenizer(teacher_tokenizer)}), first {listed}. {hint}"
        )
    student_special, teacher_special = _special_tokens(student_tokenizer), _special_tokens(teacher_tokenizer)
    if student_special != teacher_special:
        only_student = sorted(student_special - teacher_special)[:MAX_LISTED]
        only_teacher = sorted(teacher_special - student_special)[:MAX_LISTED]
        raise ValueError(
            f"The tokenizer of teacher {name!r} has the student's vocabulary but different special tokens: special "
            f"only for the student {only_student}, only for the teacher {only_teacher}. {which} {hint}"
        )


def _teacher_tokenizer(path: str, revision: str | None, trust_remote_code: bool, name: str = "teacher"):
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # a model saved without its tokenizer: nothing to compare
        # a warning, not an info line: the same teacher saved with a different tokenizer is refused, so the user
        # must know this one was not compared
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        logger.warning(
            f"Teacher {name!r} ({path!r}) has no loadable tokenizer ({reason}), so the check that "
            "it shares the student's tokenizer (same token ids, same special tokens) was skipped; only its vocab_size "
            "is compared. Save the tokenizer the teacher was trained with next to it (`tokenizer.save_pretrained("
            f"{path!r})`) to have it checked."
        )
        return None


def check_teacher_tokenizer(tokenizer, teacher, name: str = "teacher") -> None:
    """For a loaded teacher: raises when the tokenizer saved beside its weights (its `name_or_path`, when that is a
    local directory) differs from `tokenizer` (see [`check_tokenizers_match`]), or when `tokenizer` does not fit its
    embedding. Vocabulary sizes alone cannot tell a padded embedding (same tokenizer) from another model family's, so
    without a saved tokenizer only the fit is checked, with a warning naming the teacher."""
    path = getattr(getattr(teacher, "config", None), "_name_or_path", "") or ""
    if path and os.path.isdir(path):
        teacher_tokenizer = _teacher_tokenizer(path, None, False, name)
        if teacher_tokenizer is not None:
            check_tokenizers_match(tokenizer, teacher_tokenizer, name)
    check_tokenizer_fits(tokenizer, teacher, f"teacher {name!r}")


def _is_zero3(args) -> bool:
    plugin = getattr(args, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def four_bit_config() -> BitsAndBytesConfig:
    """The 4-bit quantization config of teachers loaded with `load_in_4bit=True`: NF4 weights, bf16 compute."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def teacher_init_kwargs(
    args,
    init_kwargs: dict[str, Any] | None = None,
    revision: str | None = None,
    load_in_4bit: bool = False,
    name="teacher",
) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments of a teacher loaded from a path, as `trl.DistillationTrainer` builds
    them (revision, `device_map=None` when distributed, `trust_remote_code`), plus the 4-bit config when asked."""
    kwargs = dict(init_kwargs or {})
    if revision is not None:
        kwargs.setdefault("revision", revision)
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        kwargs["device_map"] = None  # "auto" fails in distributed training
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise ValueError(
                f"Loading teacher {name!r} in 4-bit (`teacher_load_in_4bit=True`) needs a CUDA device (bitsandbytes), "
                "but none is visible. Unset it on CPU."
            )
        if "quantization_config" in kwargs:
            raise ValueError(
                f"Teacher {name!r} has a `quantization_config` in its init kwargs and `teacher_load_in_4bit=True`; "
                "set only one."
            )
        kwargs["quantization_config"] = four_bit_config()
        kwargs.setdefault("device_map", {"": args.distributed_state.local_process_index})
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return kwargs


def load_teacher(
    teacher: "str | PreTrainedModel",
    args,
    *,
    name: str = "teacher",
    init_kwargs: dict[str, Any] | None = None,
    revision: str | None = None,
    load_in_4bit: bool = False,
    copy: bool = False,
    student: PreTrainedModel | None = None,
    tokenizer=None,
    accelerator=None,
) -> PreTrainedModel:
    """Loads, checks and prepares one frozen teacher.

    Args:
        teacher (`str`, [`~transformers.PreTrainedModel`] or [`~trl_distill.core.served_teacher.ServedTeacher`]): a
            model id or local path, an instantiated model, or a served teacher (its URL, a mapping of its arguments,
            or itself), which is returned as a [`ServedTeacher`] checked against `tokenizer` and `student`'s
            vocabulary (nothing is loaded or prepared).
        args ([`~transformers.TrainingArguments`]): the trainer's arguments (distributed state, `trust_remote_code`,
            DeepSpeed plugin).
        name (`str`, defaults to `"teacher"`): how errors and logs name this teacher.
        init_kwargs (`dict`, *optional*): `from_pretrained` keyword arguments for a path teacher. Given with an
            instantiated teacher, it raises as `trl.DistillationTrainer` does (they would be silently ignored).
        revision (`str`, *optional*): revision of a path teacher (unless `init_kwargs` sets one).
        load_in_4bit (`bool`, defaults to `False`): load a path teacher in 4-bit NF4 (CUDA and bitsandbytes).
        copy (`bool`, defaults to `False`): return a frozen *copy* of an instantiated model (e.g. the student) instead
            of the model itself. Under DeepSpeed ZeRO-3 the copy is loaded again from the model's `name_or_path`
            (with `init_kwargs`, default: the model's dtype), since a deep copy would clone empty shards.
        student ([`~transformers.PreTrainedModel`], *optional*): when given, the teacher's vocab_size must equal it.
        tokenizer (*optional*): the student's tokenizer; when given it must fit the teacher's embedding and, for a path
            teacher saved with a tokenizer, equal that tokenizer (vocabulary and special tokens). A path teacher saved
            without a loadable tokenizer is not compared, with a warning naming it.
        accelerator (`accelerate.Accelerator`, *optional*): when given, the teacher is prepared for inference
            (`prepare_deepspeed` under DeepSpeed, otherwise `prepare_model(..., evaluation_mode=True)`).

    Raises:
        `FileNotFoundError` for a local-looking path that does not exist, `OSError` for a path that is neither a local
        model nor a loadable Hub id, and `ValueError` for init kwargs given with an instantiated teacher, a vocab_size
        different from the student's, a tokenizer larger than the teacher's embedding, or a teacher tokenizer that
        maps ids to other tokens or marks other tokens special.

    Returns:
        [`~transformers.PreTrainedModel`]: the teacher in eval mode (wrapped when `accelerator` is given).
    """
    if is_served_teacher(teacher):
        return _checked_served_teacher(teacher, student, tokenizer, name)
    teacher = _teacher_model(teacher, args, name, init_kwargs, revision, load_in_4bit, copy, tokenizer)
    teacher.eval()
    if student is not None:
        check_vocab_size(student, teacher, None if name == "teacher" else name, tokenizer)
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, teacher, f"teacher {name!r}")
    if accelerator is not None:
        teacher = prepare_teacher(teacher, accelerator)
    return teacher


def _checked_served_teacher(spec, student, tokenizer, name: str) -> ServedTeacher:
    """A [`ServedTeacher`] from its spec, checked against `tokenizer` and `student`'s vocabulary; nothing is loaded."""
    served = ServedTeacher.from_spec(spec)
    if tokenizer is not None:
        served.check_tokenizer(tokenizer, None if student is None else vocab_size(student), name)
    return served


def _teacher_model(teacher, args, name: str, init_kwargs, revision, load_in_4bit: bool, copy: bool, tokenizer):
    """[`load_teacher`]'s loading step: a path teacher loaded (frozen), an instance as it is, or its frozen `copy`."""
    if not isinstance(teacher, str) and copy:
        teacher, init_kwargs = _frozen_copy(teacher, args, name, init_kwargs)
    if isinstance(teacher, str):
        return _load_path_teacher(teacher, args, name, init_kwargs, revision, load_in_4bit, tokenizer)
    if init_kwargs is not None:
        raise ValueError(f"{INIT_KWARGS_WITH_INSTANCE} (teacher {name!r}: pass it as a path, or drop the kwargs.)")
    return teacher


def _frozen_copy(model: PreTrainedModel, args, name: str, init_kwargs: dict | None):
    """`(teacher, init_kwargs)` for a frozen copy of `model`: a deep copy, or under ZeRO-3 (whose shards a deep copy
    would clone empty) the model's path with its dtype, for [`load_teacher`] to load again."""
    if not _is_zero3(args):
        return copy_module.deepcopy(model).requires_grad_(False), init_kwargs
    source = model.config.name_or_path
    if not source:
        raise ValueError(
            f"With DeepSpeed ZeRO-3 the frozen copy {name!r} is loaded again from the model's path, but the "
            "model has no `name_or_path`. Pass the model as a path or hub id."
        )
    if init_kwargs is None:
        init_kwargs = {"dtype": str(model.dtype).removeprefix("torch.")}
    return source, init_kwargs


def _load_path_teacher(path: str, args, name: str, init_kwargs, revision, load_in_4bit: bool, tokenizer):
    """A teacher from a model id or local path, frozen; its saved tokenizer is checked against `tokenizer` first."""
    check_local_path(path, f"teacher {name!r}")
    kwargs = teacher_init_kwargs(args, init_kwargs, revision, load_in_4bit, name)
    if tokenizer is not None:
        # before the weights load, and before the vocab_size check: a teacher of another tokenizer (e.g. Gemma-3
        # for a SmolLM2 student) fails at once with an error naming both tokenizers, not only two sizes
        teacher_tokenizer = _teacher_tokenizer(path, kwargs.get("revision"), kwargs["trust_remote_code"], name)
        if teacher_tokenizer is not None:
            check_tokenizers_match(tokenizer, teacher_tokenizer, name)
    try:
        teacher = create_model_from_path(path, **kwargs)
    except OSError as error:
        if os.path.exists(path):
            raise
        raise OSError(
            f"Teacher {name!r}: {path!r} is not a local path and could not be loaded as a Hub id ({error})."
        ) from error
    return teacher.requires_grad_(False)  # loaded here, so nothing else trains it


def prepare_teacher(teacher: PreTrainedModel, accelerator) -> torch.nn.Module:
    """Wraps a loaded teacher for inference as `trl.DistillationTrainer` does: `prepare_deepspeed` under DeepSpeed
    (sharded under ZeRO-3), otherwise `accelerator.prepare_model(..., evaluation_mode=True)`."""
    if accelerator.state.deepspeed_plugin is not None:
        return prepare_deepspeed(teacher, accelerator)
    return accelerator.prepare_model(teacher, evaluation_mode=True)
