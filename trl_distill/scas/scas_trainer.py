"""SCASTrainer: SFT on the answer that is cheapest to learn for the current student, chosen per prompt from a pool."""

import copy
import logging
import os
from dataclasses import fields

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import TrainingArguments
from trl import SFTTrainer

from ..core.pool import POOL_MARKERS, as_dataset, is_candidate_pool, parse_correct, to_long_pool, verify_pool
from ..core.sampler import SelectionSampler, add_selection_to_model_card
from .scas_callback import SCASCallback
from .scas_config import SCASConfig
from .scoring import (
    check_answer_tokens,
    generation_prompt_length,
    has_answer_tokens,
    scoring_feature,
    template_rows,
)
from .selection import scas_select


logger = logging.getLogger(__name__)


def _warn_unverified_sft_rows(dataset: Dataset) -> None:
    """A plain SFT dataset trains every row; one with `correct=False` rows (but no `prompt_id`/`teacher` to select
    among answers) would train its wrong answers too, so say how many, once, before training."""
    if "correct" not in dataset.column_names:
        return
    flags = dataset["correct"]
    wrong = sum(1 for i, flag in enumerate(flags) if flag is not None and not parse_correct(flag, f"Row {i}"))
    if wrong:
        logger.warning(
            "The dataset has a `correct` column but no `prompt_id`/`teacher` columns, so SCASTrainer trains it as plain "
            "SFT, including its %d row(s) with correct=False. Add `prompt_id` and `teacher` columns to select among "
            "verified answers, or drop the wrong rows.",
            wrong,
        )


def check_train_dataset_type(dataset) -> None:
    """Refuses, before training, the datasets SCAS cannot select from: a `DatasetDict` (several splits: which one?)
    and a streamed `IterableDataset` holding a candidate pool (selection scores every answer of a prompt before the
    epoch, so it needs the whole pool; streamed, `SFTTrainer` would train every candidate, wrong answers included). A
    streamed plain SFT dataset is `SFTTrainer`'s, as it is."""
    if isinstance(dataset, DatasetDict | IterableDatasetDict):
        raise TypeError(
            f"`train_dataset` is a {type(dataset).__name__} with splits {sorted(dataset)}; pass one split, e.g. "
            f"`train_dataset=dataset[{next(iter(sorted(dataset)), 'train')!r}]`."
        )
    if not isinstance(dataset, IterableDataset):
        return
    columns = dataset.column_names
    if columns is None:  # features unknown until read (e.g. a streamed JSON file): look at the first row
        first = next(iter(dataset.take(1)), None)
        columns = [] if first is None else list(first)
    if set(POOL_MARKERS) & set(columns):
        raise TypeError(
            f"`train_dataset` is a streamed IterableDataset holding a candidate pool (columns {sorted(columns)}). SCAS "
            "selects one answer per prompt among all of its candidates, so it needs the whole pool as a map-style "
            "`Dataset`; streamed, every candidate would be trained, wrong answers included. Load it without "
            "`streaming=True`, or materialise it: `Dataset.from_generator(lambda: (yield from stream))`, or "
            "`Dataset.from_list(list(stream.take(n)))` for its first `n` rows."
        )
    if "correct" in columns:
        logger.warning(
            "The streamed train dataset has a `correct` column but no `prompt_id`/`teacher` columns, so SCASTrainer "
            "trains it as plain SFT, including any row with correct=False (a stream cannot be counted before "
            "training). Drop the wrong rows, e.g. `stream.filter(lambda row: row['correct'])`."
        )


def eval_pool_rows(dataset: Dataset, only_correct: bool, name: str = "eval_dataset") -> Dataset:
    """A candidate pool given for evaluation, as the SFT rows it is evaluated on: every answer, one row each, with the
    answers verified wrong (`correct=False`) dropped when `only_correct` (as they are never trained), counted in one
    warning. Raises when every answer is wrong."""
    long = to_long_pool(dataset, require_correct=only_correct)
    if not only_correct:
        return long
    keep = [i for i, correct in enumerate(long["correct"]) if correct]
    if not keep:
        raise ValueError(
            f"Every one of the {len(long)} answers of the {name} pool is verified wrong (correct=False): nothing to "
            "evaluate on. Give an eval pool with correct answers, or set `only_correct=False` to keep every answer."
        )
    if len(keep) < len(long):
        logger.warning(
            "Dropped %d of the %d answers of the %s pool that are verified wrong (correct=False): it is evaluated, as "
            "the pool is trained, on verified answers only (`only_correct=False` keeps them).",
            len(long) - len(keep),
            len(long),
            name,
        )
        long = long.select(keep)
    return long


