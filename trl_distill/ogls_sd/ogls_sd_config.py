"""Configuration of OGLS-SD: on-policy self-distillation with outcome-guided logit steering."""

import math
from dataclasses import dataclass, field

from trl import DistillationConfig


TEACHER_MODEL_KINDS = ("initial", "ema", "live")
STEERING_MODES = ("pooled", "contextual")
STEERING_ANCHORS = ("unprivileged", "privileged")
STEER_ROLLOUTS = ("incorrect", "all")
JSD_CLIP_SCOPES = ("token", "vocabulary")

# OPSD's teacher template (arXiv 2601.18734): the prompt, then the reference solution.
DEFAULT_TEACHER_PROMPT_TEMPLATE = "{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"
# The paper's transition sentence (OPSD v1, its Fig. 2): the mild guard.
OPSD_PAPER_TEACHER_PROMPT_TEMPLATE = (
    DEFAULT_TEACHER_PROMPT_TEMPLATE
    + "\n\nAfter understanding the reference solution, please try to solve this problem using your own approach below:"
)
# The hardened guard sentence of OPSD's released code (after 2026-03-18, its `data_collator.py`, read from a
# third-party transcription: medium confidence on the exact wording): do not copy or paraphrase the reference.
OPSD_GUARD_TEACHER_PROMPT_TEMPLATE = (
    DEFAULT_TEACHER_PROMPT_TEMPLATE
    + "\n\nAfter reading the reference solution above, make sure you truly understand the reasoning behind each step "
    "— do not copy or paraphrase it. Now, using your own words and independent reasoning, derive the same final "
    "answer to the problem above. Think step by step, explore different approaches, and don't be afraid to "
    "backtrack or reconsider if something doesn't work out:"
)

# The fields that make an OGLSSDConfig plain OPSD (arXiv 2601.18734, as docs/methods.md §3 states its loss): the
# privileged teacher, no steering, every rollout distribution-matched over its whole length with the unclipped
# symmetric JSD, no SFT term. `OGLSSDConfig.opsd(...)` applies them.
OPSD_SETTINGS = {
    "steering_anchor": "privileged",
    "steering": "pooled",
    "steering_alpha": 0.0,
    "steer_rollouts": "all",
    "positive_tail_weight": 0.0,
    "max_distill_tokens": None,
    "jsd_token_clip": None,
    "beta": 0.5,
}


