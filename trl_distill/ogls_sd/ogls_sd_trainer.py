"""OGLS-SD: on-policy self-distillation (OPSD) with an outcome-guided, steered privileged teacher."""

import math
import textwrap
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from trl import DistillationTrainer
from trl.trainer.utils import RepeatSampler, maybe_gather_lm_head_ctx, pad

from ..core.divergence import (
    LMHead,
    compute_distillation_loss,
    generalized_jsd,
    generalized_jsd_from_logits,
    token_mean_loss,
)
from ..core.rewards import as_completions, as_reward_funcs, call_reward_funcs, reward_func_name, weighted_reward
from .clipped_divergence import token_clip, vocabulary_clip
from .ogls_sd_config import OGLSSDConfig
from .rollout_masks import distillation_mask, positive_tail_mask, positive_tail_nll
from .self_teacher import (
    PRIVILEGED_COLUMN,
    EMATeacherCallback,
    constant_head,
    frozen_teacher,
    privileged_teacher_prompts,
    teacher_prompt,
)
from .steering import (
    contextual_steering_direction,
    group_direction_norm,
    group_outcomes,
    normalize_steering_direction,
    rollout_outcomes,
    steered_teacher,
    steering_direction,
)


__all__ = ["OGLSSDTrainer", "teacher_prompt"]

logger = get_logger(__name__)


