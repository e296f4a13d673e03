"""Choosing *which* examples an epoch trains on, without rebuilding the dataloader.

transformers builds the train dataloader once per `train()`, so assigning `trainer.train_dataset` in a callback
changes nothing. Instead the dataloader draws from a [`SelectionSampler`] whose selection a callback replaces at an
epoch boundary. The epoch length never changes (the learning-rate schedule and step counts stay valid), the order is
a pure function of (selection, weights, seed, epoch), so every process draws the same indices, and the state is
saved in checkpoints through `TrainerState.stateful_callbacks`.
"""

import hashlib
import json
import logging
import math

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import BatchSampler, Sampler
from transformers import TrainerCallback


logger = logging.getLogger(__name__)


class SelectionSampler(Sampler[int]):
    """Draws `num_samples` dataset indices per epoch from the current selection.

    Without weights, the selection is shuffled (seeded by `seed + epoch`) and repeated or cut to `num_samples`; with
    weights, indices are drawn with replacement in proportion to them (mixtures).

    Args:
        num_samples (`int`): indices per epoch; fixed for the life of the sampler.
        selection (`list[int]`, *optional*): the initial selection; all of `range(num_samples)` by default.
        seed (`int`, defaults to 0): base seed of the shuffle.
        shuffle (`bool`, defaults to `True`): shuffle each epoch; otherwise keep the selection's order.
    """

    def __init__(self, num_samples: int, selection: list[int] | None = None, seed: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.weights: list[float] | None = None
        self.selection: list[int] = list(range(num_samples))
        if selection is not None:
            self.select(selection)

    def select(self, selection, weights=None) -> None:
        """Replaces the selection (dataset indices) and, optionally, per-index sampling weights."""
        selection = [int(i) for i in selection]
        if not selection:
            raise ValueError("A selection needs at least one index; nothing would be trained on.")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(selection):
                raise ValueError(f"Got {len(weights)} weights for {len(selection)} selected indices.")
            if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
                raise ValueError("Selection weights must be finite, non-negative and not all zero.")
        self.selection, self.weights = selection, weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int | None = None) -> list[int]:
        """The indices drawn in `epoch` (the current one by default), in order."""
        generator = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        selection = torch.tensor(self.selection)
        if self.weights is not None:
            draws = torch.multinomial(torch.tensor(self.weights), self.num_samples, True, generator=generator)
            return selection[draws].tolist()
        repeats = math.ceil(self.num_samples / len(selection))
        order = [torch.randperm(len(selection), generator=generator) if self.shuffle else torch.arange(len(selection))]
        order += [torch.randperm(len(selection), generator=generator) for _ in range(repeats - 1)]
        return selection[torch.cat(order)[: self.num_samples]].tolist()

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        return {
            "selection": self.selection,
            "weights": self.weights,
            "seed": self.seed,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"The checkpoint's selection has {state['num_samples']} samples per epoch but this run has "
                f"{self.num_samples}; resume with the same dataset and batch settings."
            )
        self.seed = state["seed"]
        self.select(state["selection"], state["weights"])