@dataclass
class OGLSSDConfig(DistillationConfig):
    r"""
    Configuration class for the [`OGLSSDTrainer`].

    Extends [`~trl.DistillationConfig`] (generation, vLLM, generalized JSD, logging) with the parameters of OPSD's
    self-teacher and of OGLS-SD's outcome-guided steering (docs/methods.md §3). The defaults are the form the v2 paper
    describes (arXiv 2605.12400v2, read from third-party notes on its source: medium confidence): a contextual
    direction added to the **unprivileged** teacher (the frozen model shown the prompt alone), applied to the rollouts
    the verifier did not accept, a clipped forward KL on their first 1,024 tokens, and a positive-tail SFT term on
    short correct rollouts. Plain OPSD is [`OGLSSDConfig.opsd`]. With the unprivileged anchor, `steering_alpha=0` is
    **not** OPSD: it distils towards the initial model shown the prompt alone.

    Parameters:
        > Parameters that control the rollouts and their outcomes

        num_generations (`int`, *optional*, defaults to `4`):
            Rollouts sampled per prompt (the group `G` whose successes and failures are contrasted). The per-device
            generation batch, `per_device_train_batch_size × gradient_accumulation_steps`, must be a multiple of it,
            so that every process holds whole groups.
        correct_threshold (`float`, *optional*, defaults to `1.0`):
            A rollout succeeds (is *correct*) when its (weighted) reward is at or above this value; binary verifiers
            return `1.0` for a correct answer. The same name as the pool builder's and DMC's threshold.
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions, summed into one reward per rollout. `None` weighs each function `1.0`.

        > Parameters that control the teacher

        teacher_model_kind (`str`, *optional*, defaults to `"initial"`):
            Which weights the self-teacher uses: `"initial"` (a frozen copy of the initial student; for a PEFT student,
            the base model with the adapter disabled, no second copy), `"ema"` (an exponential moving average of the
            student, updated after every optimizer step) or `"live"` (the current student itself).
        teacher_update_rate (`float`, *optional*, defaults to `0.05`):
            EMA rate `r` of `teacher_model_kind="ema"`: `θ_T ← (1 − r)·θ_T + r·θ_S` after each optimizer step.
        teacher_prompt_template (`str`, *optional*, defaults to `"{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"`):
            How a teacher prompt is built from the student prompt (for a conversation, the text of its last user
            message) and a context: the row's `privileged_context` (privileged anchor) or a rollout of the group
            (contextual direction). Must contain both placeholders. `OPSD_GUARD_TEACHER_PROMPT_TEMPLATE` adds the guard
            sentence of OPSD's released code, `OPSD_PAPER_TEACHER_PROMPT_TEMPLATE` the OPSD paper's milder one.

        > Parameters that control the steering

        steering_anchor (`str`, *optional*, defaults to `"unprivileged"`):
            The teacher logits the direction is added to. `"unprivileged"` (v2): the teacher shown the student's prompt
            alone, `z̃_t = z_T(·|x,y_<t) + α·d_t`; the `privileged_context` column is then not read. `"privileged"`
            (our v1 reading, and OPSD): the teacher shown the prompt and `privileged_context`.
        steering (`str`, *optional*, defaults to `"contextual"`):
            `"contextual"` (v2): a direction per token, the teacher's features with a successful rollout of the group
            as its context minus those with a failed one (`num_generations` extra teacher sequences per steered
            rollout of a mixed group, batched across the slots). `"pooled"` (our proposal): one direction per prompt, the anchor's features averaged
            over the successful rollouts' tokens minus those over the failed ones'.
        steering_alpha (`float`, *optional*, defaults to `1.0`):
            Strength `α` of the steered teacher `z̃ = z_anchor + α·d` (the paper does not say how it sets `α`).
        normalize_direction (`bool`, *optional*, defaults to `False`):
            Rescale each prompt's direction to unit Euclidean norm in logit space, so `α` is measured in logits.
        steer_rollouts (`str`, *optional*, defaults to `"incorrect"`):
            `"incorrect"` (v2): only rollouts not verified correct (failures, and rollouts no reward function scored)
            are distribution-matched to the steered teacher; correct rollouts get only the positive-tail term.
            `"all"`: every rollout is distribution-matched (our v1 reading, and OPSD).

        > Parameters that control the loss

        beta (`float`, *optional*, defaults to `0.0`):
            Generalized JSD coefficient: `0.0` forward KL(teacher ‖ student) (v2), `1.0` reverse KL, `0.5` the
            symmetric JSD of OPSD.
        jsd_token_clip (`float` or `None`, *optional*, defaults to `1.0`):
            Clip of each token's divergence (summed over the vocabulary), `min(D_t, c)`: a token above it adds `c`
            and no gradient. v2 clips its forward KL but its value is not known; `1.0` nat is **our** choice. `None`
            does not clip. OPSD's released code uses `0.05`, applied to each vocabulary entry's term before the sum
            over the vocabulary: that is `jsd_clip_scope="vocabulary"`.
        jsd_clip_scope (`str`, *optional*, defaults to `"token"`):
            What `jsd_token_clip` clamps. `"token"`: each token's divergence, `min(c, D_t)`, which bounds every token's
            term and keeps TRL's chunked kernel. `"vocabulary"` (OPSD's released code): every vocabulary entry's term
            before the sum, `Σ_v min(c, d_t,v)`, computed in token chunks of explicit logits under activation
            checkpointing (slower; still no `(B, T, V)` logits).
        max_distill_tokens (`int` or `None`, *optional*, defaults to `1024`):
            Only the first `max_distill_tokens` tokens of a rollout are distribution-matched (v2: 1,024); later tokens
            get no divergence term. `None`: the whole rollout.
        positive_tail_tokens (`int`, *optional*, defaults to `128`):
            The positive-tail SFT term (v2) is the student's NLL of the last `positive_tail_tokens` tokens of each
            short correct rollout (all of it when shorter).
        positive_tail_weight (`float`, *optional*, defaults to `1.0`):
            Weight `w` of the positive-tail term in the loss (`0.0` turns it off). Our choice: v2 gives none.
        short_rollout_quantile (`float`, *optional*, defaults to `0.5`):
            **Our rule** for "short" (v2 does not define it): a correct rollout is short when its length is at most
            this quantile (linear interpolation) of the lengths of the correct rollouts of its group; `0.5` the median,
            `1.0` every correct rollout.
        short_rollout_max_tokens (`int` or `None`, *optional*, defaults to `None`):
            Also part of our rule: when set, a correct rollout longer than this many tokens is never short.

    The loss of a micro-batch is `(Σ_t m_t·min(D_t, c) + w·Σ_t s_t·NLL_t) / N`, `m` the distribution-matched tokens,
    `s` the positive-tail tokens and `N` the number of both over the optimizer step (as `trl.DistillationTrainer`
    normalises); the normaliser is our choice.

    > [!NOTE]
    > Defaults that differ from [`~trl.DistillationConfig`]: `beta` is `0.0` (v2's forward KL) instead of `1.0`.
    """

    num_generations: int = field(
        default=4, metadata={"help": "Rollouts sampled per prompt (the group whose outcomes are contrasted)."}
    )
    correct_threshold: float = field(
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
        metadata={"help": "Teacher prompt built from {prompt} and a {privileged_context} (or a rollout as context)."},
    )
    steering_anchor: str = field(
        default="unprivileged",
        metadata={"help": "Teacher the direction is added to: 'unprivileged' (prompt alone, v2) or 'privileged'."},
    )
    steering: str = field(
        default="contextual", metadata={"help": "Steering direction: 'contextual' (v2) or 'pooled'."}
    )
    steering_alpha: float = field(default=1.0, metadata={"help": "Steering strength alpha."})
    normalize_direction: bool = field(
        default=False, metadata={"help": "Rescale each prompt's direction to unit norm in logit space."}
    )
    steer_rollouts: str = field(
        default="incorrect",
        metadata={"help": "Rollouts distribution-matched: 'incorrect' (v2; correct ones get the SFT tail) or 'all'."},
    )
    beta: float = field(
        default=0.0,
        metadata={"help": "Generalized JSD coefficient: 0.0 forward KL (v2), 0.5 JSD (OPSD), 1.0 reverse KL."},
    )
    jsd_token_clip: float | None = field(
        default=1.0, metadata={"help": "Clip of each token's divergence, min(D_t, c); None: no clip."}
    )
    jsd_clip_scope: str = field(
        default="token",
        metadata={"help": "What jsd_token_clip clamps: 'token' (each token's total) or 'vocabulary' (OPSD's code)."},
    )
    max_distill_tokens: int | None = field(
        default=1024, metadata={"help": "Distribution-match only the first this many rollout tokens; None: all."}
    )
    positive_tail_tokens: int = field(
        default=128, metadata={"help": "Positive-tail SFT on the last this many tokens of short correct rollouts."}
    )
    positive_tail_weight: float = field(
        default=1.0, metadata={"help": "Weight of the positive-tail SFT term; 0.0 turns it off."}
    )
    short_rollout_quantile: float = field(
        default=0.5,
        metadata={"help": "Our rule: a correct rollout is short when its length <= this quantile of its group's."},
    )
    short_rollout_max_tokens: int | None = field(
        default=None, metadata={"help": "Our rule: a correct rollout longer than this is never short."}
    )

    @classmethod
    def opsd(cls, *args, **kwargs) -> "OGLSSDConfig":
        """Plain OPSD (arXiv 2601.18734): the privileged teacher, no steering, every rollout matched over its whole
        length by the unclipped symmetric JSD (`β = 0.5`), no SFT term: `OPSD_SETTINGS` over the other arguments.

        Arguments are those of the constructor; a key of `OPSD_SETTINGS` given here overrides it (the result is then
        no longer plain OPSD). OPSD's released code also clips (`jsd_token_clip=0.05`, per vocabulary entry) and
        hardens its template (`OPSD_GUARD_TEACHER_PROMPT_TEMPLATE`); neither is in the paper's loss, so neither is
        the default here.
        """
        return cls(*args, **{**OPSD_SETTINGS, **kwargs})

    @property
    def uses_privileged_context(self) -> bool:
        """Whether the teacher reads the rows' `privileged_context` (only the privileged anchor does)."""
        return self.steering_anchor == "privileged"

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
        for name, value, allowed in (
            ("steering", self.steering, STEERING_MODES),
            ("steering_anchor", self.steering_anchor, STEERING_ANCHORS),
            ("steer_rollouts", self.steer_rollouts, STEER_ROLLOUTS),
            ("jsd_clip_scope", self.jsd_clip_scope, JSD_CLIP_SCOPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        for name in ("steering_alpha", "correct_threshold", "positive_tail_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}.")
        if self.reward_weights is not None and not all(math.isfinite(w) for w in self.reward_weights):
            raise ValueError(f"reward_weights must be finite numbers, got {self.reward_weights}.")
        if self.jsd_token_clip is not None and not (math.isfinite(self.jsd_token_clip) and self.jsd_token_clip > 0):
            raise ValueError(f"jsd_token_clip must be a positive number or None, got {self.jsd_token_clip}.")
        for name in ("max_distill_tokens", "short_rollout_max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}.")
        if self.positive_tail_tokens < 1:
            raise ValueError(f"positive_tail_tokens must be at least 1, got {self.positive_tail_tokens}.")
        if self.positive_tail_weight < 0:
            raise ValueError(f"positive_tail_weight must be non-negative, got {self.positive_tail_weight}.")
        if not 0.0 <= self.short_rollout_quantile <= 1.0:
            raise ValueError(f"short_rollout_quantile must lie in [0, 1], got {self.short_rollout_quantile}.")
