"""CaMOPD: Counteraction-Aware Multi-Teacher On-Policy Distillation (arXiv 2605.27115, docs/methods.md §4)."""

import textwrap
import time
from collections.abc import Callable, Mapping

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from torch.utils.data import Sampler
from transformers import (
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
)
from trl import DistillationTrainer
from trl.trainer.utils import RepeatSampler, maybe_gather_lm_head_ctx

from ..core.cross_tokenizer import TeacherTokenizerBridge, cross_tokenizer_divergence, span_gap, span_side
from ..core.data import check_local_path
from ..core.divergence import (
    LMHead,
    compute_distillation_loss,
    generalized_jsd,
    token_mean_loss,
    topk_tail_generalized_jsd,
)
from ..core.generation import stop_token_ids
from ..core.parameters import full_shape
from ..core.served_teacher import SCORE_KEYS, ServedTeacher, TeacherScores, is_served_teacher
from ..core.teachers import INIT_KWARGS_WITH_INSTANCE, check_tokenizer_fits, load_teacher
from .camopd_config import CaMOPDConfig
from .coherence import (
    coherence,
    coherence_gain,
    coherence_module,
    coherence_parameters,
    gradient_coherence,
    per_sample_gradients,
    recorded_outputs,
    streamed_gradient_coherence,
)
from .gap import gap, pool_size, sampled_token_logprobs, select_by_gap
from .routing import (
    DEFAULT_NAME,
    SOURCE_COLUMN,
    combine_sources,
    named_sources,
    route_sources,
    subset_batch,
    tag_eval_sources,
    teacher_rows,
)
from .schedule import AlternatingSourceSampler, alternating_pattern


__all__ = ["CaMOPDTrainer", "gradient_coherence", "resolve_rho", "route_sources"]

logger = get_logger(__name__)

MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
AUTO_RHO_SEVERAL_SOURCES = 0.5


def resolve_rho(rho: float | None, num_sources: int) -> float:
    """ρ the trainer uses: `rho` when set; with `rho=None` ("auto"), 1.0 (no gap selection, the loss of
    `trl.DistillationTrainer`) for one prompt source and 0.5 (CaMOPD's gap selection) for several."""
    if rho is not None:
        return rho
    return AUTO_RHO_SEVERAL_SOURCES if num_sources > 1 else 1.0


