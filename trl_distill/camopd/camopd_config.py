"""Configuration of [`CaMOPDTrainer`]."""

from dataclasses import dataclass, field
from typing import Any

from trl import DistillationConfig


SCHEDULES = ("alternating", "mixed")


@dataclass
class CaMOPDConfig(DistillationConfig):
    r"""
    Configuration class for the [`CaMOPDTrainer`]: Counteraction-Aware Multi-Teacher On-Policy Distillation
    (arXiv 2605.27115, docs/methods.md §4).

    Extends [`~trl.DistillationConfig`] (every field of it keeps its meaning) with several named teachers, named prompt
    sources routed to them, the decoupled alternating schedule and gap-based sample selection. The schedule and the
    gap formulas are *proposed* (our reading of the paper; see `docs/camopd.md`).

    Parameters:
        > Parameters that control the teachers

        teacher_models (`dict[str, str]`, *optional*):
            Teacher names mapped to model ids or paths, loaded like `teacher_model_name_or_path`. Used when the trainer
            gets no `teacher_model`. Typical: `{"general": "<original general model>", "domain": "<frozen copy of the
            specialised model>"}`. A teacher may be a URL (`"http://10.0.0.5:8000/v1"`): a served teacher (vLLM or
            `trl-distill serve-teacher`), or a mapping of [`~trl_distill.core.served_teacher.ServedTeacher`]'s
            arguments (`{"url": ..., "top_k": 100, "wire": "json"}`); see docs/distributed.md.
        served_teacher_top_k (`int`, *optional*, defaults to `20`):
            Teacher log-probabilities per completion token requested from a teacher given as a URL. The loss over
            the top-k plus one tail bucket is exact when k covers the vocabulary, an approximation below.
        teachers_init_kwargs (`dict[str, dict[str, Any]]`, *optional*):
            Per-teacher keyword arguments for `AutoModelForCausalLM.from_pretrained`, merged over
            `teacher_model_init_kwargs` (which applies to every teacher loaded from a path).
        teacher_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load teachers given as paths in 4-bit (NF4, bf16 compute) through a bitsandbytes quantization config.
            Needs a CUDA device and `bitsandbytes`.
        teacher_tokenizers (`dict[str, str]`, *optional*):
            Teachers with their own tokenizer (cross-tokenizer distillation, docs/cross_tokenizer.md): teacher names
            mapped to a tokenizer id or path, or `"auto"` for the tokenizer saved beside the teacher's checkpoint.
            Such a teacher reads the conversation rendered with its own chat template and the rollout re-tokenized;
            the loss and the gap are taken on byte-aligned spans. Teachers not named here must share the student's
            tokenizer (today's path, unchanged).
        cross_tokenizer_uld_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the ULD sorted-probability distance on the pieces without a counterpart in the other
            vocabulary (cross-tokenizer teachers only; 0 leaves it out).
        cross_tokenizer_uld_top_k (`int`, *optional*, defaults to `256`):
            Sorted probabilities compared by that distance per span (the rest as one mass).

        > Parameters that control the prompt sources

        source_teachers (`dict[str, str]`, *optional*):
            Prompt-source names mapped to teacher names. When `None`, every source goes to the only teacher, or, with
            several teachers, to the teacher of the same name (`general` → `general`, `domain` → `domain`).
        schedule (`str`, *optional*, defaults to `"alternating"`):
            `"alternating"` (CaMOPD): every optimizer step draws all its prompts, accumulation micro-batches included,
            from one source: `review_every` steps from `recovery_source`, then one from `review_source`. `"mixed"`
            (vanilla MOPD baseline): batches mix the sources in proportion to their sizes and each sample is routed
            to its source's teacher. With a single source both are the same as [`~trl.DistillationTrainer`].
        review_every (`int`, *optional*, defaults to `3`):
            K, the number of general-recovery optimizer steps before each domain-review step (`alternating` only).
            The 3:1 schedule the later notes on the paper report (medium confidence; docs/methods.md §4).
        recovery_source (`str`, *optional*, defaults to `"general"`):
            Name of the source of the recovery steps (proxy general prompts).
        review_source (`str`, *optional*, defaults to `"domain"`):
            Name of the source of the review steps (domain prompts).

        > Parameters that control gap-based selection

        rho (`float` or `None`, *optional*, defaults to `None`):
            ρ, the kept fraction: `ceil(B/ρ)` completions are generated per process and optimizer step
            (`B = per_device_train_batch_size × gradient_accumulation_steps`) and the `B` with the largest gap
            `(1/n) Σ_t |log T(y_t) − log S(y_t)|` (log-probabilities at `temperature`, as the loss) are trained on,
            the loss normalised over their tokens. Must lie in (0, 1]; `1.0` disables selection (plain on-policy
            distillation). `None` means auto: `1.0` with one prompt source (so a `DistillationTrainer` script
            switched to `CaMOPDTrainer` trains as before; the log says so once) and `0.5` (the paper's selection,
            our default ρ) with several sources.

        > Parameters that control the diagnostics

        gradient_coherence_every (`int`, *optional*, defaults to `0`):
            Every this many optimizer steps, log `grad_coherence = cos(∇L_recovery, ∇L_review)` on the latest batch of
            each of the two sources (negative = counteraction; two extra forward–backward passes) and, when ρ < 1,
            the paper's gradient coherence gain `gcg = (Coh(selected) − Coh(full)) / Coh(full)` with
            `Coh(A) = ‖Σ g_i‖ / Σ ‖g_i‖` over per-sample gradients of the current generation batch (taken over the
            last trainable module before the output head; one extra forward with gradients, one backward through the
            head per micro-batch and one small backward per sample). `0` disables both. Not available (a warning
            says so) under DeepSpeed ZeRO-3 (gradients are partitioned) or re-entrant gradient checkpointing
            (`torch.autograd.grad` cannot reach checkpointed layers).

    > [!NOTE]
    > Defaults differ from [`~trl.DistillationConfig`] only where the paper says: `beta=1.0` (reverse KL) is already
    > TRL's default. With one prompt source and one teacher the defaults train exactly like
    > [`~trl.DistillationTrainer`] (`rho=None` resolves to 1).
    """

    _VALID_DICT_FIELDS = DistillationConfig._VALID_DICT_FIELDS + [
        "teacher_models",
        "teachers_init_kwargs",
        "source_teachers",
        "teacher_tokenizers",
    ]

    teacher_models: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "Teacher names mapped to model ids or paths (JSON on the command line)."},
    )
    served_teacher_top_k: int = field(
        default=20,
        metadata={"help": "Top-k log-probabilities per token requested from a teacher given as a URL."},
    )
    teachers_init_kwargs: dict[str, dict[str, Any]] | str | None = field(
        default=None,
        metadata={"help": "Per-teacher `from_pretrained` kwargs, merged over `teacher_model_init_kwargs`."},
    )
    teacher_load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Load teachers given as paths in 4-bit through bitsandbytes (CUDA only)."},
    )
    teacher_tokenizers: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "Teachers with their own tokenizer: name -> tokenizer id/path, or 'auto' (beside it)."},
    )
    cross_tokenizer_uld_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the ULD distance on unmatched pieces (cross-tokenizer teachers)."},
    )
    cross_tokenizer_uld_top_k: int = field(
        default=256,
        metadata={"help": "Sorted probabilities per span compared by the ULD distance."},
    )
    source_teachers: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "Prompt-source names mapped to teacher names; default: same name, or the only teacher."},
    )
    schedule: str = field(
        default="alternating",
        metadata={"help": "'alternating' (CaMOPD: pure per-step sources, K:1) or 'mixed' (vanilla MOPD baseline)."},
    )
    review_every: int = field(
        default=3,
        metadata={"help": "K: general-recovery optimizer steps before each domain-review step."},
    )
    recovery_source: str = field(
        default="general",
        metadata={"help": "Name of the prompt source of the recovery steps."},
    )
    review_source: str = field(
        default="domain",
        metadata={"help": "Name of the prompt source of the review steps."},
    )
    rho: float | None = field(
        default=None,
        metadata={
            "help": "Kept fraction of generated samples by largest gap, in (0, 1]; 1.0 disables selection; unset: "
            "auto (1.0 with one prompt source, 0.5 with several)."
        },
    )
    gradient_coherence_every: int = field(
        default=0,
        metadata={"help": "Log cos(grad L_recovery, grad L_review) and GCG every this many steps; 0 disables."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.rho is not None and not 0.0 < self.rho <= 1.0:
            raise ValueError(
                f"rho must lie in (0, 1] (the fraction of generated samples kept by gap), got {self.rho}. "
                "Use 1.0 to disable gap-based selection, or leave it unset (auto)."
            )
        if self.cross_tokenizer_uld_weight < 0 or self.cross_tokenizer_uld_top_k < 1:
            raise ValueError(
                f"cross_tokenizer_uld_weight must be >= 0 and cross_tokenizer_uld_top_k >= 1, got "
                f"{self.cross_tokenizer_uld_weight} and {self.cross_tokenizer_uld_top_k}."
            )
        if self.served_teacher_top_k < 1:
            raise ValueError(f"served_teacher_top_k must be >= 1, got {self.served_teacher_top_k}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.review_every < 1:
            raise ValueError(
                f"review_every must be >= 1 (general-recovery steps per domain-review step), got {self.review_every}."
            )
        if self.recovery_source == self.review_source:
            raise ValueError(f"recovery_source and review_source must differ, both are {self.recovery_source!r}.")
        if self.gradient_coherence_every < 0:
            raise ValueError(
                f"gradient_coherence_every must be >= 0 (0 disables the diagnostic), got "
                f"{self.gradient_coherence_every}."
            )
        for name in ("teacher_models", "source_teachers", "teachers_init_kwargs", "teacher_tokenizers"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(
                    f"{name} must be a mapping of names (JSON object on the command line), got {value!r}."
                )
        if self.teacher_models is not None and self.teacher_model_name_or_path is not None:
            raise ValueError(
                "Set either `teacher_model_name_or_path` (one teacher) or `teacher_models` (named teachers), not both."
            )
