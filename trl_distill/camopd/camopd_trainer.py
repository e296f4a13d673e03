"""CaMOPD: Counteraction-Aware Multi-Teacher On-Policy Distillation (arXiv 2605.27115, docs/methods.md §4)."""

import textwrap
import time
from collections.abc import Callable

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from torch.utils.data import Sampler
from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin, TrainerCallback
from trl import DistillationTrainer
from trl.trainer.utils import RepeatSampler, maybe_gather_lm_head_ctx

from ..core.cross_tokenizer import cross_tokenizer_divergence, span_gap, span_side
from ..core.data import check_local_path
from ..core.divergence import (
    LMHead,
    compute_distillation_loss,
    generalized_jsd,
    token_mean_loss,
    topk_tail_generalized_jsd,
)
from ..core.generation import stop_token_ids
from ..core.served_teacher import SCORE_KEYS, ServedTeacher, TeacherScores
from ..core.teachers import check_tokenizer_fits
from . import named_teachers
from .batch import (
    drop_padding_columns,
    lockstep_rows,
    loss_token_mask,
    model_inputs,
    row_taker,
    sequences,
    subset_batch,
)
from .camopd_config import CaMOPDConfig
from .coherence import gradient_coherence, selection_coherence, streamed_gradient_coherence
from .gap import gap, pool_size, resolve_rho, sampled_token_logprobs, select_by_gap
from .routing import SOURCE_COLUMN, combine_sources, named_sources, route_sources, tag_eval_sources, teacher_rows
from .schedule import AlternatingSourceSampler, alternating_pattern, check_schedule_sources


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
      forward that scores the gap is cached and reused by the loss, so a teacher runs once per sample (a teacher
      with its own tokenizer runs again on the kept rows: its aligned spans are not cached yet);
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
        args = self._camopd_args(model, args)
        if isinstance(model, str):
            check_local_path(model, "model")  # before the hub client turns a missing path into a repo-id error
        teacher_specs = named_teachers.teacher_specs(teacher_model, args)
        self._tokenizer_specs = named_teachers.teacher_tokenizer_specs(teacher_tokenizers, args, teacher_specs)
        sources = named_sources(train_dataset)
        self._route(list(sources), list(teacher_specs), args)
        self.rho = resolve_rho(args.rho, len(sources))
        if args.rho is None:
            self._explain_auto_rho(len(sources))
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
        self._setup_teachers(teacher_specs, args)
        self._setup_gap_selection(args)
        # trainer state across steps: the latest micro-batch of each source, kept for the recovery/review cosine
        # (`_log_gradient_coherence` runs every `gradient_coherence_every` steps on the batches last seen)
        self._latest_batches: dict[str, dict] = {}
        self._warn_unlogged_diagnostics(args)

    # ----------------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _camopd_args(model, args: CaMOPDConfig | None) -> CaMOPDConfig:
        """`args`, or a default config named after the model; refuses a config of another trainer."""
        if args is None:
            model_name = model if isinstance(model, str) else model.config.name_or_path or ""
            return CaMOPDConfig(f"{model_name.split('/')[-1]}-CaMOPD")
        if not isinstance(args, CaMOPDConfig):
            raise TypeError(
                f"CaMOPDTrainer needs a `CaMOPDConfig`, got {type(args).__name__}. `CaMOPDConfig` accepts every "
                "`DistillationConfig` field; build it with the same arguments (with one prompt source it then trains "
                "exactly like `DistillationTrainer`)."
            )
        return args

    def _route(self, source_names: list[str], teacher_names: list[str], args: CaMOPDConfig) -> None:
        """Routes every prompt source to the teacher that corrects it (`self.routing`), checked against the schedule."""
        self.source_names = source_names
        self.teacher_names = teacher_names
        self.routing = route_sources(self.source_names, self.teacher_names, args.source_teachers)
        unused = sorted(set(self.teacher_names) - set(self.routing.values()))
        if unused and source_names:
            logger.warning(f"Teachers {unused} correct no prompt source and will only take memory.")
        check_schedule_sources(args.schedule, self.source_names, args.recovery_source, args.review_source)

    def _explain_auto_rho(self, num_sources: int) -> None:
        """Says which ρ `rho=None` (auto) resolved to, and how to change it."""
        if self.rho == 1.0:
            logger.warning(
                "CaMOPD: one prompt source and `rho=None` (auto), so rho = 1: no gap-based selection, this trains "
                "like trl.DistillationTrainer. Set `rho` (e.g. 0.5) to select samples by gap."
            )
        else:
            logger.warning(
                f"CaMOPD: {num_sources} prompt sources and `rho=None` (auto), so rho = {self.rho}: gap-based "
                f"selection keeps the largest-gap {self.rho:.0%} of the generated samples. Set `rho=1.0` to "
                "disable it."
            )

    def _setup_teachers(self, teacher_specs: dict, args: CaMOPDConfig) -> None:
        """Loads the teachers (`self.teachers`) and the bridges of those with their own tokenizer (`self.bridges`)."""
        self.teachers = named_teachers.load_teachers(
            teacher_specs, args, self._tokenizer_specs, self.model, self._tokenizer, self.accelerator
        )
        stops = stop_token_ids(self.accelerator.unwrap_model(self.model), self._tokenizer)
        self.bridges = named_teachers.build_bridges(
            self._tokenizer_specs, teacher_specs, self.teachers, self._tokenizer, stops, self.accelerator,
            trust_remote_code=args.trust_remote_code,
        )  # fmt: skip
        self._teacher_width = {
            name: named_teachers.hidden_size(self.accelerator.unwrap_model(teacher))
            for name, teacher in self.teachers.items()
            if not isinstance(teacher, ServedTeacher)
        }
        local = [name for name in self.teacher_names if name in self._teacher_width]
        # what DistillationTrainer's own paths read (the multimodal one); None when every teacher is served
        self.teacher_model = self.teachers[local[0]] if local else None

    def _setup_gap_selection(self, args: CaMOPDConfig) -> None:
        """Generation batch sizes: `_batch_local` samples trained per process and step, `_pool_local = ceil(B/ρ)`
        generated, checked against the train dataset."""
        self._batch_local = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._pool_local = pool_size(self._batch_local, self.rho)
        if self._pool_local > self._batch_local and isinstance(self.train_dataset, IterableDataset):
            raise ValueError(
                "Gap-based selection (rho < 1) needs a map-style `train_dataset`; convert the iterable dataset or set "
                "`rho=1.0`."
            )
        self._check_generation_batch_fits()

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

    def _warn_unlogged_diagnostics(self, args: CaMOPDConfig) -> None:
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

    def _source_of(self, example: dict) -> str:
        source = example.get(SOURCE_COLUMN) or self._default_source
        if source not in self.routing:
            raise ValueError(
                f"A prompt has source {source!r}, which has no teacher; the sources are {self.source_names}."
            )
        return source

    def _teacher_hidden(self, name: str, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
        teacher = self.teachers[name]
        teacher.eval()
        unwrapped = self.accelerator.unwrap_model(teacher)
        with torch.no_grad():
            return self._forward_redirection(
                teacher, unwrapped, self._get_last_hidden_state, unwrapped, input_ids, attention_mask, logits_to_keep
            )

    def _teacher_head(self, name: str) -> LMHead:
        return LMHead.of(self.accelerator.unwrap_model(self.teachers[name]))

    def _served_scores(self, name: str, output: dict, rows: torch.Tensor | None = None) -> TeacherScores:
        """Served teacher `name`'s scores of the batch's rows `rows` (all when `None`); raises when the server fails
        after its retries, so that no step trains on a failed response."""
        return self.teachers[name].score_completions(*sequences(output, rows), temperature=self.temperature)

    def _align(self, name: str, batch: dict, rows: torch.Tensor | None = None):
        """The teacher `name`'s view of the batch's rows `rows` (all when `None`), aligned with the student's."""
        prompt_ids, prompt_mask, completion_ids, completion_mask = sequences(batch, rows)
        prompts = batch["prompts"] if rows is None else [batch["prompts"][i] for i in rows.tolist()]
        student_prompts = [ids[mask != 0].tolist() for ids, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        return self.bridges[name].align(prompts, completion_ids, completion_mask, student_prompts)

    def _aligned_teacher_hidden(self, name: str, aligned) -> torch.Tensor:
        device = self.accelerator.device
        return self._teacher_hidden(
            name, aligned.input_ids.to(device), aligned.attention_mask.to(device), aligned.logits_to_keep
        )

    def _log_misaligned(self, aligned) -> None:
        """Counts rows whose text did not re-tokenize to the same bytes (trained on nothing), and warns."""
        bad = int(aligned.misaligned.sum())
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["cross_tokenizer/misaligned_rows"].append(float(bad))
        if bad:
            logger.warning(f"{bad} rollouts did not re-tokenize to the same bytes for a teacher; they add no loss.")

    # ------------------------------------------------------------------------------ generation and gap selection
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        sources = [self._source_of(x) for x in inputs]
        output = super()._generate_and_score_completions(inputs)
        output["sources"] = sources
        if self.bridges:  # cross-tokenizer teachers re-render the conversation in their own template
            output["prompts"] = [x["prompt"] for x in inputs]
        if not self.model.training:  # eval batches follow no schedule and select nothing
            return output
        self._log_source_shares(sources)
        if len(sources) > self._batch_local:
            output = self._select_by_gap(output, self._batch_local)
        return output

    def _log_source_shares(self, sources: list[str]) -> None:
        """Logs `schedule/<source>`, one value per optimizer step (one generation per step): averaged over the logging
        window, the share of its generated samples from each source (under the alternating schedule, the fraction of
        its optimizer steps that drew from the source)."""
        counts = torch.tensor([sources.count(s) for s in self.source_names], device=self.accelerator.device)
        counts = self.accelerator.gather(counts).view(-1, len(self.source_names)).sum(0).float()
        for name, share in zip(self.source_names, (counts / counts.sum()).tolist()):
            self._metrics["train"][f"schedule/{name}"].append(share)

    def _select_by_gap(self, output: dict, num_keep: int) -> dict:
        """Scores every generated sample's gap, keeps the `num_keep` largest, caches their teacher hidden states."""
        if any(k in output for k in MULTIMODAL_KEYS):
            raise ValueError("Gap-based selection (rho < 1) supports text-only prompts; set `rho=1.0` for images.")
        sources = output["sources"]
        input_ids, attention_mask, loss_mask = model_inputs(output)
        gaps, teacher_hidden, served = self._score_gaps(output, input_ids, attention_mask, loss_mask)
        kept = select_by_gap(gaps, num_keep)
        self._log_gaps(gaps, kept, sources, loss_mask)
        if self._diagnostics_due():
            self._log_coherence_gain(input_ids, attention_mask, loss_mask, teacher_hidden, sources, kept, served)
        return self._keep_selected(output, kept, teacher_hidden, served)

    @torch.no_grad()
    def _score_gaps(self, output: dict, input_ids, attention_mask, loss_mask) -> tuple:
        """Per-sample gap of every row to its own teacher, and what the teacher passes leave for the loss.

        Returns `(gaps, teacher_hidden, served)`: the `(B,)` gaps; the local teachers' hidden states, one `(B, C, H)`
        tensor padded to the widest teacher (`None` without local teachers); the served teachers' scores (`None`
        without served teachers). A cross-tokenizer teacher's gap is taken on aligned spans, and it runs again in the
        loss on the kept rows.
        """
        sources, size = output["sources"], len(output["sources"])
        completion_ids, logits_to_keep = output["completion_ids"], output["completion_ids"].size(1)
        student = self.accelerator.unwrap_model(self.model)
        student_head = LMHead.of(student)
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
            student_hidden, student_head, completion_ids, loss_mask, self.temperature
        )
        teacher_logprobs = torch.zeros_like(student_logprobs)
        teacher_hidden = served = None
        cross_gaps = []
        for name, rows in self._teacher_rows(sources):
            if name in self.bridges:
                gaps = self._cross_gap(name, output, lockstep_rows(rows), student_hidden, student_head)
                cross_gaps.append((rows, gaps[: len(rows)]))
            elif isinstance(self.teachers[name], ServedTeacher):
                if len(rows):
                    scores = self._served_scores(name, output, rows)
                    teacher_logprobs[rows.to(teacher_logprobs.device)] = scores.sampled_logprobs.to(
                        teacher_logprobs.device
                    )
                    served = TeacherScores.merge(served, scores, rows, size)
            else:
                run = lockstep_rows(rows).to(input_ids.device)
                hidden = self._teacher_hidden(name, input_ids[run], attention_mask[run], logits_to_keep)
                if len(rows):
                    teacher_logprobs[run] = sampled_token_logprobs(
                        hidden, self._teacher_head(name), completion_ids[run], loss_mask[run], self.temperature
                    ).to(teacher_logprobs.device)
                    teacher_hidden = self._cache_teacher_hidden(teacher_hidden, hidden, run, size)
        # gap = (1/n) Σ_t |log T(y_t) − log S(y_t)|  (docs/methods.md §4)
        gaps = gap(student_logprobs, teacher_logprobs, loss_mask)
        for rows, cross in cross_gaps:
            gaps[rows.to(gaps.device)] = cross.to(gaps.device, gaps.dtype)
        return gaps, teacher_hidden, served

    def _cross_gap(self, name: str, output: dict, rows: torch.Tensor, student_hidden, student_head) -> torch.Tensor:
        """Per-row gap to cross-tokenizer teacher `name` on aligned spans (see [`span_gap`]), for rows `rows`."""
        aligned = self._align(name, output, rows)
        teacher_hidden = self._aligned_teacher_hidden(name, aligned)
        teacher = span_side(teacher_hidden, self._teacher_head(name), aligned.completion_ids, aligned.teacher_spans,
                            aligned.num_spans, self.temperature)  # fmt: skip
        rows_s = rows.to(student_hidden.device)
        student = span_side(student_hidden[rows_s], student_head, output["completion_ids"][rows_s],
                            aligned.student_spans, aligned.num_spans, self.temperature)  # fmt: skip
        self._log_misaligned(aligned)
        return span_gap(student, teacher, aligned.num_spans)

    def _cache_teacher_hidden(self, cache, hidden: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
        """`hidden` written to the rows `rows` of `cache`: one tensor for all teachers, padded to the widest hidden
        size (created at the first teacher)."""
        if cache is None:
            cache = hidden.new_zeros(size, hidden.size(1), max(self._teacher_width.values()))
        cache[rows, :, : hidden.size(-1)] = hidden.to(cache.dtype)
        return cache

    def _keep_selected(self, output: dict, kept: torch.Tensor, teacher_hidden, served) -> dict:
        """The kept rows of the generation batch, with their teachers' cached outputs (no second teacher pass), and
        the loss normalised over the kept tokens."""
        output = subset_batch(output, kept, len(output["sources"]))
        if teacher_hidden is not None:
            output["teacher_hidden_states"] = teacher_hidden[kept.to(teacher_hidden.device)]
        if served is not None:  # the served teachers' scores travel with the kept rows: no second request
            output.update(zip(SCORE_KEYS, served.rows(kept).tensors()))
        if self.pad_to_multiple_of is None:  # drop the padding columns no kept sample needs
            per_token = ("completion_ids", "completion_mask", "tool_mask", "teacher_hidden_states", *SCORE_KEYS)
            output = drop_padding_columns(output, per_token)
        output["num_items_in_batch"] = self.accelerator.gather(loss_token_mask(output).sum()).sum()
        return output

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
        input_ids, attention_mask, loss_mask = model_inputs(inputs)
        sources = inputs.get("sources") or [self._default_source] * input_ids.size(0)
        logits_to_keep = inputs["completion_ids"].size(1)
        student_hidden = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, logits_to_keep)
        student_head = LMHead.of(unwrapped_student)
        device = student_head.weight.device
        student_hidden, loss_mask = student_hidden.to(device), loss_mask.to(device)
        total = student_hidden.new_zeros((), dtype=torch.float32)
        entropy_sum = total.clone()
        divergences = {}
        for name, rows in self._teacher_rows(sources):
            take = row_taker(rows, input_ids.size(0))
            per_token = self._divergence_to(name, inputs, rows, take, student_hidden, student_head, loss_mask)
            if per_token is None:
                continue
            divergence, entropy = per_token
            total = total + divergence.sum()
            entropy_sum = entropy_sum + entropy.sum()
            divergences[name] = (divergence.detach().sum(), take(loss_mask).sum())
        n_valid = loss_mask.sum()
        return token_mean_loss(total, n_valid, num_items_in_batch), entropy_sum.detach(), n_valid, divergences

    def _divergence_to(self, name, inputs, rows, take, student_hidden, student_head, loss_mask):
        """Per-token `(divergence, entropy)` of the rows `rows` (`take` takes them) to teacher `name`, the way its kind
        allows: on aligned spans (own tokenizer), top-k + tail (served) or over the full vocabulary (local); `None` for
        no rows."""
        if name in self.bridges:
            return self._cross_divergence(name, inputs, rows, take, student_hidden, student_head, loss_mask)
        if isinstance(self.teachers[name], ServedTeacher):
            return self._served_divergence(name, inputs, rows, take, student_hidden, student_head, loss_mask)
        return self._local_divergence(name, inputs, rows, take, student_hidden, student_head, loss_mask)

    def _local_divergence(self, name, inputs, rows, take, student_hidden, student_head, loss_mask):
        """Per-token divergence and entropy to local teacher `name` on rows `rows`, from the hidden states cached by
        gap selection or, without them, from a teacher pass now; `None` for no rows (the teacher still runs one row
        under DeepSpeed, in lockstep)."""
        if "teacher_hidden_states" in inputs:  # cached by the gap scoring: no second teacher pass
            teacher_hidden = take(inputs["teacher_hidden_states"])[..., : self._teacher_width[name]]
        else:
            input_ids, attention_mask, _ = model_inputs(inputs)
            logits_to_keep = inputs["completion_ids"].size(1)
            teacher_hidden = self._teacher_hidden(name, take(input_ids), take(attention_mask), logits_to_keep)
        if not len(rows):
            return None
        return self._token_divergence(name, take(student_hidden), student_head, teacher_hidden, take(loss_mask))

    def _token_divergence(self, name, student_hidden, student_head, teacher_hidden, loss_mask):
        """Per-token `(divergence, entropy)` to local teacher `name` from both models' final hidden states."""
        teacher_head = self._teacher_head(name)
        # Under ZeRO-3 the heads are shards outside their model's forward: gather them so the vocabularies can be
        # compared (the chunked kernel would gather them anyway, inside).
        heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
        with maybe_gather_lm_head_ctx(*heads):
            # generalised JSD_β per token (β = 1: reverse KL, the paper's loss), chunked over tokens and vocabulary
            return generalized_jsd(
                student_hidden,
                student_head,
                teacher_hidden.to(student_head.weight.device),
                teacher_head,
                loss_mask,
                self.beta,
                self.temperature,
            )

    def _served_divergence(self, name, inputs, rows, take, student_hidden, student_head, loss_mask):
        """Per-token divergence and entropy to served teacher `name` on rows `rows`, from the scores cached by gap
        selection or, without them, from a request now; `None` for no rows."""
        if not len(rows):
            return None
        if SCORE_KEYS[0] in inputs:
            scores = TeacherScores(*(take(inputs[key]) for key in SCORE_KEYS))
        else:
            scores = self._served_scores(name, inputs, None if len(rows) == loss_mask.size(0) else rows)
        return self._topk_divergence(take(student_hidden), student_head, scores, take(loss_mask))

    def _topk_divergence(self, student_hidden, student_head, scores: TeacherScores, loss_mask):
        """Per-token `(divergence, entropy)` to a served teacher's top-k scores (see
        [`~trl_distill.core.divergence.topk_tail_generalized_jsd`])."""
        with maybe_gather_lm_head_ctx(student_head.weight, student_head.bias):
            return topk_tail_generalized_jsd(
                student_hidden, student_head, scores.topk_ids, scores.topk_logprobs, loss_mask,
                self.beta, self.temperature,
            )  # fmt: skip

    def _cross_divergence(self, name, inputs, rows, take, student_hidden, student_head, loss_mask):
        """Per-token divergence and entropy to cross-tokenizer teacher `name` on rows `rows` (see
        [`~trl_distill.core.cross_tokenizer.cross_tokenizer_divergence`]); `None` for no rows (the teacher still runs
        one row under DeepSpeed, in lockstep)."""
        whole = len(rows) == loss_mask.size(0)
        aligned = self._align(name, inputs, None if whole else lockstep_rows(rows))
        teacher_hidden = self._aligned_teacher_hidden(name, aligned)
        if not len(rows):
            return None
        self._log_misaligned(aligned)
        teacher_head = self._teacher_head(name)
        args = self.args
        heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
        with maybe_gather_lm_head_ctx(*heads):
            return cross_tokenizer_divergence(
                take(student_hidden), student_head, teacher_hidden, teacher_head, take(inputs["completion_ids"]),
                aligned, take(loss_mask), self.bridges[name], self.beta, self.temperature,
                args.cross_tokenizer_uld_weight, args.cross_tokenizer_uld_top_k,
            )  # fmt: skip

    # ----------------------------------------------------------------------------------------------- diagnostics
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
        head = LMHead.of(student)

        def per_sample_losses(rows: slice) -> torch.Tensor:
            hidden = self._get_last_hidden_state(student, input_ids[rows], attention_mask[rows], loss_mask.size(1))
            return self._per_sample_divergence(
                hidden,
                head,
                None if teacher_hidden is None else teacher_hidden[rows],
                loss_mask[rows],
                sources[rows],
                None if served is None else served.rows(torch.arange(len(sources))[rows]),
            )

        local = selection_coherence(
            student, per_sample_losses, len(sources), kept, self.args.per_device_train_batch_size
        )
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
                divergence, _ = self._topk_divergence(
                    student_hidden[rows], student_head, served.rows(rows), loss_mask[rows]
                )
            else:
                teacher = teacher_hidden[rows.to(teacher_hidden.device), :, : self._teacher_width[name]]
                divergence, _ = self._token_divergence(
                    name, student_hidden[rows], student_head, teacher, loss_mask[rows]
                )
            losses = losses.index_add(0, rows, divergence.sum(-1))
        return losses
