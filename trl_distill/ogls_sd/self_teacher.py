"""The self-teacher of OGLS-SD (docs/methods.md §3): which weights it has and what it is shown.

The teacher is the student's own model: its frozen initial weights by default (a copy, or a PEFT student's base with
the adapter disabled), an exponential moving average of the student (`teacher_model_kind="ema"`) or the student itself
(`"live"`). It reads the completion after the anchor prompt: the student's prompt alone (v2) or the prompt with the
privileged context, e.g. a reference solution (OPSD, [`teacher_prompt`]).
"""

from collections.abc import Callable

from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from trl import SyncRefModelCallback

from ..core.divergence import LMHead
from ..core.teachers import load_teacher
from ..core.verifiers import completion_text
from .ogls_sd_config import DEFAULT_TEACHER_PROMPT_TEMPLATE, OGLSSDConfig


PRIVILEGED_COLUMN = "privileged_context"


def _privileged_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a list of messages, e.g. the reference completion of a conversational dataset
        return completion_text(value)
    if value is None:
        raise ValueError(
            f"A `{PRIVILEGED_COLUMN}` value is None; the teacher would be shown the text 'None'. Fill it (e.g. with "
            "the reference solution) or drop the row."
        )
    return str(value)


def teacher_prompt(prompt, privileged_context, template: str = DEFAULT_TEACHER_PROMPT_TEMPLATE):
    """The privileged teacher's prompt: `template` around the prompt (its last user message) and the context.

    Args:
        prompt (`str` or `list[dict]`): the student's prompt, text or messages ending with a user message.
        privileged_context (`str` or `list[dict]`): what only the teacher sees, e.g. a reference solution.
        template (`str`): a format string with `{prompt}` and `{privileged_context}`.
    """
    context = _privileged_text(privileged_context)
    if isinstance(prompt, list):
        last = prompt[-1]
        if last.get("role") != "user":
            raise ValueError(
                f"Conversational prompts must end with a user message to build the teacher prompt; the last "
                f"message has role {last.get('role')!r}."
            )
        text = completion_text([last])
        return prompt[:-1] + [{**last, "content": template.format(prompt=text, privileged_context=context)}]
    return template.format(prompt=prompt, privileged_context=context)


def privileged_teacher_prompts(prompts: list, inputs: list[dict], compose: Callable = teacher_prompt) -> list:
    """The privileged anchor's prompts: `compose(prompt, privileged_context)` ([`teacher_prompt`]) of each prompt
    and its batch row's `privileged_context`."""
    if any(PRIVILEGED_COLUMN not in row for row in inputs):
        raise ValueError(
            f"A batch row has no `{PRIVILEGED_COLUMN}` field; the teacher prompt needs it. Keep the column in "
            "the dataset (and remove_unused_columns=False)."
        )
    return [compose(p, row[PRIVILEGED_COLUMN]) for p, row in zip(prompts, inputs)]


def frozen_teacher(model, args: OGLSSDConfig, peft_config=None):
    """The self-teacher's own copy of the weights, or `None` where none is needed: a PEFT student's initial weights
    are its base (adapter disabled), and a live teacher is the student itself.

    The copy goes through the one teacher loader: deep-copied, or under ZeRO-3 loaded again from the student's path (a
    deep copy would clone empty shards), with the student's init kwargs.
    """
    kind = args.teacher_model_kind
    peft_student = peft_config is not None or (not isinstance(model, str) and is_peft_model(model))
    if kind == "ema" and peft_student:
        raise ValueError(
            "teacher_model_kind='ema' is not supported for a PEFT student: an EMA of the adapter needs a second "
            "adapter. Use teacher_model_kind='initial' (the base model, adapter disabled) or 'live'."
        )
    if kind not in ("initial", "ema") or peft_student:
        return None
    init_kwargs = args.teacher_model_init_kwargs
    if isinstance(model, str) and init_kwargs is None:
        init_kwargs = dict(args.model_init_kwargs or {})
    teacher_model = load_teacher(model, args, name="initial teacher", init_kwargs=init_kwargs, copy=True)
    args.teacher_model_init_kwargs = None  # loaded here; DistillationTrainer prepares the instance
    return teacher_model


class EMATeacherCallback(TrainerCallback):
    """Moves the frozen teacher copy towards the student after every optimizer step: `θ_T ← (1 − r)·θ_T + r·θ_S`."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        student = accelerator.unwrap_model(self.trainer.model)
        teacher = accelerator.unwrap_model(self.trainer.teacher_model)
        SyncRefModelCallback.sync_target_model(student, teacher, args.teacher_update_rate)


def constant_head(model) -> LMHead:
    """The teacher's [`LMHead`] as constants: a live teacher shares the student's head, which must get no gradient
    through the teacher side. A frozen head stays the parameter itself, so DeepSpeed ZeRO-3 can still gather it (a
    detached shard is empty)."""
    head = LMHead.of(model)
    if head.weight.requires_grad:
        head.weight = head.weight.detach()
    if head.bias is not None and head.bias.requires_grad:
        head.bias = head.bias.detach()
    return head
