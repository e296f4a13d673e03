"""Dynamic data selection by data–model compatibility, as a `TrainerCallback`.

The user trains on the concatenation of several candidate datasets ([`CandidateDatasets`]); at every
`reselect_every`-th epoch boundary [`DMCCallback`] recomputes DMC (docs/methods.md §2, **our proposed formulation**) with
the current model and swaps what the next epoch draws through the foundation's
[`~trl_distill.core.sampler.SelectionSampler`]: the top-DMC dataset, a `softmax(DMC/τ)` mixture, or the top fraction
of examples by example-level DMC. It works with any trainer that trains a map-style dataset through the standard
dataloader (`SFTTrainer`, `SCASTrainer`, `Trainer`).
"""

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..core.pool import as_dataset
from ..core.sampler import SelectionCallback, SelectionSampler, find_batch_sampler
from .compatibility import (
    RESPONSE_COLUMNS,
    as_named_datasets,
    capability,
    check_dev_dataset,
    check_response_dataset,
    compatibility,
    plain_prompts_as_chat_for,
    probe_indices,
    quality_per_example,
    response_nll,
)


STRATEGIES = ("top_dataset", "mixture", "top_fraction")
logger = logging.getLogger(__name__)


class CandidateDatasets:
    """Candidate datasets concatenated into one training set, with each dataset's index range in it.

    Pass `.train_dataset` to the trainer and the object itself to [`DMCCallback`]. Columns shared by every dataset
    are kept, in the order the datasets are given; the trainer trains them in their own format. DMC scores each row's
    response through `.responses` (the rows as prompt–completion pairs, see [`check_response_dataset`]).

    Args:
        datasets (`Mapping[str, Dataset]`):
            The candidate datasets by name, each non-empty, all in one SFT format that carries a response:
            `prompt`/`completion` (standard or conversational), `messages`, `conversations` or `text`.

    Example:

    ```python
    candidates = CandidateDatasets({"cot": cot_dataset, "terse": terse_dataset})
    trainer = SFTTrainer(model, args=SFTConfig(...), train_dataset=candidates.train_dataset, ...)
    trainer.add_callback(DMCCallback(candidates, dev_dataset, numeric_reward, trainer=trainer))
    ```
    """

    def __init__(self, datasets: Mapping[str, Dataset]):
        datasets = as_named_datasets(datasets)
        if not datasets:
            raise ValueError("CandidateDatasets needs at least one named candidate dataset.")
        # what DMC scores and verifies: each row as a prompt–completion pair
        self.responses = {name: check_response_dataset(dataset, name) for name, dataset in datasets.items()}
        self.datasets = dict(datasets)
        self.names = list(self.datasets)
        self.ranges: dict[str, range] = {}
        start = 0
        for name in self.names:
            self.ranges[name] = range(start, start + len(self.datasets[name]))
            start += len(self.datasets[name])
        shared = [
            c for c in self.datasets[self.names[0]].column_names if all(c in d.column_names for d in datasets.values())
        ]
        parts = [self.datasets[name].select_columns(shared) for name in self.names]
        try:
            self.train_dataset = concatenate_datasets(parts)
        except ValueError as error:
            kinds = {name: {c: str(self.datasets[name].features[c]) for c in shared} for name in self.names}
            raise ValueError(
                f"The candidate datasets cannot be concatenated: their shared columns {shared} have different types "
                f"({kinds}). Give every dataset the same format (all conversational or all plain)."
            ) from error
        self.responses_dataset = concatenate_datasets(
            [self.responses[name].select_columns(list(RESPONSE_COLUMNS)) for name in self.names]
        )

    def __len__(self) -> int:
        return len(self.train_dataset)

    def dataset_of(self, index: int) -> str:
        """The name of the candidate dataset that row `index` of `train_dataset` comes from."""
        for name, span in self.ranges.items():
            if index in span:
                return name
        raise IndexError(f"Row {index} is outside the {len(self)} candidate rows.")