class OGLSSDTrainer(DistillationTrainer):
    """
    Trainer for OGLS-SD, On-Policy Self-Distillation with Outcome-Guided Logit Steering (arXiv 2605.12400).

    The student samples `num_generations` rollouts per prompt and a verifier splits each group into successes and
    failures. The teacher is the same model (frozen initial weights by default). By default (the v2 form, docs/methods.md
    §3, medium confidence) the target of a rollout the verifier did not accept is the teacher shown the prompt alone
    (the *anchor*) steered by the contrast of the teacher with successful versus failed rollouts of the group as its
    context, `z̃_t = z_T(·|x,y_<t) + α·d_t`, matched by a clipped forward KL on the rollout's first
    `max_distill_tokens` tokens; a short correct rollout gets an NLL (SFT) term on its last `positive_tail_tokens`
    tokens instead. Groups without both a success and a failure use `d = 0`. `OGLSSDConfig.opsd(...)` is exactly
    OPSD (arXiv 2601.18734): the teacher shown privileged context (e.g. a reference solution), no steering, the
    symmetric JSD on every token.

    Generation (transformers `generate` or vLLM), gradient accumulation, the chunked hidden-state loss and logging are
    [`~trl.DistillationTrainer`]'s. This subclass adds prompt groups (sampler), rewards and the steered teacher (in
    `_generate_and_score_completions`, once per generation batch) and reads the teacher from there in `_compute_loss`.
    Steering is done on final hidden states, exact for linear heads; models with final-logit softcapping fall back to
    explicit logits.

    Example:

    ```python
    >>> from trl_distill import OGLSSDConfig, OGLSSDTrainer
    >>> from trl_distill.lab.world.tasks import task_reward

    >>> # rows: prompt, privileged_context (a reference solution), answer, task
    >>> trainer = OGLSSDTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=task_reward,
    ...     args=OGLSSDConfig(output_dir="ogls-sd", num_generations=4),
    ...     train_dataset=dataset,
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The student, and the teacher it becomes when shown privileged context.
        reward_funcs (`Callable`, `str` or `list` of them):
            Reward functions as `GRPOTrainer` takes them (e.g. `trl.rewards.accuracy_reward`): callables
            `(prompts, completions, completion_ids, trainer_state, **columns) -> list[float | None]`, with dataset
            columns as keyword arguments and `None` for a rollout the function does not apply to, or verifier names
            of [`trl_distill.core.verifiers`] (`"numeric"`, ...) and import paths; see [`trl_distill.core.rewards`].
        args ([`OGLSSDConfig`], *optional*):
            Configuration; a default one when `None`.
        train_dataset ([`~datasets.Dataset`]):
            Map-style, non-empty dataset with a `prompt` column (plain or conversational), a `privileged_context`
            column when the teacher reads it (`steering_anchor="privileged"`), plus whatever the reward functions
            read.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Same format as `train_dataset`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer; loaded from the model when `None`.
        callbacks (`list[TrainerCallback]`, *optional*), optimizers (`tuple`, *optional*), peft_config
            ([`~peft.PeftConfig`], *optional*): as in [`~trl.DistillationTrainer`].

    Raises (before training): a `ValueError` for no reward function or mismatched `reward_weights`, an
    `IterableDataset` or empty dataset, a missing `prompt` (or, for the privileged anchor, `privileged_context`)
    column or `None` contexts, a train dataset with fewer prompts than one generation batch needs (training would run
    zero steps), and an EMA teacher for a PEFT student, or an unknown verifier name; a `TypeError` for a reward that is neither
    callable nor a name. During
    generation, a reward function that returns the wrong number of values, NaN, a string, or `None` for every
    completion raises, naming the function. Logs one warning when a training generation batch has no group with both
    outcomes and no positive-tail token: the target then is the student's initial self, and training is a no-op.
    """

    _tag_names = ["trl", "distillation", "trl-distill", "ogls-sd"]
    _name = "OGLS-SD"
    _paper = {
        "title": "On-Policy Self-Distillation with Outcome-Guided Logit Steering",
        "id": "2605.12400",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{ogls_sd_2026,
                title   = {{On-Policy Self-Distillation with Outcome-Guided Logit Steering}},
                year    = 2026,
                eprint  = {arXiv:2605.12400},
            }"""),
    }

    def __init__(
        self,
        model,
        reward_funcs: Callable | list[Callable],
        args: OGLSSDConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        peft_config=None,
    ):
        args = self._config_for(model, args)
        self._init_rewards(reward_funcs, args)
        self._check_datasets(train_dataset, eval_dataset, args)
        super().__init__(
            model=model,
            teacher_model=frozen_teacher(model, args, peft_config),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
        )
        if self.teacher_model is not None:
            # frozen: it only runs under no_grad, and the EMA moves it outside autograd
            self.teacher_model.requires_grad_(False)
            if args.teacher_model_kind == "ema":
                self.add_callback(EMATeacherCallback(self))
        self.num_generations = args.num_generations
        self._check_generation_batch_fits(train_dataset)
        # trainer state: the no-outcome-signal warning is said once per run (see `_warn_if_no_outcome_signal`)
        self._warned_no_outcome_signal = False
        self.explicit_logits = self._needs_explicit_logits()

    @staticmethod
    def _config_for(model, args: OGLSSDConfig | None) -> OGLSSDConfig:
        """`args`, or a default config named after the model."""
        if args is None:
            name = model if isinstance(model, str) else model.config.name_or_path or ""
            args = OGLSSDConfig(f"{str(name).split('/')[-1] or 'model'}-OGLS-SD")
        if not isinstance(args, OGLSSDConfig):
            raise TypeError(f"args must be an OGLSSDConfig, got {type(args).__name__}.")
        return args

    def _init_rewards(self, reward_funcs, args: OGLSSDConfig) -> None:
        """Sets `reward_funcs` in TRL's form, their names (for the logs) and their `reward_weights`."""
        self.reward_funcs = as_reward_funcs(reward_funcs)
        self.reward_func_names = [reward_func_name(f) for f in self.reward_funcs]
        weights = args.reward_weights or [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(weights)} entries for {len(self.reward_funcs)} reward functions."
            )
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)

    def _needs_explicit_logits(self) -> bool:
        """Whether the teacher and the loss need explicit logits: steering hidden states is exact only for a linear
        head, and softcapping bends the logits."""
        heads = [LMHead.of(self.accelerator.unwrap_model(self.model))]
        if self.teacher_model is not None:
            heads.append(LMHead.of(self.accelerator.unwrap_model(self.teacher_model)))
        if all(h.softcap is None for h in heads):
            return False
        warnings.warn(
            "The model applies final-logit softcapping, so steering on hidden states would not be exact. OGLS-SD "
            "falls back to explicit (batch, length, vocab) logits for the teacher and the loss, which needs much "
            "more memory; lower per_device_train_batch_size or max_completion_length if it runs out."
        )
        return True

    def _check_generation_batch_fits(self, dataset) -> None:
        """Raises when the train dataset has fewer prompts than one generation batch needs: the repeat sampler only
        yields whole generation batches, so training would finish after zero steps without a word."""
        if dataset is None or not hasattr(dataset, "__len__"):
            return
        args = self.args
        processes = self.accelerator.num_processes
        needed = (
            args.per_device_train_batch_size * processes * args.gradient_accumulation_steps // args.num_generations
        )
        if len(dataset) < needed:
            raise ValueError(
                f"train_dataset has {len(dataset)} prompts, but one generation batch needs {needed} distinct prompts "
                f"(per_device_train_batch_size={args.per_device_train_batch_size} × {processes} processes × "
                f"gradient_accumulation_steps={args.gradient_accumulation_steps} / num_generations="
                f"{args.num_generations}); the sampler keeps only whole generation batches, so training would run zero "
                "steps. Lower per_device_train_batch_size or gradient_accumulation_steps, raise num_generations, or "
                "give more prompts."
            )

    @classmethod
    def _check_datasets(cls, train_dataset, eval_dataset, args: OGLSSDConfig) -> None:
        """[`_check_dataset`] on each dataset, and evaluation batches of whole prompt groups."""
        cls._check_dataset(train_dataset, "train_dataset", args)
        if isinstance(eval_dataset, dict):
            for key, value in eval_dataset.items():
                cls._check_dataset(value, f"eval_dataset[{key!r}]", args)
        else:
            cls._check_dataset(eval_dataset, "eval_dataset", args)
        if eval_dataset is not None and args.per_device_eval_batch_size % args.num_generations != 0:
            raise ValueError(
                f"per_device_eval_batch_size={args.per_device_eval_batch_size} is not a multiple of num_generations="
                f"{args.num_generations}; evaluation batches must hold whole prompt groups."
            )

    @staticmethod
    def _check_dataset(dataset, name: str, args: OGLSSDConfig) -> None:
        if dataset is None:
            return
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                f"{name} is an IterableDataset; OGLS-SD groups num_generations rollouts of the same prompt with a "
                "repeat sampler, which needs a map-style Dataset. Materialise it, e.g. Dataset.from_list(list(ds))."
            )
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(f"{name} is empty: there is no prompt to sample rollouts for, so nothing would train.")
        columns = getattr(dataset, "column_names", None) or []
        required = [("prompt", "the student's prompt")]
        if args.uses_privileged_context:
            required.append((PRIVILEGED_COLUMN, "what the teacher sees beyond the prompt, e.g. a reference solution"))
        for column, why in required:
            if column not in columns:
                raise ValueError(
                    f"{name} has no `{column}` column ({why}); its columns are {columns}. Add it, e.g. "
                    f"dataset.rename_column('solution', '{column}') or dataset.map(lambda row: "
                    f"{{'{column}': ...}})."
                )
        if args.uses_privileged_context:
            missing = [i for i, value in enumerate(dataset[PRIVILEGED_COLUMN]) if value is None]
            if missing:
                raise ValueError(
                    f"{name} has {len(missing)} rows whose `{PRIVILEGED_COLUMN}` is None (first: row {missing[0]}); "
                    "the teacher would be shown the text 'None'. Fill them or drop those rows, e.g. "
                    f"dataset.filter(lambda row: row['{PRIVILEGED_COLUMN}'] is not None)."
                )
        elif PRIVILEGED_COLUMN in columns:
            warnings.warn(
                f"{name} has a `{PRIVILEGED_COLUMN}` column, but with steering_anchor={args.steering_anchor!r} the "
                "teacher never reads it (the v2 anchor is the teacher shown the prompt alone; the contextual direction "
                "uses the group's rollouts as contexts). Set steering_anchor='privileged' to use it.",
                stacklevel=3,
            )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt", PRIVILEGED_COLUMN, "image", "images"]

    # Prompt groups: each prompt is repeated num_generations times in a row inside a generation batch, and the batch
    # is reused for gradient_accumulation_steps micro-batches (as in GRPO). The config guarantees that every process
    # holds whole groups, so directions never need rollouts from another process.
    def _get_train_sampler(self, dataset=None):
        dataset = self.train_dataset if dataset is None else dataset
        generation_batch_size = (
            self.args.per_device_train_batch_size
            * self.accelerator.num_processes
            * self.args.gradient_accumulation_steps
        )
        return RepeatSampler(
            data_source=dataset,
            mini_repeat_count=self.args.num_generations,
            batch_size=generation_batch_size // self.args.num_generations,
            repeat_count=self.args.gradient_accumulation_steps,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    def _get_eval_sampler(self, eval_dataset):
        return RepeatSampler(
            data_source=eval_dataset, mini_repeat_count=self.args.num_generations, seed=self.args.seed
        )

    # ------------------------------------------------------------------ teacher

    @contextmanager
    def _teacher(self):
        """Yields `(wrapper, unwrapped)` of the self-teacher, in eval mode, with its adapters set as the kind asks."""
        if self.teacher_model is not None:  # frozen copy: initial or EMA
            self.teacher_model.eval()
            yield self.teacher_model, self.accelerator.unwrap_model(self.teacher_model)
            return
        unwrapped = self.accelerator.unwrap_model(self.model)
        was_training = unwrapped.training
        unwrapped.eval()  # no dropout in the teacher's targets
        try:
            if self.args.teacher_model_kind == "initial":  # PEFT student: its base is the initial model
                with unwrapped.disable_adapter():
                    yield self.model_wrapped, unwrapped
            else:
                yield self.model_wrapped, unwrapped
        finally:
            unwrapped.train(was_training)

    def _teacher_head(self) -> LMHead:
        model = self.teacher_model if self.teacher_model is not None else self.model
        return constant_head(self.accelerator.unwrap_model(model))

    def _compose_teacher_prompt(self, prompt, privileged_context):
        return teacher_prompt(prompt, privileged_context, self.args.teacher_prompt_template)

    def _teacher_hidden_states(
        self, teacher_prompts: list, completion_ids: torch.Tensor, completion_mask
    ) -> torch.Tensor:
        """Teacher final hidden states `(N, C, H)` at the completion positions, under `teacher_prompts`, no grad."""
        return self._teacher_hidden_on_ids(self._tokenize_prompts(teacher_prompts)[0], completion_ids, completion_mask)

    def _teacher_hidden_on_ids(self, prompt_ids: list, completion_ids: torch.Tensor, completion_mask) -> torch.Tensor:
        """Teacher final hidden states `(N, C, H)` at the completion positions after the token lists `prompt_ids`."""
        device = completion_ids.device
        step = self.args.per_device_train_batch_size
        chunks = []
        with self._teacher() as (wrapper, unwrapped), torch.no_grad():
            for start in range(0, len(prompt_ids), step):
                rows = [torch.tensor(ids) for ids in prompt_ids[start : start + step]]
                ids = pad(rows, padding_value=self._tokenizer.pad_token_id, padding_side="left").to(device)
                mask = pad([torch.ones_like(r) for r in rows], padding_value=0, padding_side="left").to(device)
                c_ids, c_mask = completion_ids[start : start + step], completion_mask[start : start + step]
                chunks.append(
                    self._forward_redirection(
                        wrapper,
                        unwrapped,
                        self._get_last_hidden_state,
                        unwrapped,
                        torch.cat([ids, c_ids], dim=1),
                        torch.cat([mask, c_mask], dim=1),
                        c_ids.size(1),
                    )
                )
        return torch.cat(chunks, dim=0)

    # ------------------------------------------------------------------ rewards

    def _compute_rewards(
        self, inputs: list[dict], prompts: list, completions: list, completion_ids: list
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calls the reward functions as `GRPOTrainer` does (see [`trl_distill.core.rewards`]).

        Returns `(rewards, rewards_per_func)`: the weighted reward per rollout (`NaN` where every function returned
        `None`) and the `(N, F)` rewards of each function (`NaN` for `None`), which `_log_steering` logs.
        """
        columns = {key: [row[key] for row in inputs] for key in inputs[0]}
        per_func = call_reward_funcs(
            self.reward_funcs, prompts, completions, columns, completion_ids=completion_ids, trainer_state=self.state
        ).float()
        if torch.isnan(per_func).all():
            raise ValueError(
                f"Every reward function ({', '.join(self.reward_func_names)}) returned None for all {len(prompts)} "
                "completions, so no rollout can be judged a success or a failure. Check that the dataset has the "
                f"columns they read (available: {sorted(k for k in columns if k not in ('prompt', 'completion'))})."
            )
        return weighted_reward(per_func, self.reward_weights), per_func

    # ------------------------------------------------------------------ generation batch

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output.update(self._score_and_steer(inputs, output))
        return output

    def _score_and_steer(self, inputs: list[dict], output: dict) -> dict:
        """Rewards the rollouts, picks the tokens each term trains, and forms the (steered) teacher.

        Returns the teacher target, `{"teacher_hidden": (N, C, H)}` (linear heads) or `{"teacher_logits": (N, C, V)}`
        (softcapping), the token masks `distill_mask` (distribution-matched) and `tail_mask` (positive-tail NLL), and
        `num_items_in_batch`, the number of loss tokens of the generation batch over all processes.
        """
        mode = "train" if self.model.training else "eval"
        prompts = [row["prompt"] for row in inputs]
        completions, ids_list = self._decoded_completions(prompts, output)
        rewards, rewards_per_func = self._compute_rewards(inputs, prompts, completions, ids_list)
        success = rollout_outcomes(rewards, self.args.correct_threshold).to(output["completion_mask"].device)
        _, _, mixed = group_outcomes(success, self.num_generations)
        distill, tail = self._loss_token_masks(output, success)
        features, head = self._anchor_features(inputs, prompts, output)
        direction = self._steering_direction(features, head, prompts, completions, output, success, distill)
        teacher = features
        if direction is not None:
            teacher = steered_teacher(features, direction, self.args.steering_alpha, self.num_generations)
        projection = None if self.explicit_logits else head  # how a feature-space direction maps to logits
        with maybe_gather_lm_head_ctx(head.weight, head.bias):  # logit-space norms read the head
            self._log_steering(mode, rewards, rewards_per_func, success, mixed, direction, distill, tail, projection)
        if mode == "train":
            self._warn_if_no_outcome_signal(mixed, tail)
        loss_tokens = (distill != 0).sum() + (tail != 0).sum()
        return {
            "teacher_logits" if self.explicit_logits else "teacher_hidden": teacher,
            "distill_mask": distill,
            "tail_mask": tail,
            "num_items_in_batch": self.accelerator.gather(loss_tokens.to(self.accelerator.device)).sum(),
        }

    def _decoded_completions(self, prompts: list, output: dict) -> tuple[list, list[list[int]]]:
        """The rollouts as the reward functions read them (text or messages, as the prompts), and their token ids."""
        ids_list = [
            ids[mask.bool()].tolist() for ids, mask in zip(output["completion_ids"], output["completion_mask"])
        ]
        texts = self.processing_class.batch_decode(ids_list, skip_special_tokens=True)
        return as_completions(prompts, texts), ids_list

    def _loss_token_masks(self, output: dict, success: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which tokens each term trains, `(distill, tail)` (v2: the steered divergence on the first
        `max_distill_tokens` tokens of rollouts not verified correct; the NLL on the tail of short correct ones)."""
        args = self.args
        trained = output["completion_mask"]
        if "tool_mask" in output:
            trained = trained * output["tool_mask"]
        distill = distillation_mask(trained, success, args.steer_rollouts, args.max_distill_tokens)
        if args.positive_tail_weight <= 0:
            return distill, torch.zeros_like(trained)
        tail_rule = (args.positive_tail_tokens, args.short_rollout_quantile, args.short_rollout_max_tokens)
        return distill, positive_tail_mask(trained, success, self.num_generations, *tail_rule)

    def _anchor_features(self, inputs: list[dict], prompts: list, output: dict) -> tuple[torch.Tensor, LMHead]:
        """The anchor teacher's features at the completion positions, and its head: the teacher shown the prompt and
        the privileged context, or the student's prompt alone. Features are final hidden states, or logits where
        softcapping needs them."""
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        if self.args.uses_privileged_context:
            teacher_prompts = privileged_teacher_prompts(prompts, inputs, self._compose_teacher_prompt)
            hidden = self._teacher_hidden_states(teacher_prompts, completion_ids, completion_mask)
        else:
            anchor_ids = [ids[mask.bool()].tolist() for ids, mask in zip(output["prompt_ids"], output["prompt_mask"])]
            hidden = self._teacher_hidden_on_ids(anchor_ids, completion_ids, completion_mask)
        head = self._teacher_head()
        with maybe_gather_lm_head_ctx(head.weight, head.bias):  # ZeRO-3: the head is a shard outside a forward
            return (head.logits(hidden) if self.explicit_logits else hidden), head

    def _steering_direction(self, features, head, prompts, completions, output, success, distill):
        """The steering direction `d`, pooled `(groups, D)` or contextual `(N, C, D)`, normalised per prompt when
        `normalize_direction`; `None` for `steering_alpha=0` (the target is the anchor itself)."""
        args, G = self.args, self.num_generations
        if args.steering_alpha == 0:
            return None
        if args.steering == "pooled":
            direction = steering_direction(features, output["completion_mask"], success, G)
        else:
            _, _, mixed = group_outcomes(success, G)
            needed = mixed.repeat_interleave(G) & (distill != 0).any(-1)  # only the rollouts whose target is steered
            if needed.any():
                ids, mask = output["completion_ids"], output["completion_mask"]
                contexts = self._contextual_features(prompts, completions, ids, mask, needed, head)
                direction = contextual_steering_direction(contexts, success, G)
            else:
                direction = torch.zeros_like(features, dtype=torch.float32)
        if not args.normalize_direction:
            return direction
        with maybe_gather_lm_head_ctx(head.weight, head.bias):  # logit-space norms read the head
            return normalize_steering_direction(direction, G, None if self.explicit_logits else head, distill)

    def _warn_if_no_outcome_signal(self, mixed: torch.Tensor, tail: torch.Tensor) -> None:
        """Warns once when a training generation batch has no mixed group and no positive-tail token while the
        target is the teacher shown the prompt alone: that target is the student's own initial weights, so the first
        steps have a loss and gradients of exactly 0 (later ones only pull the student back), and training is a
        no-op until some group has both outcomes."""
        if self._warned_no_outcome_signal or self.args.uses_privileged_context:
            return
        gather = self.accelerator.gather
        device = self.accelerator.device
        any_mixed = gather(mixed.any().reshape(1).to(device)).any()
        any_tail = gather((tail != 0).any().reshape(1).to(device)).any()
        if any_mixed or any_tail:
            return
        self._warned_no_outcome_signal = True
        logger.warning(
            "OGLS-SD: no prompt group of this generation batch has both a successful and a failed rollout "
            "(steering/frac_mixed_groups = 0) and no correct rollout gets the positive-tail term, so the target is the "
            "unsteered teacher shown the prompt alone, i.e. the student's initial weights (with teacher_model_kind="
            "'live', the student itself): while the student equals it, the loss and gradients are exactly 0 and "
            "training is a no-op. Give each group a chance of mixed outcomes: more generations per prompt "
            f"(num_generations={self.args.num_generations}), an easier dataset, or a softer reward (partial credit, "
            f"or a lower correct_threshold={self.args.correct_threshold})."
        )

    def _contextual_features(self, prompts, completions, completion_ids, completion_mask, rows, head):
        """Yields, for each context slot `j`, the teacher features of every rollout with rollout `j` of its group as
        the teacher's context (in the template's `{privileged_context}`). Only the rollouts in the boolean `rows` are
        computed; the others stay zero.

        Every (slot, rollout) pair goes through one teacher pass, in chunks of `per_device_train_batch_size` sequences
        as the anchor's forward, rather than one pass per slot: `⌈G·R / b⌉` forwards instead of `G·⌈R / b⌉`. Left
        padding of the contexts of different lengths is masked, so the result equals the slot-by-slot forwards."""
        G = self.num_generations
        rows = torch.nonzero(rows).flatten()
        # slot-major: pairs j·R … (j+1)·R − 1 hold every rollout with context slot j
        teacher_prompts = [
            self._compose_teacher_prompt(prompts[i], completions[(i // G) * G + j])
            for j in range(G)
            for i in rows.tolist()
        ]
        pairs = rows.repeat(G)
        hidden = self._teacher_hidden_states(teacher_prompts, completion_ids[pairs], completion_mask[pairs])
        for part in hidden.split(rows.numel()):
            if self.explicit_logits:
                with maybe_gather_lm_head_ctx(head.weight, head.bias):  # ZeRO-3: the head is a shard outside a forward
                    part = head.logits(part)
            else:
                part = part.float()
            full = part.new_zeros((completion_ids.size(0), *part.shape[1:]))
            full[rows] = part
            yield full

    def _log_steering(self, mode, rewards, rewards_per_func, success, mixed, direction, distill, tail, projection):
        device = self.accelerator.device
        gather = self.accelerator.gather
        all_rewards = gather(rewards.to(device))
        scored = ~torch.isnan(all_rewards)
        self._metrics[mode]["reward"].append(all_rewards[scored].mean().item() if scored.any() else math.nan)
        self._metrics[mode]["reward_std"].append(all_rewards[scored].std().item() if scored.sum() > 1 else 0.0)
        per_func = gather(rewards_per_func.to(device))
        for i, name in enumerate(self.reward_func_names):
            column = per_func[:, i]
            valid = column[~torch.isnan(column)]
            self._metrics[mode][f"rewards/{name}/mean"].append(valid.mean().item() if valid.numel() else math.nan)
        all_success = gather(success.to(device))
        judged = all_success >= 0
        self._metrics[mode]["steering/success_rate"].append(
            (all_success[judged] == 1).float().mean().item() if judged.any() else math.nan
        )
        all_mixed = gather(mixed.to(device))
        self._metrics[mode]["steering/frac_mixed_groups"].append(all_mixed.float().mean().item())
        steered = gather((distill != 0).any(-1).to(device))
        self._metrics[mode]["steering/frac_distilled_rollouts"].append(steered.float().mean().item())
        self._metrics[mode]["positive_tail/frac_rollouts"].append(
            gather((tail != 0).any(-1).to(device)).float().mean().item()
        )
        if direction is None:
            return
        # norm of d in logit space, over mixed groups with a steered rollout: per group for pooled, root-mean-square
        # over the group's distribution-matched tokens for contextual
        G, steered = self.num_generations, distill != 0
        norms = group_direction_norm(direction, G, projection, steered)
        has_steered = steered.view(-1, G * steered.size(1)).any(-1)
        norms, keep = gather(norms.to(device)), gather((mixed & has_steered).to(device))
        self._metrics[mode]["steering/direction_norm"].append(norms[keep].mean().item() if keep.any() else 0.0)

    # ------------------------------------------------------------------ loss

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """The steered divergence and the positive-tail NLL of one micro-batch.

        Returns `(loss, entropy_sum, n_distill, stats)`: TRL's `_compute_loss` triple (the loss, the summed student
        entropy, the count of distribution-matched tokens) and `stats`, this process's sums for the logged metrics
        (`divergence_sum`, `n_distill`, `nll_sum`, `n_tail`, `n_clipped`: `NaN` without the per-token clip), which
        `compute_loss` hands to `_log_loss_stats`. A subclass overriding this hook returns the same four values.
        """
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        distill, tail = inputs["distill_mask"], inputs["tail_mask"]
        student_hidden = self._get_last_hidden_state(
            unwrapped_student, input_ids, attention_mask, inputs["completion_ids"].size(1)
        )
        per_token, entropy, nll = self._loss_terms(student_hidden, LMHead.of(unwrapped_student), inputs)
        clip = self.args.jsd_token_clip
        n_clipped = per_token.new_tensor(math.nan)
        if clip is not None and self.args.jsd_clip_scope == "token":
            per_token, n_clipped = token_clip(per_token, distill, clip)
        n_distill, n_tail = (distill != 0).sum(), (tail != 0).sum()
        divergence_sum, nll_sum = per_token.sum(), nll.sum()
        # `0·h` keeps the graph connected when a micro-batch has no loss token (e.g. all rollouts correct, no tail)
        total = divergence_sum + self.args.positive_tail_weight * nll_sum + 0.0 * student_hidden.sum()
        loss = token_mean_loss(total, n_distill + n_tail, num_items_in_batch)
        stats = {
            "divergence_sum": divergence_sum.detach(),
            "n_distill": n_distill,
            "nll_sum": nll_sum.detach(),
            "n_tail": n_tail,
            "n_clipped": n_clipped,
        }
        return loss, entropy.sum().detach(), n_distill, stats

    def _loss_terms(self, student_hidden, student_head: LMHead, inputs: dict):
        """Per-token `(divergence, entropy, nll)`, each `(B, C)`: the divergence to the (steered) teacher on the
        distribution-matched tokens (with OPSD's per-entry clip for `jsd_clip_scope="vocabulary"`), the student's
        entropy there, and the positive-tail NLL (temperature 1) on the tail tokens."""
        distill, tail, targets = inputs["distill_mask"], inputs["tail_mask"], inputs["completion_ids"]
        clip = self.args.jsd_token_clip
        vocabulary_terms = None
        if clip is not None and self.args.jsd_clip_scope == "vocabulary":  # OPSD's code
            vocabulary_terms = vocabulary_clip(clip)
        if "teacher_logits" in inputs:  # softcapping fallback: explicit (B, C, V) logits
            return self._explicit_loss_terms(student_head.logits(student_hidden), inputs, vocabulary_terms)
        teacher_head = self._teacher_head()
        heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
        # ZeRO-3: gather the heads so their vocabularies can be compared (the chunked kernel gathers them anyway)
        with maybe_gather_lm_head_ctx(*(p for p in heads if isinstance(p, torch.nn.Parameter))):
            per_token, entropy = generalized_jsd(
                student_hidden,
                student_head,
                inputs["teacher_hidden"],
                teacher_head,
                distill,
                self.beta,
                self.temperature,
                vocabulary_terms,
            )
            return per_token, entropy, positive_tail_nll(student_hidden, student_head, targets, tail)

    def _explicit_loss_terms(self, student_logits, inputs: dict, vocabulary_terms):
        """[`_loss_terms`] from explicit student and teacher logits (the softcapping fallback)."""
        distill, tail, targets = inputs["distill_mask"], inputs["tail_mask"], inputs["completion_ids"]
        scaled = student_logits / self.temperature
        teacher_scaled = inputs["teacher_logits"] / self.temperature
        divergence = generalized_jsd_from_logits(scaled, teacher_scaled, self.beta, vocabulary_terms=vocabulary_terms)
        per_token = divergence * distill
        log_p = torch.log_softmax(scaled.detach(), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1) * distill
        token_log_p = torch.log_softmax(student_logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return per_token, entropy, -token_log_p * tail

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, stats = compute_distillation_loss(self, model, inputs, num_items_in_batch, self._compute_loss)
        self._log_loss_stats(stats)
        return (loss, None) if return_outputs else loss

    def _log_loss_stats(self, stats: dict) -> None:
        """Logs `divergence`, `divergence/clipped_frac` and `positive_tail/nll`, token means over all processes, from
        the `stats` of [`_compute_loss`]."""
        mode = "train" if self.model.training else "eval"
        local = torch.stack(
            [stats[k].float() for k in ("divergence_sum", "n_distill", "nll_sum", "n_tail", "n_clipped")]
        )
        div_sum, n_distill, nll_sum, n_tail, n_clipped = self.accelerator.gather_for_metrics(local.unsqueeze(0)).sum(0)
        if n_distill > 0:
            if self.args.positive_tail_weight > 0:  # without a tail term the loss is this divergence: logged as `loss`
                self._metrics[mode]["divergence"].append((div_sum / n_distill).item())
            if not torch.isnan(n_clipped):  # the per-token clip only
                self._metrics[mode]["divergence/clipped_frac"].append((n_clipped / n_distill).item())
        if n_tail > 0:
            self._metrics[mode]["positive_tail/nll"].append((nll_sum / n_tail).item())