class CaMOPDTrainer(DistillationTrainer):
    """
    Trainer for Counteraction-Aware Multi-Teacher On-Policy Distillation (CaMOPD).

    Recovers the general ability of a domain-specialised student by on-policy distillation from several teachers
    (typically a general teacher on proxy general prompts and a frozen copy of the specialised model on domain
    prompts) while preserving the domain behaviour. Built on [`~trl.DistillationTrainer`] (on-policy generation,
    vLLM, chunked hidden-state divergence, DeepSpeed teachers), it adds:

    - named prompt sources routed to named teachers;
    - the decoupled `alternating` schedule (every optimizer step draws from one source: `review_every` recovery
      steps, then one review step) and the `mixed` vanilla-MOPD baseline;
    - gap-based selection: `ceil(B/ρ)` completions are generated, the `B` with the largest gap
      `(1/n) Σ_t |log T(y_t) − log S(y_t)|` are kept, and the loss is normalised over their tokens. The teacher
      forward that scores the gap is cached and reused by the loss, so the teacher runs once per sample;
    - optional gradient diagnostics: `cos(∇L_recovery, ∇L_review)` and the gradient coherence gain (GCG) of the
      gap selection.

    With one prompt source and one teacher its defaults (`rho=None`: auto, 1 for one source) train exactly like
    [`~trl.DistillationTrainer`]; gap selection is on when `rho` is set below 1, or by default with several sources.

    Example:

    ```python
    >>> from trl_distill import CaMOPDConfig, CaMOPDTrainer

    >>> trainer = CaMOPDTrainer(
    ...     model="my-org/medical-7b",
    ...     teacher_model={"general": "Qwen/Qwen2.5-7B-Instruct", "domain": "my-org/medical-7b"},
    ...     args=CaMOPDConfig(output_dir="camopd", review_every=3, rho=0.5),
    ...     train_dataset={"general": general_prompts, "domain": domain_prompts},
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The student, as for [`~trl.DistillationTrainer`].
        teacher_model (`str`, [`~transformers.PreTrainedModel`] or `dict[str, str | PreTrainedModel]`, *optional*):
            One teacher, or teachers by name (model ids/paths are loaded with `args.teacher_model_init_kwargs` merged
            with `args.teachers_init_kwargs[name]`). Defaults to `args.teacher_models` or
            `args.teacher_model_name_or_path`. Every teacher must share the student's vocabulary: equal `vocab_size`
            and, for a path teacher saved with a tokenizer, the same tokenizer (vocabulary and special tokens).
            Loaded, checked and prepared by [`~trl_distill.core.teachers.load_teacher`].
        args ([`CaMOPDConfig`], *optional*):
            Configuration; a default one is built when `None`.
        train_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`):
            One prompt dataset, or prompt sources by name (each with a `"prompt"` column), routed to teachers by
            `args.source_teachers`. A single source may also be an [`~datasets.IterableDataset`] when ρ = 1.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Evaluation prompts. A dict keyed by source names is routed like the training sources; with several
            teachers, a plain dataset needs a `"prompt_source"` column.
        processing_class, callbacks, optimizers, quantization_config, peft_config, tools:
            As for [`~trl.DistillationTrainer`].
        teacher_tokenizers (`dict[str, PreTrainedTokenizerBase | str]`, *optional*):
            Teachers with their own tokenizer, by name: a tokenizer, a tokenizer id or path, or `"auto"` (the one
            saved beside the teacher's checkpoint); merged over `args.teacher_tokenizers`. Such a teacher may have
            another vocabulary and chat template: it reads the conversation in its own template, and the loss and the
            gap are taken on byte-aligned spans (see [`~trl_distill.core.cross_tokenizer`] and
            docs/cross_tokenizer.md). Its tokenizer is checked at construction (a `ValueError` names the teacher and
            what is missing). Teachers not named keep the same-tokenizer path.

    Raises (before training): a `ValueError` for no teacher, unknown teacher or source names, a source without a
    `prompt` column, an iterable source among several (or with gap selection), the same dataset given as two sources
    (e.g. general and domain), sources that do not match the alternating schedule, a train dataset with fewer prompts
    than one generation batch (training would run zero steps), a teacher whose vocabulary or tokenizer differs from
    the student's, and a tokenizer larger than a model's embedding; a `TypeError` for a config that is not a
    `CaMOPDConfig`.
    """

    _tag_names = ["trl", "distillation", "camopd", "trl-distill"]
    _name = "CaMOPD"
    _paper = {
        "title": "Counteraction-Aware Multi-Teacher On-Policy Distillation",
        "id": "2605.27115",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{camopd2026,
                title        = {{Counteraction-Aware Multi-Teacher On-Policy Distillation}},
                year         = 2026,
                eprint       = {arXiv:2605.27115},
            }"""),
    }

    def __init__(
        self,
        model: "str | PreTrainedModel",
        teacher_model: "str | PreTrainedModel | dict[str, str | PreTrainedModel] | None" = None,
        args: CaMOPDConfig | None = None,
        train_dataset: Dataset | IterableDataset | dict[str, Dataset] | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        quantization_config: "BitsAndBytesConfig | None" = None,
        peft_config=None,
        tools: list[Callable] | None = None,
        teacher_tokenizers: "dict[str, PreTrainedTokenizerBase | str] | None" = None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else model.config.name_or_path or ""
            args = CaMOPDConfig(f"{model_name.split('/')[-1]}-CaMOPD")
        elif not isinstance(args, CaMOPDConfig):
            raise TypeError(
                f"CaMOPDTrainer needs a `CaMOPDConfig`, got {type(args).__name__}. `CaMOPDConfig` accepts every "
                "`DistillationConfig` field; build it with the same arguments (with one prompt source it then trains "
                "exactly like `DistillationTrainer`)."
            )

        if isinstance(model, str):
            check_local_path(model, "model")  # before the hub client turns a missing path into a repo-id error
        teacher_specs = self._teacher_specs(teacher_model, args)
        self._tokenizer_specs = self._teacher_tokenizer_specs(teacher_tokenizers, args, teacher_specs)
        sources = named_sources(train_dataset)
        self.source_names = list(sources)
        self.teacher_names = list(teacher_specs)
        self.routing = route_sources(self.source_names, self.teacher_names, args.source_teachers)
        unused = sorted(set(self.teacher_names) - set(self.routing.values()))
        if unused and sources:
            logger.warning(f"Teachers {unused} correct no prompt source and will only take memory.")
        if args.schedule == "alternating" and len(sources) > 1:
            expected = {args.recovery_source, args.review_source}
            if set(sources) != expected:
                raise ValueError(
                    f"The alternating schedule needs exactly the prompt sources {sorted(expected)} "
                    f"(`recovery_source`, `review_source`), got {sorted(sources)}. Rename the sources, set "
                    "`recovery_source`/`review_source`, or use `schedule='mixed'`."
                )
        self.rho = resolve_rho(args.rho, len(sources))
        if args.rho is None:
            if self.rho == 1.0:
                logger.warning(
                    "CaMOPD: one prompt source and `rho=None` (auto), so rho = 1: no gap-based selection, this trains "
                    "like trl.DistillationTrainer. Set `rho` (e.g. 0.5) to select samples by gap."
                )
            else:
                logger.warning(
                    f"CaMOPD: {len(sources)} prompt sources and `rho=None` (auto), so rho = {self.rho}: gap-based "
                    f"selection keeps the largest-gap {self.rho:.0%} of the generated samples. Set `rho=1.0` to "
                    "disable it."
                )
        self._default_source = self.source_names[0] if len(self.source_names) == 1 else None
        combined, self._source_ranges = combine_sources(sources)
        eval_dataset = tag_eval_sources(
            eval_dataset, self.routing, self.source_names, single_source=self._default_source is not None
        )

        super().__init__(
            model=model,
            teacher_model=None,
            args=args,
            train_dataset=combined,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
        )

        check_tokenizer_fits(self._tokenizer, self.model, "student")
        self.teachers = self._load_teachers(teacher_specs, args)
        self.bridges = self._build_bridges(teacher_specs)
        self._teacher_width = {
            name: _hidden_size(self.accelerator.unwrap_model(teacher))
            for name, teacher in self.teachers.items()
            if not isinstance(teacher, ServedTeacher)
        }
        local = [name for name in self.teacher_names if name in self._teacher_width]
        # what DistillationTrainer's own paths read (the multimodal one); None when every teacher is served
        self.teacher_model = self.teachers[local[0]] if local else None

        self._batch_local = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._pool_local = pool_size(self._batch_local, self.rho)
        if self._pool_local > self._batch_local and isinstance(self.train_dataset, IterableDataset):
            raise ValueError(
                "Gap-based selection (rho < 1) needs a map-style `train_dataset`; convert the iterable dataset or set "
                "`rho=1.0`."
            )
        self._check_generation_batch_fits()
        # trainer state across steps: the latest micro-batch of each source, kept for the recovery/review cosine
        # (`_log_gradient_coherence` runs every `gradient_coherence_every` steps on the batches last seen)
        self._latest_batches: dict[str, dict] = {}
        if args.gradient_coherence_every and self.bridges and self.rho < 1:
            logger.warning(
                "The gradient coherence gain (gcg) is not logged with cross-tokenizer teachers "
                f"{sorted(self.bridges)}; grad_coherence (the recovery/review cosine) is."
            )
        if args.gradient_coherence_every and self._gradients_unreachable:
            logger.warning(
                f"gradient_coherence_every is ignored under {self._gradients_unreachable}: neither the recovery/review "
                "cosine nor the gradient coherence gain is logged."
            )

    def _check_generation_batch_fits(self) -> None:
        """Raises when a map-style train dataset sampled in whole generation batches (one source, or the `mixed`
        schedule) has fewer prompts than one batch: the sampler would yield nothing and training run zero steps. The
        alternating schedule cycles through each source, so it needs no such check."""
        dataset = self.train_dataset
        if dataset is None or isinstance(dataset, IterableDataset) or self._alternating_sources() is not None:
            return
        args, processes = self.args, self.accelerator.num_processes
        needed = self._pool_local * processes
        if len(dataset) < needed:
            selection = f" / rho={self.rho}" if self._pool_local > self._batch_local else ""
            raise ValueError(
                f"train_dataset has {len(dataset)} prompts, but one generation batch needs {needed} "
                f"(per_device_train_batch_size={args.per_device_train_batch_size} × {processes} processes × "
                f"gradient_accumulation_steps={args.gradient_accumulation_steps}{selection}); the sampler keeps only "
                "whole generation batches, so training would run zero steps. Lower per_device_train_batch_size or "
                "gradient_accumulation_steps, raise rho, or give more prompts."
            )

    # ----------------------------------------------------------------------------------------------------- setup
    @property
    def _zero3(self) -> bool:
        return self.is_deepspeed_enabled and self.args.deepspeed_plugin.zero_stage == 3

    @property
    def _gradients_unreachable(self) -> str | None:
        """Why the gradient diagnostics cannot take the student's gradients with `torch.autograd.grad`, or `None`."""
        if self._zero3:
            return "DeepSpeed ZeRO-3 (gradients are partitioned)"
        if self.args.gradient_checkpointing and (self.args.gradient_checkpointing_kwargs or {}).get("use_reentrant"):
            return (
                "re-entrant gradient checkpointing (`torch.autograd.grad` does not reach the parameters inside a "
                "checkpointed layer; set gradient_checkpointing_kwargs={'use_reentrant': False} to log them)"
            )
        return None

    @staticmethod
    def _teacher_specs(teacher_model, args: CaMOPDConfig) -> dict:
        """The teachers by name, as given (paths or models), checked before anything is loaded."""
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
        per_teacher = args.teachers_init_kwargs or {}
        unknown = sorted(set(per_teacher) - set(teacher_model))
        if unknown:
            raise ValueError(
                f"`teachers_init_kwargs` names teachers {unknown} that were not given; the teachers are "
                f"{sorted(teacher_model)}."
            )
        paths = {name: t for name, t in teacher_model.items() if isinstance(t, str) and not is_served_teacher(t)}
        for name in teacher_model:
            if name not in paths and name in per_teacher and not is_served_teacher(teacher_model[name]):
                raise ValueError(
                    f"`teachers_init_kwargs[{name!r}]` is set but teacher {name!r} is already instantiated."
                )
        if args.teacher_model_init_kwargs is not None and not paths:
            # as trl.DistillationTrainer: the kwargs would apply to no teacher
            raise ValueError(INIT_KWARGS_WITH_INSTANCE)
        for name, path in paths.items():
            check_local_path(path, "teacher" if name == DEFAULT_NAME else f"teacher {name!r}")
        if args.teacher_load_in_4bit and paths and not torch.cuda.is_available():
            raise ValueError(
                f"`teacher_load_in_4bit=True` needs a CUDA device (bitsandbytes 4-bit), but none is visible while "
                f"loading teachers {sorted(paths)}. Unset it on CPU."
            )
        return teacher_model

    def _load_teachers(self, specs: dict, args: CaMOPDConfig) -> dict:
        """Every teacher loaded, checked against the student and prepared (`trl_distill.core.teachers.load_teacher`);
        one model serving several names (the same object, or the same path and kwargs) is loaded once."""
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
            if name in self._tokenizer_specs:
                key = ("cross", key)  # loaded without the shared-tokenizer checks
            if key not in loaded:
                loaded[key] = load_teacher(
                    spec,
                    args,
                    name="teacher" if single else name,
                    init_kwargs=kwargs,
                    revision=args.teacher_model_revision if single else None,
                    load_in_4bit=args.teacher_load_in_4bit and isinstance(spec, str),
                    student=None if name in self._tokenizer_specs else self.model,
                    tokenizer=None if name in self._tokenizer_specs else self._tokenizer,
                    accelerator=self.accelerator,
                )
            teachers[name] = loaded[key]
        return teachers

    @staticmethod
    def _teacher_tokenizer_specs(teacher_tokenizers, args: CaMOPDConfig, teacher_specs: dict) -> dict:
        """The teachers with their own tokenizer, by name (`args.teacher_tokenizers` updated by the trainer's
        argument), checked against the teacher names before anything is loaded."""
        specs = {**(args.teacher_tokenizers or {}), **(teacher_tokenizers or {})}
        unknown = sorted(set(specs) - set(teacher_specs))
        if unknown:
            raise ValueError(
                f"`teacher_tokenizers` names teachers {unknown} that were not given; the teachers are "
                f"{sorted(teacher_specs)}."
            )
        for name in specs:
            if is_served_teacher(teacher_specs[name]):
                raise ValueError(
                    f"Teacher {name!r} is served and has its own tokenizer: a served teacher returns top-k ids of its "
                    "vocabulary for the student's tokens, which cannot be aligned. Load it locally for cross-tokenizer "
                    "distillation, or serve a teacher that shares the student's tokenizer."
                )
        return specs

    def _build_bridges(self, teacher_specs: dict) -> dict[str, TeacherTokenizerBridge]:
        """A [`TeacherTokenizerBridge`] per teacher with its own tokenizer (its tokenizer loaded when given as a path
        or `"auto"`), checked against its embedding."""
        bridges = {}
        stops = stop_token_ids(self.accelerator.unwrap_model(self.model), self._tokenizer)
        for name, spec in self._tokenizer_specs.items():
            tokenizer = spec
            if isinstance(spec, str):
                source = teacher_specs[name] if spec == "auto" else spec
                if not isinstance(source, str):
                    source = getattr(source.config, "_name_or_path", "") or ""
                try:
                    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=self.args.trust_remote_code)
                except (OSError, ValueError) as error:
                    raise ValueError(
                        f"Teacher {name!r}: its tokenizer ({spec!r}) could not be loaded from {source!r} ({error}). "
                        "Pass the tokenizer itself in `teacher_tokenizers`, or save it beside the teacher."
                    ) from error
            teacher = self.accelerator.unwrap_model(self.teachers[name])
            check_tokenizer_fits(tokenizer, teacher, f"teacher {name!r}")
            bridges[name] = TeacherTokenizerBridge(self._tokenizer, tokenizer, name, stop_ids=stops)
        return bridges

    def _align(self, name: str, batch: dict, rows: torch.Tensor | None = None):
        """The teacher `name`'s view of the batch's rows `rows` (all when `None`), aligned with the student's."""
        keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        prompt_ids, prompt_mask, completion_ids, completion_mask = (
            batch[key] if rows is None else batch[key][rows.to(batch[key].device)] for key in keys
        )
        prompts = batch["prompts"] if rows is None else [batch["prompts"][i] for i in rows.tolist()]
        student_prompts = [ids[mask != 0].tolist() for ids, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        return self.bridges[name].align(prompts, completion_ids, completion_mask, student_prompts)

    def _aligned_teacher_hidden(self, name: str, aligned) -> torch.Tensor:
        device = self.accelerator.device
        return self._teacher_hidden(
            name, aligned.input_ids.to(device), aligned.attention_mask.to(device), aligned.logits_to_keep
        )

    def _cross_gap(self, name: str, output: dict, rows: torch.Tensor, student_hidden, student_head) -> torch.Tensor:
        """Per-row gap to cross-tokenizer teacher `name` on aligned spans (see [`span_gap`]), for rows `rows`."""
        aligned = self._align(name, output, rows)
        teacher_hidden = self._aligned_teacher_hidden(name, aligned)
        teacher_head = LMHead.of(self.accelerator.unwrap_model(self.teachers[name]))
        teacher = span_side(teacher_hidden, teacher_head, aligned.completion_ids, aligned.teacher_spans,
                            aligned.num_spans, self.temperature)  # fmt: skip
        rows_s = rows.to(student_hidden.device)
        student = span_side(student_hidden[rows_s], student_head, output["completion_ids"][rows_s],
                            aligned.student_spans, aligned.num_spans, self.temperature)  # fmt: skip
        self._log_misaligned(aligned)
        return span_gap(student, teacher, aligned.num_spans)

    def _cross_divergence(self, name, inputs, rows, student_hidden, student_head, loss_mask):
        """Per-token divergence and entropy to cross-tokenizer teacher `name` on rows `rows` (see
        [`~trl_distill.core.cross_tokenizer.cross_tokenizer_divergence`]); `(None, None)` for no rows (the teacher
        still runs one row under DeepSpeed, in lockstep)."""
        whole = len(rows) == loss_mask.size(0)
        run = None if whole else (rows if len(rows) else torch.zeros(1, dtype=torch.long))
        aligned = self._align(name, inputs, run)
        teacher_hidden = self._aligned_teacher_hidden(name, aligned)
        if not len(rows):
            return None, None
        self._log_misaligned(aligned)

        def take(tensor):
            return tensor if whole else tensor[run.to(tensor.device)]

        teacher_head = LMHead.of(self.accelerator.unwrap_model(self.teachers[name]))
        args = self.args
        heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
        with maybe_gather_lm_head_ctx(*heads):
            return cross_tokenizer_divergence(
                take(student_hidden), student_head, teacher_hidden, teacher_head, take(inputs["completion_ids"]),
                aligned, take(loss_mask), self.bridges[name], self.beta, self.temperature,
                args.cross_tokenizer_uld_weight, args.cross_tokenizer_uld_top_k,
            )  # fmt: skip

    def _log_misaligned(self, aligned) -> None:
        """Counts rows whose text did not re-tokenize to the same bytes (trained on nothing), and warns."""
        bad = int(aligned.misaligned.sum())
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["cross_tokenizer/misaligned_rows"].append(float(bad))
        if bad:
            logger.warning(f"{bad} rollouts did not re-tokenize to the same bytes for a teacher; they add no loss.")

    def _served_scores(self, name: str, output: dict, rows: torch.Tensor | None = None) -> TeacherScores:
        """Served teacher `name`'s scores of the batch's rows `rows` (all when `None`); raises when the server fails
        after its retries, so that no step trains on a failed response."""
        keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        tensors = [output[key] if rows is None else output[key][rows.to(output[key].device)] for key in keys]
        return self.teachers[name].score_completions(*tensors, temperature=self.temperature)

    # ------------------------------------------------------------------------------------------------------ data
    def get_train_dataloader(self):
        if self._pool_local == self._batch_local and self._alternating_sources() is None:
            return super().get_train_dataloader()  # DistillationTrainer's path, iterable datasets included
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self._pool_local,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _alternating_sources(self) -> list[str] | None:
        if self.args.schedule != "alternating" or len(self.source_names) < 2:
            return None
        return alternating_pattern(self.args.review_every, self.args.recovery_source, self.args.review_source)

    def _get_train_sampler(self, dataset: Dataset | None = None) -> Sampler:
        dataset = self.train_dataset if dataset is None else dataset
        group_size = self._pool_local * self.accelerator.num_processes
        pattern = self._alternating_sources()
        if pattern is not None:
            return AlternatingSourceSampler(
                self._source_ranges,
                pattern,
                group_size=group_size,
                repeat_count=self.args.gradient_accumulation_steps,
                shuffle=self.shuffle_dataset,
                seed=self.args.seed,
            )
        return RepeatSampler(
            data_source=dataset,
            mini_repeat_count=1,
            batch_size=group_size,
            repeat_count=self.args.gradient_accumulation_steps,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt", "image", "images", SOURCE_COLUMN]

    # ------------------------------------------------------------------------------------------ teacher forwards
    def _teacher_rows(self, sources: list[str]):
        """`(teacher name, row indices)` for each teacher in a fixed order.

        Under DeepSpeed every rank must run the same forwards, so a teacher without rows here still runs on one row
        (its result is then dropped: `rows` is empty).
        """
        return teacher_rows(self.routing, self.source_names, sources, lockstep=self.is_deepspeed_enabled)

    def _teacher_hidden(self, name: str, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
        teacher = self.teachers[name]
        teacher.eval()
        unwrapped = self.accelerator.unwrap_model(teacher)
        with torch.no_grad():
            return self._forward_redirection(
                teacher, unwrapped, self._get_last_hidden_state, unwrapped, input_ids, attention_mask, logits_to_keep
            )

    def _source_of(self, example: dict) -> str:
        source = example.get(SOURCE_COLUMN) or self._default_source
        if source not in self.routing:
            raise ValueError(
                f"A prompt has source {source!r}, which has no teacher; the sources are {self.source_names}."
            )
        return source

    # ------------------------------------------------------------------------------- generation and selection
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        sources = [self._source_of(x) for x in inputs]
        output = super()._generate_and_score_completions(inputs)
        output["sources"] = sources
        if self.bridges:  # cross-tokenizer teachers re-render the conversation in their own template
            output["prompts"] = [x["prompt"] for x in inputs]
        mode = "train" if self.model.training else "eval"
        if mode == "train":  # one value per optimizer step (one generation per step); eval batches follow no schedule
            counts = torch.tensor([sources.count(s) for s in self.source_names], device=self.accelerator.device)
            counts = self.accelerator.gather(counts).view(-1, len(self.source_names)).sum(0).float()
            # averaged over the logging window: the share of its generated samples from each source (under the
            # alternating schedule, the fraction of its optimizer steps that drew from the source)
            for name, share in zip(self.source_names, (counts / counts.sum()).tolist()):
                self._metrics[mode][f"schedule/{name}"].append(share)
        if mode == "train" and len(sources) > self._batch_local:
            output = self._select_by_gap(output, self._batch_local)
        return output

    def _select_by_gap(self, output: dict, num_keep: int) -> dict:
        """Scores every generated sample's gap, keeps the `num_keep` largest, caches their teacher hidden states."""
        if any(k in output for k in MULTIMODAL_KEYS):
            raise ValueError("Gap-based selection (rho < 1) supports text-only prompts; set `rho=1.0` for images.")
        sources = output["sources"]
        size = len(sources)
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        loss_mask = (
            output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        )
        completion_ids, logits_to_keep = output["completion_ids"], output["completion_ids"].size(1)

        student = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            student_hidden = self._forward_redirection(
                self.model_wrapped,
                student,
                self._get_last_hidden_state,
                student,
                input_ids,
                attention_mask,
                logits_to_keep,
            )
            student_logprobs = sampled_token_logprobs(
                student_hidden, LMHead.of(student), completion_ids, loss_mask, self.temperature
            )
            teacher_logprobs = torch.zeros_like(student_logprobs)
            teacher_hidden = served = None
            cross_gaps = []
            for name, rows in self._teacher_rows(sources):
                if name in self.bridges:  # gap on aligned spans; the loss runs this teacher again on the kept rows
                    run = rows if len(rows) else torch.zeros(1, dtype=torch.long)
                    gaps_here = self._cross_gap(name, output, run, student_hidden, LMHead.of(student))
                    cross_gaps.append((rows, gaps_here[: len(rows)]))
                    continue
                if isinstance(self.teachers[name], ServedTeacher):
                    if len(rows):
                        scores = self._served_scores(name, output, rows)
                        teacher_logprobs[rows.to(teacher_logprobs.device)] = scores.sampled_logprobs.to(
                            teacher_logprobs.device
                        )
                        served = TeacherScores.merge(served, scores, rows, size)
                    continue
                run = rows if len(rows) else torch.zeros(1, dtype=torch.long)
                run = run.to(input_ids.device)
                hidden = self._teacher_hidden(name, input_ids[run], attention_mask[run], logits_to_keep)
                if not len(rows):
                    continue
                unwrapped = self.accelerator.unwrap_model(self.teachers[name])
                teacher_logprobs[run] = sampled_token_logprobs(
                    hidden, LMHead.of(unwrapped), completion_ids[run], loss_mask[run], self.temperature
                ).to(teacher_logprobs.device)
                if teacher_hidden is None:  # one tensor for all teachers, padded to the widest hidden size
                    width = max(self._teacher_width.values())
                    teacher_hidden = hidden.new_zeros(size, logits_to_keep, width)
                teacher_hidden[run, :, : hidden.size(-1)] = hidden.to(teacher_hidden.dtype)

        # gap = (1/n) Σ_t |log T(y_t) − log S(y_t)|  (docs/methods.md §4)
        gaps = gap(student_logprobs, teacher_logprobs, loss_mask)
        for rows, cross in cross_gaps:
            gaps[rows.to(gaps.device)] = cross.to(gaps.device, gaps.dtype)
        kept = select_by_gap(gaps, num_keep)
        self._log_gaps(gaps, kept, sources, loss_mask)
        if self._diagnostics_due():
            self._log_coherence_gain(input_ids, attention_mask, loss_mask, teacher_hidden, sources, kept, served)

        output = subset_batch(output, kept, size)
        if teacher_hidden is not None:
            output["teacher_hidden_states"] = teacher_hidden[kept.to(teacher_hidden.device)]
        if served is not None:  # the served teachers' scores travel with the kept rows: no second request
            output.update(zip(SCORE_KEYS, served.rows(kept).tensors()))
        if self.pad_to_multiple_of is None:  # drop the padding columns no kept sample needs
            first = int(output["prompt_mask"].any(0).nonzero().min())
            last = int(output["completion_mask"].any(0).nonzero().max()) + 1
            output["prompt_ids"], output["prompt_mask"] = (
                output["prompt_ids"][:, first:],
                output["prompt_mask"][:, first:],
            )
            for key in ("completion_ids", "completion_mask", "tool_mask", "teacher_hidden_states", *SCORE_KEYS):
                if key in output:
                    output[key] = output[key][:, :last]
        kept_mask = (
            output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        )
        # the loss is normalised over the kept tokens
        output["num_items_in_batch"] = self.accelerator.gather(kept_mask.sum()).sum()
        return output

    def _diagnostics_due(self) -> bool:
        every = self.args.gradient_coherence_every
        return (
            bool(every)
            and self.model.training
            and not self._gradients_unreachable
            and not self.bridges
            and self.state.global_step % every == 0
        )

    def _log_coherence_gain(
        self, input_ids, attention_mask, loss_mask, teacher_hidden, sources, kept, served=None
    ) -> None:
        """Logs `coherence/full`, `coherence/selected` and `gcg` (see `coherence.py`) on the current generation batch.

        Per-sample gradient `g_i` = gradient of sample i's summed per-token divergence (its share of the loss, up to the
        common token normalisation) with respect to [`coherence_parameters`]. The student runs one extra forward with
        gradients over the `B/ρ` samples (in micro-batches of `per_device_train_batch_size`), one backward through the
        head to that module's output per micro-batch, and one through the module per sample (`per_sample_gradients`);
        `coherence/seconds` is the time this takes.
        """
        start = time.perf_counter()
        student = self.accelerator.unwrap_model(self.model)
        params = [p for _, p in coherence_parameters(student)]
        module = coherence_module(student)
        head = LMHead.of(student)
        chunk = self.args.per_device_train_batch_size
        grads = []
        for begin in range(0, len(sources), chunk):
            rows = slice(begin, begin + chunk)
            with torch.enable_grad(), recorded_outputs(module) as outputs:
                hidden = self._get_last_hidden_state(student, input_ids[rows], attention_mask[rows], loss_mask.size(1))
                losses = self._per_sample_divergence(
                    hidden,
                    head,
                    None if teacher_hidden is None else teacher_hidden[rows],
                    loss_mask[rows],
                    sources[rows],
                    None if served is None else served.rows(torch.arange(len(sources))[rows]),
                )
                grads.append(per_sample_gradients(losses, params, outputs))
        grads = torch.cat(grads)
        kept = kept.to(grads.device)
        # Coh(A) = ‖Σ g_i‖ / Σ ‖g_i‖; GCG = (Coh(selected) − Coh(full)) / Coh(full)   (docs/methods.md §4)
        local = torch.stack([coherence(grads), coherence(grads[kept]), coherence_gain(grads, kept)])
        full, selected, gain = (
            self.accelerator.gather(local.reshape(1, 3).to(self.accelerator.device)).mean(0).tolist()
        )
        metrics = self._metrics["train"]
        metrics["coherence/full"].append(full)
        metrics["coherence/selected"].append(selected)
        metrics["gcg"].append(gain)
        metrics["coherence/seconds"].append(time.perf_counter() - start)

    def _per_sample_divergence(
        self, student_hidden, student_head, teacher_hidden, loss_mask, sources, served=None
    ) -> torch.Tensor:
        """`(B,)` summed per-token divergence of each sample against its source's teacher (gradients flow)."""
        device = student_head.weight.device
        student_hidden, loss_mask = student_hidden.to(device), loss_mask.to(device)
        losses = torch.zeros(student_hidden.size(0), device=device, dtype=torch.float32)
        for name, rows in teacher_rows(self.routing, self.source_names, sources):
            rows = rows.to(device)
            if isinstance(self.teachers[name], ServedTeacher):
                scores = served.rows(rows)
                divergence, _ = topk_tail_generalized_jsd(
                    student_hidden[rows], student_head, scores.topk_ids, scores.topk_logprobs, loss_mask[rows],
                    self.beta, self.temperature,
                )  # fmt: skip
                losses = losses.index_add(0, rows, divergence.sum(-1))
                continue
            teacher_head = LMHead.of(self.accelerator.unwrap_model(self.teachers[name]))
            divergence, _ = generalized_jsd(
                student_hidden[rows],
                student_head,
                teacher_hidden[rows.to(teacher_hidden.device), :, : self._teacher_width[name]].to(device),
                teacher_head,
                loss_mask[rows],
                self.beta,
                self.temperature,
            )
            losses = losses.index_add(0, rows, divergence.sum(-1))
        return losses

    def _log_gaps(self, gaps, kept, sources, loss_mask) -> None:
        metrics = self._metrics["train"]
        is_kept = torch.zeros(len(sources), dtype=torch.bool)
        is_kept[kept] = True
        source_ids = torch.tensor([self.source_names.index(s) for s in sources])
        tokens = loss_mask.sum(-1).float().cpu()
        local = torch.stack([gaps.float().cpu(), is_kept.float(), source_ids.float(), tokens], dim=1)
        table = self.accelerator.gather(local.to(self.accelerator.device)).cpu()
        all_gaps, all_kept, all_sources, all_tokens = table.unbind(1)
        metrics["selection/kept_fraction"].append(all_kept.mean().item())
        metrics["selection/kept_token_fraction"].append(
            ((all_tokens * all_kept).sum() / all_tokens.sum().clamp(min=1)).item()
        )
        metrics["gap/kept"].append(all_gaps[all_kept.bool()].mean().item())
        for index, name in enumerate(self.source_names):
            in_source = all_sources == index
            if in_source.any():
                metrics[f"gap/{name}"].append(all_gaps[in_source].mean().item())

    # ------------------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, divergences = compute_distillation_loss(self, model, inputs, num_items_in_batch, self._compute_loss)
        if len(self.teacher_names) > 1:  # with one teacher the loss is the token-mean divergence: logged as `loss`
            self._log_divergences(divergences)
        return (loss, None) if return_outputs else loss

    def _log_divergences(self, divergences: dict) -> None:
        """Logs `divergence/<teacher>`, the token-mean divergence to each teacher over all processes, from the
        `(sum, tokens)` per teacher that [`_compute_loss`] returns (a teacher absent from this process counts 0)."""
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        zero = torch.zeros((), device=device)
        local = torch.stack(
            [
                torch.stack([s.to(device).float(), n.to(device).float()])
                for s, n in (divergences.get(name, (zero, zero)) for name in self.teacher_names)
            ]
        )
        totals = self.accelerator.gather(local).view(-1, len(self.teacher_names), 2).sum(0)
        for name, (div_sum, count) in zip(self.teacher_names, totals.tolist()):
            if count > 0:
                self._metrics[mode][f"divergence/{name}"].append(div_sum / count)

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """The divergence of each row to its own teacher, summed over the micro-batch.

        Returns `(loss, entropy_sum, num_valid_tokens, divergences)`: TRL's `_compute_loss` triple, and
        `divergences`, per teacher of this micro-batch, `(summed divergence, loss tokens)`, which `compute_loss` hands
        to `_log_divergences`. A subclass overriding this hook returns the same four values.
        """
        if any(key in inputs for key in MULTIMODAL_KEYS):
            if len(self.teacher_names) > 1 or "teacher_hidden_states" in inputs:
                raise ValueError("Multimodal prompts are supported with one teacher and `rho=1.0` only.")
            return (*super()._compute_loss(unwrapped_student, inputs, num_items_in_batch), {})
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = (
            inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        )
        logits_to_keep = inputs["completion_ids"].size(1)
        sources = inputs.get("sources") or [self._default_source] * input_ids.size(0)

        student_hidden = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, logits_to_keep)
        student_head = LMHead.of(unwrapped_student)
        device = student_head.weight.device
        student_hidden, loss_mask = student_hidden.to(device), loss_mask.to(device)
        total = student_hidden.new_zeros((), dtype=torch.float32)
        entropy_sum = total.clone()
        divergences = {}
        for name, rows in self._teacher_rows(sources):
            if len(rows) == input_ids.size(0):  # the whole micro-batch: no row copies

                def take(tensor):
                    return tensor

            else:
                run = rows if len(rows) else torch.zeros(1, dtype=torch.long)  # lockstep dummy row, dropped

                def take(tensor, run=run):
                    return tensor[run.to(tensor.device)]

            if name in self.bridges:
                divergence, entropy = self._cross_divergence(
                    name, inputs, rows, student_hidden, student_head, loss_mask
                )
                if divergence is None:
                    continue
                total = total + divergence.sum()
                entropy_sum = entropy_sum + entropy.sum()
                divergences[name] = (divergence.detach().sum(), take(loss_mask).sum())
                continue
            if isinstance(self.teachers[name], ServedTeacher):
                if not len(rows):
                    continue
                divergence, entropy = self._served_divergence(
                    name, inputs, rows, take, student_hidden, student_head, loss_mask
                )
                total = total + divergence.sum()
                entropy_sum = entropy_sum + entropy.sum()
                divergences[name] = (divergence.detach().sum(), take(loss_mask).sum())
                continue
            if "teacher_hidden_states" in inputs:  # cached by the gap scoring: no second teacher pass
                teacher_hidden = take(inputs["teacher_hidden_states"])[..., : self._teacher_width[name]]
            else:
                teacher_hidden = self._teacher_hidden(name, take(input_ids), take(attention_mask), logits_to_keep)
            if not len(rows):
                continue
            teacher_head = LMHead.of(self.accelerator.unwrap_model(self.teachers[name]))
            # Under ZeRO-3 the heads are shards outside their model's forward: gather them so the vocabularies can be
            # compared (the chunked kernel would gather them anyway, inside).
            heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
            with maybe_gather_lm_head_ctx(*heads):
                # generalised JSD_β per token (β = 1: reverse KL, the paper's loss), chunked over tokens and vocabulary
                divergence, entropy = generalized_jsd(
                    take(student_hidden),
                    student_head,
                    teacher_hidden.to(device),
                    teacher_head,
                    take(loss_mask),
                    self.beta,
                    self.temperature,
                )
            total = total + divergence.sum()
            entropy_sum = entropy_sum + entropy.sum()
            divergences[name] = (divergence.detach().sum(), take(loss_mask).sum())
        n_valid = loss_mask.sum()
        return token_mean_loss(total, n_valid, num_items_in_batch), entropy_sum.detach(), n_valid, divergences

    def _served_divergence(self, name, inputs, rows, take, student_hidden, student_head, loss_mask):
        """Per-token top-k + tail divergence to served teacher `name` on rows `rows` (see
        [`~trl_distill.core.divergence.topk_tail_generalized_jsd`]), from the scores cached by gap selection or, without
        them, from a request now."""
        if SCORE_KEYS[0] in inputs:
            scores = TeacherScores(*(take(inputs[key]) for key in SCORE_KEYS))
        else:
            scores = self._served_scores(name, inputs, None if len(rows) == loss_mask.size(0) else rows)
        with maybe_gather_lm_head_ctx(student_head.weight, student_head.bias):
            return topk_tail_generalized_jsd(
                take(student_hidden), student_head, scores.topk_ids, scores.topk_logprobs, take(loss_mask),
                self.beta, self.temperature,
            )  # fmt: skip

    # ------------------------------------------------------------------------------------------- diagnostics
    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        every = self.args.gradient_coherence_every
        if every and self._step % self.args.gradient_accumulation_steps == 1 % self.args.gradient_accumulation_steps:
            self._remember_batches(self._buffered_inputs[0])
            if self.state.global_step % every == 0:
                self._log_gradient_coherence()
        return output

    def _remember_batches(self, batch: dict) -> None:
        sources = batch["sources"]
        for name in set(sources):
            rows = torch.tensor([i for i, s in enumerate(sources) if s == name], dtype=torch.long)
            self._latest_batches[name] = subset_batch(batch, rows, len(sources))

    def _log_gradient_coherence(self) -> None:
        if self._gradients_unreachable:
            return
        names = (self.args.recovery_source, self.args.review_source)
        if not all(name in self._latest_batches for name in names):
            return
        student = self.accelerator.unwrap_model(self.model)
        params = [p for p in student.parameters() if p.requires_grad]
        recovery, review = (self._latest_batches[name] for name in names)
        # Under FSDP each process holds a shard of every gradient: the sums are summed over processes, and every
        # process gets the cosine of the whole gradient. Otherwise (DDP, ZeRO-1/2, one process) each process holds its
        # whole gradient, of its own batch: its cosine is taken alone, and the gather averages the processes' cosines.
        coherence = streamed_gradient_coherence(
            lambda: self._compute_loss(student, recovery, None)[0],
            lambda: self._compute_loss(student, review, None)[0],
            params,
            sharded=self.is_fsdp_enabled,
        )
        coherence = self.accelerator.gather(coherence.reshape(1).to(self.accelerator.device)).mean().item()
        self._metrics["train"]["grad_coherence"].append(coherence)


def _hidden_size(model) -> int:
    return int(full_shape(model.get_output_embeddings().weight)[-1])