DMC_TAGS = ["trl-distill", "dmc"]
DMC_PAPER = {
    "title": "Tailoring the Curriculum: Student-Centered Reasoning Distillation via Dynamic Data-Model Compatibility",
    "id": "2605.29229",
    "citation": (
        "@article{dmc2026,\n"
        "    title   = {{Tailoring the Curriculum: Student-Centered Reasoning Distillation via Dynamic Data-Model "
        "Compatibility}},\n"
        "    year    = 2026,\n"
        "    eprint  = {arXiv:2605.29229},\n"
        "}"
    ),
}


def tag_trainer(trainer) -> None:
    """Tags the trainer's model card `dmc` and makes it cite DMC (the trainer's own paper, if it has one, stays)."""
    names = list(getattr(trainer, "_tag_names", []))
    trainer._tag_names = names + [tag for tag in DMC_TAGS if tag not in names]
    if not getattr(trainer, "_paper", None):
        trainer._paper = DMC_PAPER


@dataclass
class DMCArguments:
    r"""
    Settings of [`DMCCallback`] (and of the `trl-distill dmc-rank` ranking command).

    DMC is docs/methods.md §2's **proposed formulation** `DMC(D, θ) = Q(D) / (1 + β·(1 − C(θ))·L(D, θ))`.

    Parameters:
        strategy (`str`, *optional*, defaults to `"mixture"`):
            How each stage's training data is chosen: `"top_dataset"` (the highest-DMC dataset only), `"mixture"`
            (all datasets, drawn with weights `softmax(DMC/τ)`) or `"top_fraction"` (the `top_fraction` of all
            candidate examples with the highest example-level DMC; this scores every row, not a probe).
        beta (`float`, *optional*, defaults to `1.0`):
            `β`, the weight of the difficulty penalty (fit on pilot runs; `0` ranks by quality alone).
        temperature (`float`, *optional*, defaults to `0.1`):
            `τ` of the mixture weights `softmax(DMC/τ)`; smaller is greedier. DMC lies in `[0, 1]`.
        top_fraction (`float`, *optional*, defaults to `0.5`):
            Share of candidate examples kept by the `"top_fraction"` strategy, in `(0, 1]`.
        reselect_every (`int`, *optional*, defaults to `1`):
            Recompute DMC and reselect every this many epochs; `0` selects once, before training.
        probe_size (`int` or `None`, *optional*, defaults to `128`):
            Rows of each candidate dataset scored for the relative difficulty `L` (a seeded sample; `None` = all).
        dev_size (`int` or `None`, *optional*, defaults to `64`):
            Dev rows generated for the capability `C` (a seeded sample; `None` = all).
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Generation budget of the greedy dev generations.
        scoring_batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass when scoring `L`.
        generation_batch_size (`int`, *optional*, defaults to `32`):
            Prompts per `generate` call when measuring `C`.
        reward_column (`str` or `None`, *optional*, defaults to `None`):
            Measure quality as the mean of this reward column (in `[0, 1]`; a value outside it, or NaN, is refused
            before training, naming the row) instead of the `correct` column or the verifier.
        correct_threshold (`float`, *optional*, defaults to `1.0`):
            Verifier reward that counts as a pass for `C`.
        system (`str` or `None`, *optional*, defaults to `None`):
            System message put before conversational prompts when scoring and generating.
        selection_seed (`int` or `None`, *optional*, defaults to `None`):
            Seed of the probe and dev samples and of the selection sampler's shuffles; `None` uses the trainer's
            `seed` (0 outside a trainer).
    """

    strategy: str = "mixture"
    beta: float = 1.0
    temperature: float = 0.1
    top_fraction: float = 0.5
    reselect_every: int = 1
    probe_size: int | None = 128
    dev_size: int | None = 64
    max_new_tokens: int = 64
    scoring_batch_size: int = 16
    generation_batch_size: int = 32
    reward_column: str | None = None
    correct_threshold: float = 1.0
    system: str | None = None
    selection_seed: int | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature (τ of softmax(DMC/τ)) must be > 0, got {self.temperature}.")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}.")
        if self.reselect_every < 0:
            raise ValueError(f"reselect_every must be >= 0 (0 = select once), got {self.reselect_every}.")
        if self.probe_size is not None and self.probe_size < 1:
            raise ValueError(f"probe_size must be >= 1 or None (all rows), got {self.probe_size}.")
        if self.dev_size is not None and self.dev_size < 1:
            raise ValueError(
                f"dev_size must be >= 1 or None (all rows), got {self.dev_size}: a dev split of size 0 cannot measure "
                "the capability C(θ)."
            )
        for name in ("max_new_tokens", "scoring_batch_size", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


def mixture_weights(scores, temperature: float, quality=None) -> np.ndarray:
    """Mixture weights `softmax(DMC/τ)` over candidate datasets.

    Datasets whose `quality` is 0 (no correct response) get weight 0 and are left out of the softmax: `softmax`
    would otherwise still give them `exp(-max DMC/τ)` of the draws (7.6% against one dataset of DMC 0.25 at τ = 0.1),
    all of it wrong answers. Without `quality`, or when every dataset has quality 0, the plain softmax is returned.
    """
    logits = np.asarray(scores, dtype=np.float64) / temperature
    keep = np.ones_like(logits, dtype=bool) if quality is None else np.asarray(quality, dtype=np.float64) > 0
    if not keep.any():
        keep[:] = True
    weights = np.where(keep, np.exp(logits - logits[keep].max()), 0.0)
    return weights / weights.sum()


class DMCCallback(SelectionCallback):
    """Reselects the training data by data–model compatibility at epoch boundaries (docs/methods.md §2).

    DMC's formula is **our proposed formulation** (see [`~trl_distill.dmc.compatibility.compatibility`]). At the
    start of training and every `reselect_every` epochs the callback measures, with the current model, the capability
    `C(θ)` on the dev split (greedy pass@1 by `verifier`) and the relative difficulty `L(D, θ)` of each candidate
    dataset (mean token NLL of its responses on a seeded probe), combines them with the quality `Q(D)` (fixed, measured
    once), and hands the selection to the dataloader's sampler. The epoch length stays the same; every process
    computes the same selection; the selection and the last scores are saved in checkpoints and restored on resume.

    Logged at each reselection (through `trainer.log` when `trainer` is given, else into `state.log_history`):
    `dmc/capability`, `dmc/<dataset>/quality`, `dmc/<dataset>/difficulty`, `dmc/<dataset>/dmc`,
    `dmc/<dataset>/weight` (the dataset's share of the next stage's draws) and `dmc/reselection_seconds`.

    Args:
        candidates ([`CandidateDatasets`] or `Mapping[str, Dataset]`):
            The candidate datasets; the trainer's `train_dataset` must be `candidates.train_dataset` (same rows, same
            order). Packing is refused: it merges rows, so row indices would no longer name examples.
        dev_dataset (`Dataset`):
            Held-out rows (`prompt` and the columns the verifier reads, e.g. `answer`) for the capability `C`.
        verifier (`Callable`, `str` or `list`):
            The task's TRL reward functions `(prompts, completions, **columns) -> list[float | None]`, as
            `GRPOTrainer`'s `reward_funcs` (e.g. `trl.rewards.accuracy_reward`, or a verifier name; several are
            summed); also measures quality where a dataset has no `correct` (or `reward_column`) column.
        args ([`DMCArguments`], *optional*):
            The settings; keyword arguments override its fields (`DMCCallback(..., strategy="top_dataset")`).
        trainer (`transformers.Trainer`, *optional*):
            When given, metrics go through `trainer.log`, so every reporting integration sees them.
        tokenizer (*optional*):
            The tokenizer to score with; by default the trainer's `processing_class`.
    """

    def __init__(
        self,
        candidates: CandidateDatasets | Mapping[str, Dataset],
        dev_dataset: Dataset,
        verifier: Callable,
        args: DMCArguments | None = None,
        trainer=None,
        tokenizer=None,
        **kwargs,
    ):
        unknown = set(kwargs) - {f.name for f in fields(DMCArguments)}
        if unknown:
            raise TypeError(f"Unknown DMCCallback argument(s) {sorted(unknown)}; see DMCArguments.")
        self.args = replace(args or DMCArguments(), **kwargs)
        super().__init__(reselect_every=self.args.reselect_every, seed=self.args.selection_seed)
        self.candidates = candidates if isinstance(candidates, CandidateDatasets) else CandidateDatasets(candidates)
        dev_dataset = None if dev_dataset is None else as_dataset(dev_dataset, "dev_dataset", released_pool=False)
        check_dev_dataset(dev_dataset, verifier)
        self.dev_dataset = dev_dataset
        self.verifier = verifier
        self.trainer = trainer
        if trainer is not None:
            tag_trainer(trainer)
        self.tokenizer = tokenizer
        # Q(D) does not depend on the model: measure it once, before training.
        self.example_quality = {
            name: quality_per_example(dataset, verifier, reward_column=self.args.reward_column, name=name)
            for name, dataset in self.candidates.responses.items()
        }
        wrong = [name for name, q in self.example_quality.items() if not any(v > 0 for v in q)]
        if len(wrong) == len(self.example_quality):
            raise ValueError(
                f"Every candidate dataset has quality Q = 0 (no correct response in {wrong}): DMC would train on wrong "
                "answers only. Check the `correct` column / verifier, or give a dataset with correct responses."
            )
        if wrong:
            logger.warning(
                "Candidate dataset(s) %s have quality Q = 0 (no correct response): DMC = 0, so the %r strategy never "
                "draws them (the mixture gives them weight 0).",
                wrong,
                self.args.strategy,
            )
        self.scores: dict | None = None  # the last round's capability, per-dataset scores and mixture
        self.history: list[dict] = []  # each round's epoch and logged metrics

    # --- checks before training ---------------------------------------------------------------------------------------
    def _check_training_args(self, args) -> None:
        if getattr(args, "packing", False):
            raise ValueError(
                "DMCCallback cannot select examples when `packing=True`: packing merges rows, so the sampler's indices "
                "no longer name candidate examples. Set `packing=False` (`padding_free=True` keeps most of its speed)."
            )

    def on_init_end(self, args, state, control, **kwargs):
        self._check_training_args(args)

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self._check_training_args(args)
        if hasattr(kwargs.get("model"), "add_model_tags"):
            kwargs["model"].add_model_tags(DMC_TAGS)  # the model's own card, when it is pushed
        if isinstance(find_batch_sampler(train_dataloader).sampler, SelectionSampler):
            raise ValueError(
                "The train dataloader already draws through a selection sampler, so another selection (e.g. "
                "SCASTrainer's answer selection on a candidate pool) owns it; two selections would overwrite each "
                "other. Use DMCCallback with plain prompt–completion candidate datasets."
            )
        super().on_train_begin(args, state, control, train_dataloader=train_dataloader, **kwargs)
        if self.sampler.num_samples != len(self.candidates):
            raise ValueError(
                f"The trainer's train dataset has {self.sampler.num_samples} rows but the candidates have "
                f"{len(self.candidates)}; train on `candidates.train_dataset` (unfiltered, unpacked, with a `max_length` "
                "that drops no row) so that row indices name candidate examples."
            )

    # --- one round -------------------------------------------------------------------------------------------------------
    def measure(self, model, tokenizer, *, max_length: int | None = None, truncation_mode: str = "keep_start") -> dict:
        """DMC of every candidate dataset (and, for `top_fraction`, of every example) under `model` as it is now.

        `max_length` and `truncation_mode` cut the responses as the trainer cuts what it trains (see
        [`response_nll`]); [`reselect`] passes the trainer's own.
        """
        a = self.args
        cut = {"max_length": max_length, "truncation_mode": truncation_mode}
        seed = self.sampler.seed if self.sampler is not None else (a.selection_seed or 0)
        dev = self.dev_dataset.select(probe_indices(len(self.dev_dataset), a.dev_size, seed, what="dev_size"))
        c = capability(
            model,
            tokenizer,
            dev,
            self.verifier,
            max_new_tokens=a.max_new_tokens,
            batch_size=a.generation_batch_size,
            correct_threshold=a.correct_threshold,
            system=a.system,
            plain_prompts_as_chat=plain_prompts_as_chat_for(self.candidates.responses),
        )
        per_dataset, example_dmc = {}, None
        if a.strategy == "top_fraction":  # every row is scored, so L(D) uses all of them
            nll = response_nll(
                model, tokenizer, self.candidates.responses_dataset, a.scoring_batch_size, a.system, **cut
            )
            example_dmc = []
        for name in self.candidates.names:
            span = self.candidates.ranges[name]
            if example_dmc is not None:
                results = nll[span.start : span.stop]
            else:
                probe = probe_indices(len(span), a.probe_size, seed)
                responses = self.candidates.responses[name].select(probe)
                results = response_nll(model, tokenizer, responses, a.scoring_batch_size, a.system, **cut)
            difficulty = sum(t for t, _ in results) / max(1, sum(n for _, n in results))
            quality = float(np.mean(self.example_quality[name]))
            per_dataset[name] = {
                "quality": quality,
                "difficulty": difficulty,
                "dmc": compatibility(quality, difficulty, c, a.beta),
            }
            if example_dmc is not None:
                # example-level form: dmc_i = q_i / (1 + β (1 − C) ℓ̄_i)
                mean_nll = [t / max(1, n) for t, n in results]
                example_dmc += compatibility(self.example_quality[name], mean_nll, c, a.beta).tolist()
        return {"capability": c, "datasets": per_dataset, "example_dmc": example_dmc}

    def select(self, scores: dict) -> tuple[list[int], list[float] | None, dict[str, float]]:
        """The selection, its sampling weights and each dataset's share of the draws, from `measure`'s scores."""
        names, ranges = self.candidates.names, self.candidates.ranges
        dmc = [scores["datasets"][name]["dmc"] for name in names]
        if self.args.strategy == "top_dataset":
            best = names[int(np.argmax(dmc))]  # ties: the first dataset given
            return list(ranges[best]), None, {name: float(name == best) for name in names}
        if self.args.strategy == "mixture":
            quality = [float(np.mean(self.example_quality[name])) for name in names]  # Q(D), fixed
            weights = mixture_weights(dmc, self.args.temperature, quality)
            selection, per_row = [], []
            for name, w in zip(names, weights):
                selection += list(ranges[name])
                per_row += [float(w) / len(ranges[name])] * len(ranges[name])
            return selection, per_row, {name: float(w) for name, w in zip(names, weights)}
        example_dmc = scores["example_dmc"]
        keep = max(1, math.ceil(self.args.top_fraction * len(example_dmc)))
        selection = sorted(sorted(range(len(example_dmc)), key=lambda i: (-example_dmc[i], i))[:keep])
        share = {name: sum(i in ranges[name] for i in selection) / keep for name in names}
        return selection, None, share

    def reselect(self, epoch: int, sampler: SelectionSampler, model=None, processing_class=None, state=None, **kwargs):
        start = time.perf_counter()
        tokenizer = self.tokenizer or getattr(processing_class, "tokenizer", processing_class)
        if tokenizer is None:
            raise ValueError(
                "DMCCallback needs a tokenizer: pass `tokenizer=` or give the trainer a processing_class."
            )
        # SFTTrainer trains each row cut to `max_length` (an SFTConfig's; a plain Trainer's args have none): L is
        # measured on those tokens, not on ones that are never trained (a long answer's tail, its end of turn)
        args = kwargs.get("args")
        cut = {"max_length": getattr(args, "max_length", None)}
        cut["truncation_mode"] = getattr(args, "truncation_mode", "keep_start")
        scores = self.measure(model, tokenizer, **cut)
        selection, weights, share = self.select(scores)
        sampler.select(selection, weights)
        self.scores = {
            "epoch": epoch,
            "capability": scores["capability"],
            "datasets": scores["datasets"],
            "weights": share,
        }
        metrics = {"dmc/capability": scores["capability"]}
        for name, values in scores["datasets"].items():
            metrics.update({f"dmc/{name}/{key}": value for key, value in values.items()})
            metrics[f"dmc/{name}/weight"] = share[name]
        metrics["dmc/reselection_seconds"] = time.perf_counter() - start
        self.history.append({"epoch": epoch, "metrics": metrics})
        if self.trainer is not None:
            self.trainer.log(metrics)
        elif state is not None:
            state.log_history.append({**metrics, "epoch": state.epoch, "step": state.global_step})

    def rounds(self) -> list[tuple[int, dict[str, float]]]:
        return [(record["epoch"], record["metrics"]) for record in self.history]

    def extra_state(self) -> dict:
        return {"scores": self.scores, "history": self.history}

    def load_extra_state(self, state: dict) -> None:
        self.scores = state.get("scores")
        self.history = list(state.get("history", []))
