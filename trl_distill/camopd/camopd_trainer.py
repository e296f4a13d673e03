"""CaMOPD: Counteraction-Aware Multi-Teacher On-Policy Distillation (arXiv 2605.27115, METHODS.md §4)."""

import textwrap
from collections.abc import Callable, Mapping

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset, concatenate_datasets
from torch.utils.data import Sampler
from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin, TrainerCallback
from trl import DistillationTrainer
from trl.models import prepare_deepspeed
from trl.trainer.utils import RepeatSampler, create_model_from_path, get_config_model_id, maybe_gather_lm_head_ctx

from ..core.divergence import LMHead, generalized_jsd
from .camopd_config import CaMOPDConfig
from .gap import gap, pool_size, sampled_token_logprobs, select_by_gap
from .schedule import AlternatingSourceSampler, alternating_pattern


logger = get_logger(__name__)

SOURCE_COLUMN = "prompt_source"
DEFAULT_NAME = "default"
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


def route_sources(
    source_names: list[str], teacher_names: list[str], source_teachers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Maps every prompt source to the teacher that corrects it.

    Explicit `source_teachers` entries win; otherwise a source goes to the only teacher, or to the teacher of the same
    name. Unknown names raise an error that lists the known ones.

    Args:
        source_names (`list[str]`): names of the prompt sources.
        teacher_names (`list[str]`): names of the teachers.
        source_teachers (`Mapping[str, str]`, *optional*): explicit source → teacher entries.

    Returns:
        `dict[str, str]`: source name → teacher name.
    """
    source_teachers = dict(source_teachers or {})
    unknown_sources = sorted(set(source_teachers) - set(source_names))
    if unknown_sources:
        raise ValueError(
            f"`source_teachers` names prompt sources {unknown_sources} that were not given; the sources are "
            f"{sorted(source_names)} (the keys of `train_dataset`)."
        )
    unknown_teachers = sorted(set(source_teachers.values()) - set(teacher_names))
    if unknown_teachers:
        raise ValueError(
            f"`source_teachers` names teachers {unknown_teachers} that were not given; the teachers are "
            f"{sorted(teacher_names)} (the keys of `teacher_model` or `teacher_models`)."
        )
    routing = {}
    for source in source_names:
        if source in source_teachers:
            routing[source] = source_teachers[source]
        elif len(teacher_names) == 1:
            routing[source] = teacher_names[0]
        elif source in teacher_names:
            routing[source] = source
        else:
            raise ValueError(
                f"Prompt source {source!r} has no teacher: the teachers are {sorted(teacher_names)}. Name the source "
                f"after its teacher or set `source_teachers={{{source!r}: '<teacher name>'}}` in the config."
            )
    return routing


def _vocab_rows(model) -> int:
    # What the loss compares: the rows of the output projection (ZeRO-3 keeps the full shape in `ds_shape`).
    weight = model.get_output_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def _subset(batch: dict, rows: torch.Tensor, size: int) -> dict:
    """The rows `rows` of every per-sample entry (tensors and lists of length `size`) of a generation batch."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.size(0) == size:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


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
    - an optional gradient-coherence diagnostic `cos(∇L_recovery, ∇L_review)`.

    With one prompt source, one teacher and `rho=1.0` it trains exactly like [`~trl.DistillationTrainer`].

    Example:

    ```python
    >>> from trl_distill import CaMOPDConfig, CaMOPDTrainer

    >>> trainer = CaMOPDTrainer(
    ...     model="my-org/medical-7b",
    ...     teacher_model={"general": "Qwen/Qwen2.5-7B-Instruct", "domain": "my-org/medical-7b"},
    ...     args=CaMOPDConfig(output_dir="camopd", review_every=4, rho=0.5),
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
            `args.teacher_model_name_or_path`. Every teacher must share the student's vocabulary.
        args ([`CaMOPDConfig`], *optional*):
            Configuration; a default one is built when `None`.
        train_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`):
            One prompt dataset, or prompt sources by name (each with a `"prompt"` column), routed to teachers by
            `args.source_teachers`. A single source may also be an [`~datasets.IterableDataset`] when `rho=1.0`.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Evaluation prompts. A dict keyed by source names is routed like the training sources; with several
            teachers, a plain dataset needs a `"prompt_source"` column.
        processing_class, callbacks, optimizers, quantization_config, peft_config, tools:
            As for [`~trl.DistillationTrainer`].
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
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = CaMOPDConfig(f"{model_name.split('/')[-1]}-CaMOPD")
        elif not isinstance(args, CaMOPDConfig):
            raise TypeError(
                f"CaMOPDTrainer needs a `CaMOPDConfig`, got {type(args).__name__}. `CaMOPDConfig` accepts every "
                "`DistillationConfig` field; build it with the same arguments (add `rho=1.0` to train exactly like "
                "`DistillationTrainer`)."
            )

        teachers = self._load_teachers(teacher_model, args)
        sources = self._named_sources(train_dataset)
        self.source_names = list(sources)
        self.teacher_names = list(teachers)
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
        self._default_source = self.source_names[0] if len(self.source_names) == 1 else None
        combined, self._source_ranges = self._combine_sources(sources)
        eval_dataset = self._tag_eval_sources(eval_dataset)

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

        self._check_vocabularies(teachers)
        self._teacher_width = {name: _hidden_size(teacher) for name, teacher in teachers.items()}
        prepared: dict[int, torch.nn.Module] = {}
        self.teachers = {}
        for name, teacher in teachers.items():
            if id(teacher) not in prepared:  # one object serving several names is prepared once
                teacher.eval()
                if self.is_deepspeed_enabled:
                    prepared[id(teacher)] = prepare_deepspeed(teacher, self.accelerator)
                else:
                    prepared[id(teacher)] = self.accelerator.prepare_model(teacher, evaluation_mode=True)
            self.teachers[name] = prepared[id(teacher)]
        self.teacher_model = self.teachers[self.teacher_names[0]]  # what DistillationTrainer's own paths read

        self.rho = args.rho
        self._batch_local = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._pool_local = pool_size(self._batch_local, args.rho)
        if self._pool_local > self._batch_local and isinstance(self.train_dataset, IterableDataset):
            raise ValueError(
                "Gap-based selection (rho < 1) needs a map-style `train_dataset`; convert the iterable dataset or set "
                "`rho=1.0`."
            )
        self._pending_divergence: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._latest_batches: dict[str, dict] = {}
        if args.gradient_coherence_steps and self.is_deepspeed_enabled and args.deepspeed_plugin.zero_stage == 3:
            logger.warning("gradient_coherence_steps is ignored under DeepSpeed ZeRO-3 (gradients are partitioned).")

    # ----------------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _load_teachers(teacher_model, args: CaMOPDConfig) -> dict[str, PreTrainedModel]:
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
        per_teacher = args.teachers_init_kwargs or {}
        unknown = sorted(set(per_teacher) - set(teacher_model))
        if unknown:
            raise ValueError(
                f"`teachers_init_kwargs` names teachers {unknown} that were not given; the teachers are "
                f"{sorted(teacher_model)}."
            )
        teachers = {}
        for name, teacher in teacher_model.items():
            if not isinstance(teacher, str):
                if name in per_teacher:
                    raise ValueError(
                        f"`teachers_init_kwargs[{name!r}]` is set but teacher {name!r} is already instantiated."
                    )
                teachers[name] = teacher
                continue
            kwargs = {**(args.teacher_model_init_kwargs or {}), **per_teacher.get(name, {})}
            if args.teacher_model_revision is not None and len(teacher_model) == 1:
                kwargs.setdefault("revision", args.teacher_model_revision)
            if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
                kwargs["device_map"] = None
            if args.teacher_load_in_4bit:
                if not torch.cuda.is_available():
                    raise ValueError(
                        f"`teacher_load_in_4bit=True` needs a CUDA device (bitsandbytes 4-bit), but none is visible "
                        f"while loading teacher {name!r}. Unset it on CPU."
                    )
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
                )
                kwargs.setdefault("device_map", {"": args.distributed_state.local_process_index})
            kwargs.setdefault("trust_remote_code", args.trust_remote_code)
            teachers[name] = create_model_from_path(teacher, **kwargs)
        return teachers

    @staticmethod
    def _named_sources(train_dataset) -> dict:
        if train_dataset is None:
            return {}
        sources = dict(train_dataset) if isinstance(train_dataset, Mapping) else {DEFAULT_NAME: train_dataset}
        if not sources:
            raise ValueError("`train_dataset` is an empty dict; give at least one named prompt source.")
        for name, dataset in sources.items():
            if dataset.column_names is not None and "prompt" not in dataset.column_names:
                raise ValueError(
                    f"Prompt source {name!r} has no 'prompt' column (columns: {dataset.column_names}); on-policy "
                    "distillation generates from the prompts, so rename the prompt column to 'prompt'."
                )
            if len(sources) > 1 and isinstance(dataset, IterableDataset):
                raise ValueError(
                    f"Prompt source {name!r} is an IterableDataset; several sources need map-style datasets "
                    "(the schedule samples each one)."
                )
        return sources

    @staticmethod
    def _combine_sources(sources: dict) -> tuple:
        if len(sources) <= 1:
            return (next(iter(sources.values())) if sources else None), {
                name: range(len(ds)) if not isinstance(ds, IterableDataset) else None for name, ds in sources.items()
            }
        parts, ranges, start = [], {}, 0
        for name, dataset in sources.items():
            keep = [c for c in ("prompt", "image", "images") if c in dataset.column_names]
            part = dataset.select_columns(keep)
            if SOURCE_COLUMN in part.column_names:
                part = part.remove_columns(SOURCE_COLUMN)
            parts.append(part.add_column(SOURCE_COLUMN, [name] * len(part)))
            ranges[name] = range(start, start + len(part))
            start += len(part)
        try:
            combined = concatenate_datasets(parts)
        except ValueError as error:
            raise ValueError(
                f"The prompt sources {list(sources)} have different prompt formats ({[p.features['prompt'] for p in parts]}); "
                "give every source the same format (all conversational or all plain text)."
            ) from error
        return combined, ranges

    def _tag_eval_sources(self, eval_dataset):
        if eval_dataset is None:
            return None
        if isinstance(eval_dataset, Mapping):
            tagged = {}
            for name, dataset in eval_dataset.items():
                if name in self.routing and SOURCE_COLUMN not in dataset.column_names:
                    dataset = dataset.add_column(SOURCE_COLUMN, [name] * len(dataset))
                tagged[name] = dataset
            datasets = tagged.values()
            eval_dataset = tagged
        else:
            datasets = [eval_dataset]
        if self._default_source is None:
            for dataset in datasets:
                if SOURCE_COLUMN not in (dataset.column_names or []):
                    raise ValueError(
                        f"With several prompt sources, evaluation prompts must say which teacher to use: key "
                        f"`eval_dataset` by source name ({self.source_names}) or add a '{SOURCE_COLUMN}' column."
                    )
        return eval_dataset

    def _check_vocabularies(self, teachers: dict) -> None:
        student_rows = _vocab_rows(self.model)
        sizes = {name: _vocab_rows(teacher) for name, teacher in teachers.items()}
        if any(rows != student_rows for rows in sizes.values()):
            listing = "; ".join(
                f"teacher {name!r} ({get_config_model_id(teachers[name].config)}): {rows}"
                for name, rows in sizes.items()
            )
            raise ValueError(
                f"Every teacher must share the student's vocabulary: the loss compares full next-token distributions "
                f"over the output-embedding rows. Student ({get_config_model_id(self.model.config)}): {student_rows} "
                f"rows; {listing}. Use teachers with the student's tokenizer and the same output-embedding size "
                "(e.g. `resize_token_embeddings` to a common size), or GOLD for cross-tokenizer distillation."
            )

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
        for name in dict.fromkeys(self.routing[s] for s in self.source_names):
            rows = [i for i, source in enumerate(sources) if self.routing[source] == name]
            if rows or self.is_deepspeed_enabled:
                yield name, torch.tensor(rows, dtype=torch.long)

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
        mode = "train" if self.model.training else "eval"
        counts = torch.tensor([sources.count(s) for s in self.source_names], device=self.accelerator.device)
        counts = self.accelerator.gather(counts).view(-1, len(self.source_names)).sum(0).float()
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
            teacher_hidden = None
            for name, rows in self._teacher_rows(sources):
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

        # gap = (1/n) Σ_t |log T(y_t) − log S(y_t)|  (METHODS.md §4)
        gaps = gap(student_logprobs, teacher_logprobs, loss_mask)
        kept = select_by_gap(gaps, num_keep)
        self._log_gaps(gaps, kept, sources, loss_mask)

        output = _subset(output, kept, size)
        output["teacher_hidden_states"] = teacher_hidden[kept.to(teacher_hidden.device)]
        if self.pad_to_multiple_of is None:  # drop the padding columns no kept sample needs
            first = int(output["prompt_mask"].any(0).nonzero().min())
            last = int(output["completion_mask"].any(0).nonzero().max()) + 1
            output["prompt_ids"], output["prompt_mask"] = (
                output["prompt_ids"][:, first:],
                output["prompt_mask"][:, first:],
            )
            for key in ("completion_ids", "completion_mask", "tool_mask", "teacher_hidden_states"):
                if key in output:
                    output[key] = output[key][:, :last]
        kept_mask = (
            output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        )
        # the loss is normalised over the kept tokens
        output["num_items_in_batch"] = self.accelerator.gather(kept_mask.sum()).sum()
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
        self._pending_divergence = {}
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        zero = torch.zeros((), device=device)
        local = torch.stack(
            [
                torch.stack([s.to(device).float(), n.to(device).float()])
                for s, n in (self._pending_divergence.get(name, (zero, zero)) for name in self.teacher_names)
            ]
        )
        totals = self.accelerator.gather(local).view(-1, len(self.teacher_names), 2).sum(0)
        for name, (div_sum, count) in zip(self.teacher_names, totals.tolist()):
            if count > 0:
                self._metrics[mode][f"divergence/{name}"].append(div_sum / count)
        return result

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        if any(key in inputs for key in MULTIMODAL_KEYS):
            if len(self.teacher_names) > 1 or "teacher_hidden_states" in inputs:
                raise ValueError("Multimodal prompts are supported with one teacher and `rho=1.0` only.")
            return super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
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
        for name, rows in self._teacher_rows(sources):
            if len(rows) == input_ids.size(0):  # the whole micro-batch: no row copies

                def take(tensor):
                    return tensor

            else:
                run = rows if len(rows) else torch.zeros(1, dtype=torch.long)  # lockstep dummy row, dropped

                def take(tensor, run=run):
                    return tensor[run.to(tensor.device)]

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
            self._pending_divergence[name] = (divergence.detach().sum(), take(loss_mask).sum())
        n_valid = loss_mask.sum()
        if num_items_in_batch is None:
            loss = total / n_valid.clamp(min=1)
        else:
            loss = total / (
                num_items_in_batch.to(device) if isinstance(num_items_in_batch, torch.Tensor) else num_items_in_batch
            )
        return loss, entropy_sum.detach(), n_valid

    # ------------------------------------------------------------------------------------------- diagnostics
    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        every = self.args.gradient_coherence_steps
        if every and self._step % self.args.gradient_accumulation_steps == 1 % self.args.gradient_accumulation_steps:
            self._remember_batches(self._buffered_inputs[0])
            if self.state.global_step % every == 0:
                self._log_gradient_coherence()
        return output

    def _remember_batches(self, batch: dict) -> None:
        sources = batch["sources"]
        for name in set(sources):
            rows = torch.tensor([i for i, s in enumerate(sources) if s == name], dtype=torch.long)
            self._latest_batches[name] = _subset(batch, rows, len(sources))

    def _log_gradient_coherence(self) -> None:
        if self.is_deepspeed_enabled and self.args.deepspeed_plugin.zero_stage == 3:
            return
        names = (self.args.recovery_source, self.args.review_source)
        if not all(name in self._latest_batches for name in names):
            return
        student = self.accelerator.unwrap_model(self.model)
        params = [p for p in student.parameters() if p.requires_grad]
        grads = []
        for name in names:
            batch = self._latest_batches[name]
            loss = self._compute_loss(student, batch, None)[0]
            grad = torch.autograd.grad(loss, params, allow_unused=True)
            grads.append(
                torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grad, params)])
            )
        self._pending_divergence = {}
        coherence = gradient_coherence(grads[0], grads[1])
        coherence = self.accelerator.gather(coherence.reshape(1).to(self.accelerator.device)).mean().item()
        self._metrics["train"]["grad_coherence"].append(coherence)


def gradient_coherence(grad_a: torch.Tensor, grad_b: torch.Tensor) -> torch.Tensor:
    """`cos(∇L_a, ∇L_b)` of two flattened gradients; negative means the updates counteract (METHODS.md §4)."""
    return torch.nn.functional.cosine_similarity(grad_a.float(), grad_b.float(), dim=0, eps=1e-12)


def _hidden_size(model) -> int:
    weight = model.get_output_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[-1])