def find_batch_sampler(dataloader) -> BatchSampler:
    """The innermost `BatchSampler` of a (possibly accelerate-prepared) dataloader."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    while batch_sampler is not None and not hasattr(batch_sampler, "sampler"):
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    if batch_sampler is None:
        raise ValueError(
            "The train dataloader has no batch sampler to select examples through (an IterableDataset, or "
            "`dispatch_batches=True`). Data selection needs a map-style dataset."
        )
    return batch_sampler


def install_selection_sampler(dataloader, seed: int = 0) -> SelectionSampler:
    """Returns the dataloader's [`SelectionSampler`], swapping one in for its sampler if it has none.

    The new sampler keeps the old one's length, so the epoch length and the schedule the trainer computed hold.
    """
    batch_sampler = find_batch_sampler(dataloader)
    if not isinstance(batch_sampler.sampler, SelectionSampler):
        batch_sampler.sampler = SelectionSampler(len(batch_sampler.sampler), seed=seed)
    return batch_sampler.sampler


def fingerprint_of(values) -> str:
    """A short hash of JSON-able `values` (ids, names, flags), for [`SelectionCallback.data_fingerprint`]."""
    return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:16]


def rows_fingerprint(dataset) -> dict:
    """What a selection's row indices address in `dataset` (the train dataloader's): its number of rows and, for a
    tokenized `datasets.Dataset`, a hash of every row's `input_ids` in order, so that a rebuilt, re-ordered, filtered
    or re-tokenized dataset does not match. `{}` for a dataset of unknown length."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return {}
    fingerprint = {"rows": len(dataset)}
    if hasattr(dataset, "with_format") and "input_ids" in (getattr(dataset, "column_names", None) or ()):
        digest, rows = hashlib.sha256(), dataset.select_columns(["input_ids"]).with_format("arrow")
        for batch in rows.iter(batch_size=4096):  # in batches: bounded memory on a large dataset
            column = batch.column("input_ids").combine_chunks()
            digest.update(pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
            digest.update(column.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        fingerprint["input_ids"] = digest.hexdigest()[:16]
    return fingerprint


def epoch_of(state) -> int:
    """The epoch that is about to start (or running), from a `TrainerState`."""
    return int(math.floor((state.epoch or 0.0) + 1e-6))


class SelectionCallback(TrainerCallback):
    """Base for callbacks that choose the training examples of each epoch through a [`SelectionSampler`].

    Subclasses implement `reselect(epoch, sampler, **kwargs)`, which calls `sampler.select(...)`. It runs at the
    start of training and of every `reselect_every`-th epoch, with the callback kwargs (`model`, `processing_class`,
    `train_dataloader`, ...). `extra_state()` / `load_extra_state()` carry what else the subclass must resume.
    The state is kept in `TrainerState.stateful_callbacks` under `trl_distill.<ClassName>`, so it is written into
    every checkpoint's `trainer_state.json`; on resume the last selection is restored from there instead of being
    recomputed, unless a new round is due. The state holds a fingerprint of the data the selection's row indices
    address ([`data_fingerprint`]); resuming on other data (rebuilt, re-ordered, filtered, re-tokenized) is refused
    before training, as the restored indices would name other rows.

    Args:
        reselect_every (`int`, defaults to 1): reselect every this many epochs; 0 selects once, before training.
        seed (`int` or `None`, defaults to `None`): seed of the sampler's shuffles; `None` uses the trainer's `seed`,
            so `--seed` changes the data order as it does without the callback. The sampler keeps the seed it used.
    """

    def __init__(self, reselect_every: int = 1, seed: int | None = None):
        if reselect_every < 0:
            raise ValueError(f"reselect_every must be >= 0 (0 = select once), got {reselect_every}.")
        self.reselect_every = reselect_every
        self.seed = seed
        self.sampler: SelectionSampler | None = None
        self.last_round: int | None = None  # epoch of the last selection
        self.fingerprint: dict | None = None  # of the data the selection indexes, set at the start of training

    # --- to implement -------------------------------------------------------------------------------------------
    def reselect(self, epoch: int, sampler: SelectionSampler, **kwargs) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict:
        return {}

    def rounds(self) -> list[tuple[int, dict[str, float]]]:
        """`(epoch, metrics)` of each selection round so far, for the end-of-run summary and the model card."""
        return []

    def load_extra_state(self, state: dict) -> None:
        pass

    # what each hashed part of `data_fingerprint` covers, to say what changed
    fingerprint_labels = {"input_ids": "tokens (`input_ids`) or row order"}

    def data_fingerprint(self, train_dataset) -> dict:
        """What the selection's row indices refer to, saved with the selection and compared on resume: by default
        [`rows_fingerprint`] of the train dataloader's dataset. A subclass adds what else its selection depends on
        (e.g. the `correct` flags that make an answer eligible)."""
        return rows_fingerprint(train_dataset)

    def check_fingerprint(self, saved: dict | None, args, state) -> None:
        """Raises a `ValueError` when the checkpoint's data fingerprint differs from this run's."""
        if not saved or not self.fingerprint:
            if self.fingerprint:
                logger.warning(
                    "The checkpoint's %s state has no data fingerprint (saved by an older trl-distill): whether this "
                    "run's training data is the one its selection indexes cannot be checked.",
                    type(self).__name__,
                )
            return
        changed = [
            f"{key} {saved[key]} in the checkpoint, {value} now"
            if isinstance(value, int)
            else f"other {self.fingerprint_labels.get(key, key)}"
            for key, value in self.fingerprint.items()
            if key in saved and saved[key] != value
        ]
        if not changed:
            return
        where = args.resume_from_checkpoint if isinstance(args.resume_from_checkpoint, str) else "the checkpoint"
        raise ValueError(
            f"Cannot resume {type(self).__name__}'s selection from {where} (step {state.global_step}): the training "
            f"data changed since it was saved ({'; '.join(changed)}). The saved selection names rows by index, so on "
            "rebuilt, re-ordered or filtered data it would train other rows than it chose. Resume with the same "
            "dataset and settings, start fresh (no `resume_from_checkpoint`), or, to keep the checkpoint's weights "
            f"and select anew, delete `stateful_callbacks[{self.state_key!r}]` from its trainer_state.json."
        )

    # --- callback events ----------------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return f"trl_distill.{type(self).__name__}"

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        seed = args.seed if self.seed is None else self.seed
        self.sampler = install_selection_sampler(train_dataloader, seed=seed)
        self.fingerprint = self.data_fingerprint(getattr(train_dataloader, "dataset", None))
        saved = (state.stateful_callbacks or {}).get(self.state_key)
        if state.global_step > 0 and saved:
            self.check_fingerprint(saved.get("fingerprint"), args, state)
            self.sampler.load_state_dict(saved["sampler"])
            self.last_round = saved["last_round"]
            self.load_extra_state(saved.get("extra", {}))
        self._publish(state)

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = epoch_of(state)
        # accelerate can wrap the sampler deeper than `set_epoch` reaches (resume under several processes)
        self.sampler.set_epoch(epoch)
        due = self.last_round is None or (self.reselect_every > 0 and epoch - self.last_round >= self.reselect_every)
        if due:
            self.reselect(epoch, self.sampler, state=state, args=args, **kwargs)
            self.last_round = epoch
            self._publish(state)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the sampler's selection, the epoch of the last round and the subclass's extras."""
        return {
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "last_round": self.last_round,
            "extra": self.extra_state(),
            "fingerprint": self.fingerprint,
        }

    def _publish(self, state) -> None:
        # The trainer writes `stateful_callbacks` into each checkpoint's trainer_state.json.
        state.stateful_callbacks[self.state_key] = self.state_dict()


def selection_rounds(trainer) -> list[tuple[str, int, dict[str, float]]]:
    """`(callback name, epoch, metrics)` of every selection round of `trainer`'s [`SelectionCallback`]s."""
    return [
        (type(callback).__name__, epoch, metrics)
        for callback in trainer.callback_handler.callbacks
        if isinstance(callback, SelectionCallback)
        for epoch, metrics in callback.rounds()
    ]


def selection_card_section(rounds: list[tuple[str, int, dict[str, float]]]) -> str:
    """The model card's "Data selection" section: one Markdown table row per round, one column per metric."""
    if not rounds:
        return ""
    lines = ["## Data selection", ""]
    for name in dict.fromkeys(name for name, _, _ in rounds):
        mine = [(epoch, metrics) for n, epoch, metrics in rounds if n == name]
        keys = list(dict.fromkeys(key for _, metrics in mine for key in metrics))
        lines += [f"Selection rounds of `{name}`:", "", "| epoch | " + " | ".join(f"`{k}`" for k in keys) + " |"]
        lines.append("|---" * (len(keys) + 1) + "|")
        for epoch, metrics in mine:
            cells = [f"{metrics[k]:.4g}" if k in metrics else "" for k in keys]
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def add_selection_to_model_card(trainer, path: str) -> None:
    """Writes the selection rounds into the model card at `path` (before its citations; TRL's card template has no
    place for a trainer's own metrics), replacing the section a previous call wrote. Nothing without a round."""
    section = selection_card_section(selection_rounds(trainer))
    if not section or not trainer.is_world_process_zero():
        return
    with open(path) as f:
        card = f.read()
    start = card.find("## Data selection\n")
    if start >= 0:  # written before (a checkpoint's card): replace it
        end = card.find("\n## ", start + 1)
        card = card[:start] + (card[end + 1 :] if end >= 0 else "")
    at = card.find("## Citations")
    card = card + "\n" + section if at < 0 else card[:at] + section + "\n" + card[at:]
    with open(path, "w") as f:
        f.write(card)
