"""OGLS-SD: on-policy self-distillation (OPSD) with an outcome-guided, steered privileged teacher."""

import math
import textwrap
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from trl import DistillationTrainer, SyncRefModelCallback
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import RepeatSampler, maybe_gather_lm_head_ctx, pad

from ..core.divergence import (
    LMHead,
    compute_distillation_loss,
    generalized_jsd,
    generalized_jsd_from_logits,
    token_mean_loss,
)
from ..core.rewards import as_completions, as_reward_funcs, call_reward_funcs, reward_func_name, weighted_reward
from ..core.teachers import load_teacher
from ..core.verifiers import completion_text
from .clipped_divergence import token_clip, vocabulary_clip, vocabulary_clipped_jsd_from_logits
from .ogls_sd_config import DEFAULT_TEACHER_PROMPT_TEMPLATE, OGLSSDConfig
from .rollout_masks import distillation_mask, positive_tail_mask
from .steering import (
    contextual_steering_direction,
    direction_logit_norm,
    group_outcomes,
    normalize_steering_direction,
    steered_teacher,
    steering_direction,
)


logger = get_logger(__name__)

PRIVILEGED_COLUMN = "privileged_context"


class _EMATeacherCallback(TrainerCallback):
    """Moves the frozen teacher copy towards the student after every optimizer step: `θ_T ← (1 − r)·θ_T + r·θ_S`."""

    def __init__(self, trainer: "OGLSSDTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        student = accelerator.unwrap_model(self.trainer.model)
        teacher = accelerator.unwrap_model(self.trainer.teacher_model)
        SyncRefModelCallback.sync_target_model(student, teacher, args.teacher_update_rate)


# vocabulary tile width of TRL's chunked log-probability kernel (the positive-tail NLL)
_LOGPROB_CHUNK = 4096


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
        if args is None:
            name = model if isinstance(model, str) else model.config.name_or_path or ""
            args = OGLSSDConfig(f"{str(name).split('/')[-1] or 'model'}-OGLS-SD")
        if not isinstance(args, OGLSSDConfig):
            raise TypeError(f"args must be an OGLSSDConfig, got {type(args).__name__}.")
        self.reward_funcs = as_reward_funcs(reward_funcs)
        self.reward_func_names = [reward_func_name(f) for f in self.reward_funcs]
        weights = args.reward_weights or [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(weights)} entries for {len(self.reward_funcs)} reward functions."
            )
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self._check_dataset(train_dataset, "train_dataset", args)
        if isinstance(eval_dataset, dict):
            for key, value in eval_dataset.items():
                self._check_dataset(value, f"eval_dataset[{key!r}]", args)
        else:
            self._check_dataset(eval_dataset, "eval_dataset", args)
        if eval_dataset is not None and args.per_device_eval_batch_size % args.num_generations != 0:
            raise ValueError(
                f"per_device_eval_batch_size={args.per_device_eval_batch_size} is not a multiple of num_generations="
                f"{args.num_generations}; evaluation batches must hold whole prompt groups."
            )

        # The self-teacher. A frozen copy only where one is needed: a PEFT student's initial weights are its base
        # (adapter disabled), and a live teacher is the student itself.
        kind = args.teacher_model_kind
        peft_student = peft_config is not None or (not isinstance(model, str) and is_peft_model(model))
        if kind == "ema" and peft_student:
            raise ValueError(
                "teacher_model_kind='ema' is not supported for a PEFT student: an EMA of the adapter needs a second "
                "adapter. Use teacher_model_kind='initial' (the base model, adapter disabled) or 'live'."
            )
        teacher_model = None
        if kind in ("initial", "ema") and not peft_student:
            # a frozen copy of the student through the one teacher loader: deep-copied, or under ZeRO-3 loaded again
            # from the student's path (a deep copy would clone empty shards), with the student's init kwargs
            init_kwargs = args.teacher_model_init_kwargs
            if isinstance(model, str) and init_kwargs is None:
                init_kwargs = dict(args.model_init_kwargs or {})
            teacher_model = load_teacher(model, args, name="initial teacher", init_kwargs=init_kwargs, copy=True)
            args.teacher_model_init_kwargs = None  # loaded here; DistillationTrainer prepares the instance

        super().__init__(
            model=model,
            teacher_model=teacher_model,
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
            if kind == "ema":
                self.add_callback(_EMATeacherCallback(self))
        self.num_generations = args.num_generations
        self._check_generation_batch_fits(train_dataset)
        # trainer state: the no-outcome-signal warning is said once per run (see `_warn_if_no_outcome_signal`)
        self._warned_no_outcome_signal = False

        heads = [LMHead.of(self.accelerator.unwrap_model(self.model))]
        if self.teacher_model is not None:
            heads.append(LMHead.of(self.accelerator.unwrap_model(self.teacher_model)))
        # Steering hidden states is exact only for a linear head: softcapping bends the logits.
        self.explicit_logits = any(h.softcap is not None for h in heads)
        if self.explicit_logits:
            warnings.warn(
                "The model applies final-logit softcapping, so steering on hidden states would not be exact. OGLS-SD "
                "falls back to explicit (batch, length, vocab) logits for the teacher and the loss, which needs much "
                "more memory; lower per_device_train_batch_size or max_completion_length if it runs out."
            )

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
        head = LMHead.of(self.accelerator.unwrap_model(model))
        # constants: a live teacher shares the student's head, which must get no gradient through the teacher side. A
        # frozen head stays the parameter itself, so DeepSpeed ZeRO-3 can still gather it (a detached shard is empty).
        if head.weight.requires_grad:
            head.weight = head.weight.detach()
        if head.bias is not None and head.bias.requires_grad:
            head.bias = head.bias.detach()
        return head

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
        args = self.args
        mode = "train" if self.model.training else "eval"
        G = self.num_generations
        prompts = [row["prompt"] for row in inputs]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        ids_list = [ids[mask.bool()].tolist() for ids, mask in zip(completion_ids, completion_mask)]
        texts = self.processing_class.batch_decode(ids_list, skip_special_tokens=True)
        completions = as_completions(prompts, texts)

        rewards, rewards_per_func = self._compute_rewards(inputs, prompts, completions, ids_list)
        success = torch.where(torch.isnan(rewards), -1, (rewards >= args.correct_threshold).long())
        success = success.to(completion_mask.device)

        # which tokens each term trains (v2: the steered divergence on rollouts not verified correct, first
        # max_distill_tokens tokens; NLL on the tail of short correct rollouts)
        trained = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
        distill = distillation_mask(trained, success, args.steer_rollouts, args.max_distill_tokens)
        if args.positive_tail_weight > 0:
            tail = positive_tail_mask(
                trained,
                success,
                G,
                args.positive_tail_tokens,
                args.short_rollout_quantile,
                args.short_rollout_max_tokens,
            )
        else:
            tail = torch.zeros_like(trained)

        # the anchor: the teacher shown the prompt and the privileged context, or the student's prompt alone
        if args.uses_privileged_context:
            if any(PRIVILEGED_COLUMN not in row for row in inputs):
                raise ValueError(
                    f"A batch row has no `{PRIVILEGED_COLUMN}` field; the teacher prompt needs it. Keep the column in "
                    "the dataset (and remove_unused_columns=False)."
                )
            teacher_prompts = [
                self._compose_teacher_prompt(p, row[PRIVILEGED_COLUMN]) for p, row in zip(prompts, inputs)
            ]
            hidden = self._teacher_hidden_states(teacher_prompts, completion_ids, completion_mask)
        else:
            anchor_ids = [ids[mask.bool()].tolist() for ids, mask in zip(output["prompt_ids"], output["prompt_mask"])]
            hidden = self._teacher_hidden_on_ids(anchor_ids, completion_ids, completion_mask)
        head = self._teacher_head()
        with maybe_gather_lm_head_ctx(head.weight, head.bias):  # ZeRO-3: the head is a shard outside a forward
            features = head.logits(hidden) if self.explicit_logits else hidden
        projection = None if self.explicit_logits else head  # how a feature-space direction maps to logits

        _, _, mixed = group_outcomes(success, G)
        steered_rows = (distill != 0).any(-1)
        direction = None  # alpha = 0: the anchor itself, no direction formed
        if args.steering_alpha != 0 and args.steering == "pooled":
            direction = steering_direction(features, completion_mask, success, G)
        elif args.steering_alpha != 0:
            needed = mixed.repeat_interleave(G) & steered_rows  # only the rollouts whose target is steered
            if needed.any():
                direction = contextual_steering_direction(
                    self._contextual_features(prompts, completions, completion_ids, completion_mask, needed, head),
                    success,
                    G,
                )
            else:
                direction = torch.zeros_like(features, dtype=torch.float32)
        with maybe_gather_lm_head_ctx(head.weight, head.bias):  # logit-space norms read the head
            if direction is not None and args.normalize_direction:
                direction = normalize_steering_direction(direction, G, projection, distill)
            teacher = features if direction is None else steered_teacher(features, direction, args.steering_alpha, G)
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
        G = self.num_generations
        norms = direction_logit_norm(direction, projection)
        mask = (distill != 0).float()
        if norms.dim() == 2:
            norms = (
                (norms.square() * mask).view(-1, G * mask.size(1)).sum(-1)
                / mask.view(-1, G * mask.size(1)).sum(-1).clamp(min=1)
            ).sqrt()
        has_steered = mask.view(-1, G * mask.size(1)).sum(-1) > 0
        norms, keep = gather(norms.to(device)), gather((mixed & has_steered).to(device))
        self._metrics[mode]["steering/direction_norm"].append(norms[keep].mean().item() if keep.any() else 0.0)

    # ------------------------------------------------------------------ loss

    @staticmethod
    def _tail_nll(hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """Student NLL `−log p_θ(y_t | x, y_<t)` (temperature 1) at the `tail` positions, `(B, T)`, zero elsewhere;
        TRL's chunked log-probability kernel, so no `(B, T, V)` logits."""
        valid = tail.reshape(-1) != 0
        nll = hidden.new_zeros(valid.shape, dtype=torch.float32)
        if valid.any():
            log_p = ChunkedLogProbFunction.apply(
                hidden.reshape(-1, hidden.size(-1))[valid],
                head.weight,
                head.bias,
                targets.reshape(-1)[valid],
                1.0,
                _LOGPROB_CHUNK,
                head.softcap,
                head.logit_scale,
                (),
            )[0]
            nll = nll.masked_scatter(valid, -log_p.float())
        return nll.view(tail.shape)

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """The steered divergence and the positive-tail NLL of one micro-batch.

        Returns `(loss, entropy_sum, n_distill, stats)`: TRL's `_compute_loss` triple (the loss, the summed student
        entropy, the count of distribution-matched tokens) and `stats`, this process's sums for the logged metrics
        (`divergence_sum`, `n_distill`, `nll_sum`, `n_tail`, `n_clipped`: `NaN` without the per-token clip), which
        `compute_loss` hands to `_log_loss_stats`. A subclass overriding this hook returns the same four values.
        """
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        targets = inputs["completion_ids"]
        distill, tail = inputs["distill_mask"], inputs["tail_mask"]
        student_hidden = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, targets.size(1))
        student_head = LMHead.of(unwrapped_student)
        clip = self.args.jsd_token_clip
        per_entry_clip = clip is not None and self.args.jsd_clip_scope == "vocabulary"  # OPSD's code
        if "teacher_logits" in inputs:  # softcapping fallback: explicit (B, C, V) logits
            student_logits = student_head.logits(student_hidden)
            scaled = student_logits / self.temperature
            teacher_scaled = inputs["teacher_logits"] / self.temperature
            if per_entry_clip:
                per_token = vocabulary_clipped_jsd_from_logits(scaled, teacher_scaled, self.beta, clip) * distill
            else:
                per_token = generalized_jsd_from_logits(scaled, teacher_scaled, self.beta) * distill
            log_p = torch.log_softmax(scaled.detach(), dim=-1)
            entropy = -(log_p.exp() * log_p).sum(-1) * distill
            token_log_p = torch.log_softmax(student_logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            nll = -token_log_p * tail
        else:
            teacher_head = self._teacher_head()
            heads = (student_head.weight, student_head.bias, teacher_head.weight, teacher_head.bias)
            # ZeRO-3: gather the heads so their vocabularies can be compared (the chunked kernel gathers them anyway)
            vocabulary_terms = vocabulary_clip(clip) if per_entry_clip else None
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
                nll = self._tail_nll(student_hidden, student_head, targets, tail)
        n_clipped = per_token.new_tensor(math.nan)
        if clip is not None and not per_entry_clip:
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
