"""Configuration of OGLS-SD: on-policy self-distillation with outcome-guided logit steering."""

import math
from dataclasses import dataclass, field

from trl import DistillationConfig


TEACHER_MODEL_KINDS = ("initial", "ema", "live")
STEERING_MODES = ("pooled", "contextual")



DEFAULT_TEACHER_PROMPT_TEMPLATE = "{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"

@dataclass
class OGLSSDConfig(DistillationConfig):
    r"""
    Configuration class for the [`OGLSSDTrainer`].

    Extends [`~trl.DistillationConfig`] (generation, vLLM, generalized JSD, logging) with the parameters of OPSD's
    privileged self-teacher and of OGLS-SD's outcome-guided steering (METHODS.md §3). With `steering_alpha=0.0` the
    trainer is exactly OPSD.

    Parameters:
        > Parameters that control the rollouts and their outcomes

        num_generations (`int`, *optional*, defaults to `4`):
            Rollouts sampled per prompt (the group `G` whose successes and failures are contrasted). The per-device
            generation batch, `per_device_train_batch_size × gradient_accumulation_steps`, must be a multiple of it,
            so that every process holds whole groups.
        success_threshold (`float`, *optional*, defaults to `1.0`):
            A rollout succeeds when its (weighted) reward is at or above this value; binary verifiers return `1.0` for
            a correct answer.
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions, summed into one reward per rollout. `None` weighs each function `1.0`.

        > Parameters that control the privileged teacher

        teacher_model_kind (`str`, *optional*, defaults to `"initial"`):
            Which weights the self-teacher uses: `"initial"` (a frozen copy of the initial student; for a PEFT student,
            the base model with the adapter disabled, no second copy), `"ema"` (an exponential moving average of the
            student, updated after every optimizer step) or `"live"` (the current student itself).
        teacher_update_rate (`float`, *optional*, defaults to `0.05`):
            EMA rate `r` of `teacher_model_kind="ema"`: `θ_T ← (1 − r)·θ_T + r·θ_S` after each optimizer step.
        teacher_prompt_template (`str`, *optional*, defaults to `"{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"`):
            How the teacher prompt is built from the student prompt (for a conversation, the text of its last user
            message) and the row's `privileged_context`. Must contain both placeholders.

        > Parameters that control the steering

        steering (`str`, *optional*, defaults to `"pooled"`):
            `"pooled"`: one direction per prompt, the mean teacher features over successful rollouts minus those over
            failed ones. `"contextual"`: a direction per token, contrasting the teacher conditioned on successful
            versus failed rollouts of the group as its context (costs `num_generations` extra teacher forwards per
            rollout of a mixed group).
        steering_alpha (`float`, *optional*, defaults to `1.0`):
            Strength `α` of the steered teacher `z̃ = z_T + α·d`. `0.0` is exactly OPSD.
        normalize_direction (`bool`, *optional*, defaults to `False`):
            Rescale each prompt's direction to unit Euclidean norm in logit space, so `α` is measured in logits.

        > Parameters that control the loss

        beta (`float`, *optional*, defaults to `0.5`):
            Generalized JSD coefficient: `0.0` forward KL(teacher ‖ student), `1.0` reverse KL, `0.5` the symmetric JSD
            of OPSD.

    > [!NOTE]
    > Defaults that differ from [`~trl.DistillationConfig`]: `beta` is `0.5` (OPSD) instead of `1.0`.
    """

    num_generations: int = field(
        default=4, metadata={"help": "Rollouts sampled per prompt (the group whose outcomes are contrasted)."}
    )
    success_threshold: float = field(
        default=1.0, metadata={"help": "A rollout succeeds when its weighted reward is at or above this value."}
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of the reward functions; None weighs each 1.0."}
    )
    teacher_model_kind: str = field(
        default="initial",
        metadata={"help": "Self-teacher weights: 'initial' (frozen copy / adapter disabled), 'ema' or 'live'."},
    )
    teacher_update_rate: float = field(
        default=0.05, metadata={"help": "EMA rate of teacher_model_kind='ema', applied after each optimizer step."}
    )
    teacher_prompt_template: str = field(
        default=DEFAULT_TEACHER_PROMPT_TEMPLATE,
        metadata={"help": "Teacher prompt built from {prompt} and the row's {privileged_context}."},
    )
    steering: str = field(default="pooled", metadata={"help": "Steering direction: 'pooled' or 'contextual'."})
    steering_alpha: float = field(default=1.0, metadata={"help": "Steering strength alpha; 0.0 is exactly OPSD."})
    normalize_direction: bool = field(
        default=False, metadata={"help": "Rescale each prompt's direction to unit norm in logit space."}
    )
    beta: float = field(
        default=0.5,
        metadata={"help": "Generalized JSD coefficient: 0.0 forward KL, 0.5 JSD (OPSD), 1.0 reverse KL."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 to contrast successful and failed rollouts, got "
                f"{self.num_generations}."
            )
        generation_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if generation_batch % self.num_generations != 0:
            raise ValueError(
                f"per_device_train_batch_size × gradient_accumulation_steps = {generation_batch} is not a multiple of "
                f"num_generations={self.num_generations}; each process must hold whole prompt groups. Change the batch "
                "size, the accumulation steps or num_generations."
            )
        if self.teacher_model_kind not in TEACHER_MODEL_KINDS:
            raise ValueError(
                f"teacher_model_kind must be one of {TEACHER_MODEL_KINDS}, got {self.teacher_model_kind!r}."
            )
        if not 0.0 < self.teacher_update_rate <= 1.0:
            raise ValueError(f"teacher_update_rate must lie in (0, 1], got {self.teacher_update_rate}.")
        missing = [p for p in ("{prompt}", "{privileged_context}") if p not in self.teacher_prompt_template]
        if missing:
            raise ValueError(
                f"teacher_prompt_template must contain {' and '.join(missing)}; got {self.teacher_prompt_template!r}."
            )
        if self.steering not in STEERING_MODES:
            raise ValueError(f"steering must be one of {STEERING_MODES}, got {self.steering!r}.")
        if not math.isfinite(self.steering_alpha):
            raise ValueError(f"steering_alpha must be a finite number, got {self.steering_alpha}.")
        if not math.isfinite(self.success_threshold):
            raise ValueError(f"success_threshold must be a finite number, got {self.success_threshold}.")
        if self.reward_weights is not None and not all(math.isfinite(w) for w in self.reward_weights):
            raise ValueError(f"reward_weights must be finite numbers, got {self.reward_weights}.")