POOL_ROW = "_scas_pool_row"
NUM_TOKENS = "_scas_num_tokens"  # a candidate's token count before the cut to max_length


def trained_answer_mask(row: dict, truncation_mode: str) -> list[int]:
    """The answer positions of a prepared training row: the tokens SFTTrainer trains (its labels: the completion, and
    the assistant mask with `assistant_only_loss`). With `completion_only_loss=False` every token is trained and
    SFTTrainer leaves the completion mask uncut beside the labels, so it is cut here as the ids were."""
    if "completion_mask" not in row:
        return [int(label != -100) for label in row["labels"]]
    mask, n = row["completion_mask"], len(row["input_ids"])
    return mask[:n] if truncation_mode == "keep_start" else mask[len(mask) - n :]


class SCASTrainer(SFTTrainer):
    """Trainer for Student-Centric Answer Selection (SCAS), a drop-in replacement for [`~trl.SFTTrainer`].

    The training dataset is a candidate pool: several teachers' answers per prompt, each with a `correct` flag (long
    form: one row per answer with `prompt_id`, `prompt`, `completion`, `teacher`, `correct`; grouped form: one row per
    prompt with a `candidates` list; answers as strings, as messages, or as whole `messages` conversations). Every
    candidate is tokenized once, by `SFTTrainer`'s preparation, and scored on that prepared sequence (cut to
    `max_length`, on the tokens it trains). Before training, and every `rescore_every` epochs, the pool is scored with
    the current student ([`scas_scores`]'s learning cost) and one answer per prompt is selected ([`scas_select`]); an
    epoch trains on exactly one answer per prompt. The selection
    switches through the train dataloader's [`SelectionSampler`], so the epoch length and the schedule never change.

    Any other dataset (no `candidates`, `prompt_id` or `teacher` column) is a plain SFT dataset and is
    trained exactly as `SFTTrainer` trains it (same examples, same order, same loss): every format `SFTTrainer`
    takes — `text`, `messages`, `prompt`/`completion` (plain or conversational), `conversations`, pre-tokenized
    `input_ids`, `tools` and `chat_template_kwargs` columns, extra columns — and `SFTTrainer`'s own errors for bad
    data.

    Args:
        model: as for [`~trl.SFTTrainer`].
        args ([`SCASConfig`], *optional*): an [`~trl.SFTConfig`] or `TrainingArguments` is converted, with the SCAS
            defaults.
        train_dataset (`Dataset`): the candidate pool, or a plain SFT dataset; a list of rows, a dict of columns or
            the path of a released SCAS pool directory (see [`load_released_pool`]) is converted. Refused before
            training: an empty dataset, a `DatasetDict` (pass one split), a streamed `IterableDataset` holding a pool
            (materialise it as a `Dataset`; see [`check_train_dataset_type`]), and a pool that [`validate_pool`]
            rejects.
        eval_dataset (`Dataset` or `dict[str, Dataset]`, *optional*): a candidate pool is evaluated on its answers
            as SFT rows, without those verified wrong when `only_correct` (see [`eval_pool_rows`]); any other eval
            set as `SFTTrainer` evaluates it.
        reward_funcs (`Callable`, `str` or `list`, *optional*): TRL reward functions, as `GRPOTrainer` takes them
            (e.g. `trl.rewards.accuracy_reward`, or a verifier name such as `"exact_match"`). When given, each
            candidate of a pool (train and eval) is verified with them before training: `correct` is whether its
            summed reward reaches `args.correct_threshold` (see [`verify_pool`]), replacing any `correct` column.
        **kwargs: every other [`~trl.SFTTrainer`] argument, unchanged.
    """

    _tag_names = ["trl", "sft", "trl-distill", "scas"]
    _name = "SCAS"
    _paper = {
        "title": "The Strongest Teacher Is Not Always the Best Teacher: Student-Centric Answer Selection",
        "id": "2605.26872",
        "citation": (
            "@article{scas2026,\n"
            "    title   = {{The Strongest Teacher Is Not Always the Best Teacher: Student-Centric Answer Selection}},\n"
            "    year    = 2026,\n"
            "    eprint  = {arXiv:2605.26872},\n"
            "}"
        ),
    }

    def __init__(
        self,
        model,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        reward_funcs=None,
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = SCASConfig(f"{str(name).split('/')[-1] or 'model'}-SCAS")
        elif isinstance(args, TrainingArguments) and not isinstance(args, SCASConfig):
            # the field values themselves: `to_dict()` masks every `*_token` field (eos_token, pad_token, hub_token)
            args = SCASConfig(**{f.name: getattr(args, f.name) for f in fields(args) if f.init})

        self._scas_pool = None
        check_train_dataset_type(train_dataset)
        if isinstance(train_dataset, str | os.PathLike | list | dict):
            train_dataset = as_dataset(train_dataset, "The train_dataset")
        if reward_funcs is not None:
            train_dataset = self._verified(train_dataset, reward_funcs, args.correct_threshold)
            eval_dataset = self._verified(eval_dataset, reward_funcs, args.correct_threshold)
        eval_dataset = self._eval_rows(eval_dataset, args)
        # Only a candidate pool is SCAS's business; every other dataset (any format SFTTrainer takes, or bad data
        # that SFTTrainer's own checks report) goes to SFTTrainer untouched.
        if isinstance(train_dataset, Dataset) and len(train_dataset) == 0:
            raise ValueError("The dataset is empty: `train_dataset` needs at least one prompt with one answer.")
        is_pool = isinstance(train_dataset, Dataset) and is_candidate_pool(train_dataset)
        if isinstance(train_dataset, Dataset) and not is_pool:
            _warn_unverified_sft_rows(train_dataset)
        if is_pool:
            if args.packing:
                raise ValueError(
                    "SCASTrainer selects one answer (one dataset row) per prompt, which packing would merge with other "
                    "rows. Set `packing=False`."
                )
            if (args.dataset_kwargs or {}).get("skip_prepare_dataset"):
                raise ValueError(
                    "SCASTrainer needs SFTTrainer to prepare the pool (`skip_prepare_dataset` is set); pass the raw "
                    "prompt/completion pool instead."
                )
            long = to_long_pool(train_dataset, require_correct=args.only_correct)
            self._scas_pool = long
            train_dataset = long.add_column(POOL_ROW, list(range(len(long))))

        super().__init__(model, args, data_collator, train_dataset, eval_dataset, **kwargs)

        self.scas_callback = None
        if self._scas_pool is not None:
            self._setup_selection()

    @staticmethod
    def _verified(dataset, reward_funcs, correct_threshold: float):
        """`dataset` with its candidates verified by `reward_funcs` when it is a pool (each of a dict of eval sets)."""
        if isinstance(dataset, dict):
            return {k: SCASTrainer._verified(v, reward_funcs, correct_threshold) for k, v in dataset.items()}
        if isinstance(dataset, Dataset) and is_candidate_pool(dataset):
            return verify_pool(dataset, reward_funcs, correct_threshold)
        return dataset

    @staticmethod
    def _eval_rows(eval_dataset, args):
        # a pool to evaluate on: its (verified) answers as SFT rows; any other eval set is SFTTrainer's
        if isinstance(eval_dataset, dict):  # TRL's several named eval sets (a DatasetDict too)
            return {k: SCASTrainer._eval_rows(v, args) for k, v in eval_dataset.items()}
        if isinstance(eval_dataset, Dataset) and is_candidate_pool(eval_dataset):
            return eval_pool_rows(eval_dataset, args.only_correct)
        return eval_dataset

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if not (isinstance(dataset, Dataset) and POOL_ROW in dataset.column_names):
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        # Tokenized once, uncut, to count each candidate's tokens; the second call sees `input_ids`, so it only
        # truncates (dropping rows left without a trained token), filters and shuffles, with SFTTrainer's own code.
        uncut = copy.copy(args)
        uncut.max_length, uncut.shuffle_dataset = None, False
        dataset = super()._prepare_dataset(dataset, processing_class, uncut, packing, formatting_func, dataset_name)
        dataset = dataset.map(lambda row: {NUM_TOKENS: len(row["input_ids"])}, desc="Counting tokens")
        return super()._prepare_dataset(dataset, processing_class, args, packing, None, dataset_name)

    def _scoring_features(self) -> list[dict | None]:
        """Scoring features of every pool row from the sequence SFTTrainer prepared to train it (cut to max_length),
        so the scored sequence is the trained one; `None` for a row the preparation dropped."""
        long, args = self._scas_pool, self.args
        headers = [0] * len(long)
        if args.q_nll_scope == "prompt_no_gen":  # the only reader of the assistant header's length
            # a row's own `tools`/`chat_template_kwargs` shape its header, as SFTTrainer renders the row
            variables = template_rows(long)
            known = {}
            for i, (pid, prompt, completion) in enumerate(zip(long["prompt_id"], long["prompt"], long["completion"])):
                key = (pid, repr(variables[i]))
                if key not in known:
                    known[key] = generation_prompt_length(self._tokenizer, prompt, completion, **variables[i])
                headers[i] = known[key]
        names = (POOL_ROW, NUM_TOKENS, "input_ids", "labels", "completion_mask")
        prepared = self.train_dataset.select_columns([c for c in names if c in self.train_dataset.column_names])
        features: list[dict | None] = [None] * len(long)
        for row in prepared:
            i = row[POOL_ROW]
            mask = trained_answer_mask(row, args.truncation_mode)
            features[i] = scoring_feature(self._tokenizer, row["input_ids"], mask, headers[i])
            features[i]["truncated"] = row[NUM_TOKENS] > len(row["input_ids"])
        return features

    def _setup_selection(self) -> None:
        long, args = self._scas_pool, self.args
        # Preparation may shuffle rows or drop over-long ones: map pool rows to the prepared dataset's rows.
        dataset_index = {row: i for i, row in enumerate(self.train_dataset[POOL_ROW])}
        features = self._scoring_features()
        for i, (feature, completion) in enumerate(zip(features, long["completion"])):
            if feature is not None and not feature["truncated"]:
                check_answer_tokens(feature, i, completion)
        trainable = [f is not None and has_answer_tokens(f) for f in features]
        if args.max_length is not None and not any(trainable):
            raise ValueError(
                f"max_length={args.max_length} leaves no answer token of any of the {len(long)} candidates (the prompts "
                "fill it): nothing to train on. Raise `max_length` or shorten the prompts."
            )
        # a row the preparation dropped was cut: only the cut leaves a row without a trained token
        cut, lost = sum(f is None or f["truncated"] for f in features), trainable.count(False)
        if cut:
            logger.warning(
                f"{cut} of {len(long)} candidate answers are cut by max_length={args.max_length}; they are scored on "
                f"the truncated sequence, as they are trained"
                + (f", and {lost} have no answer token left and cannot be selected." if lost else ".")
            )
        correct = long["correct"] if args.only_correct else [True] * len(long)
        pool = {
            "prompt_id": long["prompt_id"],
            "teacher": [str(t) for t in long["teacher"]],
            "correct": [bool(c) and t for c, t in zip(correct, trainable)],
        }
        # Checks the pool before training (strict mode raises here) and gives the sampler a valid first selection.
        initial = scas_select(pool, strategy="random", only_correct=True, seed=args.selection_seed, strict=args.strict)
        # trainer state for `_get_train_sampler`: the epoch length (one answer per prompt) and the first selection,
        # which the callback replaces each round; the selection itself survives a resume through the callback's state
        self._scas_num_prompts = len(initial.indices)
        self._scas_initial = [dataset_index[i] for i in initial.indices]
        self.scas_callback = SCASCallback(
            pool,
            features,
            dataset_index,
            args,
            self._tokenizer.pad_token_id,
            metrics=self._metrics["train"],
        )
        self.add_callback(self.scas_callback)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, with the selection rounds (each teacher's share, the learning cost) as a table."""
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        card = os.path.join(self.args.output_dir, "README.md")
        if os.path.isfile(card):
            add_selection_to_model_card(self, card)

    def _get_train_sampler(self, train_dataset=None):
        if self.scas_callback is None:
            return super()._get_train_sampler(train_dataset)
        # One answer per prompt per epoch; the callback swaps which answer before each round's epoch.
        return SelectionSampler(self._scas_num_prompts, self._scas_initial, seed=self.args.seed)
