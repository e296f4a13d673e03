"""The SCAS round: re-score the pool with the current student and switch the trained answers through the sampler."""

from collections import Counter

from ..core.sampler import SelectionCallback, SelectionSampler, fingerprint_of
from .scoring import score_features
from .selection import scas_select


class SCASCallback(SelectionCallback):
    """Scores the candidate pool and selects one answer per prompt at the start of training and every
    `rescore_every` epochs, then hands the selected rows to the train dataloader's [`SelectionSampler`].

    The trainer builds it (see [`SCASTrainer`]); the selection of the last round, and what is needed to count changed
    answers at the next one, are saved in checkpoints and restored on resume.

    Args:
        pool (`dict`): long-form pool columns `prompt_id`, `teacher`, `correct` (`correct` = may compete: verified
            correct, when required, and still present in the prepared training dataset).
        features (`list[dict]`): the scoring features of the prepared training sequences, aligned with `pool`
            (see [`scoring_feature`]); `None` for a row the preparation dropped (never eligible).
        dataset_index (`dict[int, int]`): pool row -> row of the prepared training dataset.
        args ([`SCASConfig`]): the selection and scoring settings.
        pad_token_id (`int`): padding id of the student's tokenizer.
        metrics (`dict[str, list]`, *optional*): the trainer's training metrics (`trainer._metrics["train"]`); each
            round appends its numbers, logged at the next logging step.
    """

    def __init__(self, pool: dict, features: list[dict], dataset_index: dict, args, pad_token_id: int, metrics=None):
        super().__init__(reselect_every=args.rescore_every, seed=args.seed)
        self.pool = pool
        self.features = features
        self.dataset_index = dataset_index
        self.args = args
        self.pad_token_id = pad_token_id
        self.metrics = metrics
        self.teachers = sorted(set(pool["teacher"]), key=str)
        self.selected_rows: dict | None = None  # prompt_id -> pool row of the last round
        self.history: list[dict] = []

    def score(self, model) -> list[dict | None]:
        """Learning costs of the candidates that may compete (`None` elsewhere), under the current `model`."""
        rows = [i for i, eligible in enumerate(self.pool["correct"]) if eligible]
        scores = score_features(
            model,
            [self.features[i] for i in rows],
            self.pad_token_id,
            lmbda=self.args.lmbda,
            batch_size=self.args.scoring_batch_size,
            feature_module=self.args.feature_module,
            q_nll_scope=self.args.q_nll_scope,
        )
        full: list[dict | None] = [None] * len(self.features)
        for i, score in zip(rows, scores):
            full[i] = score
        return full

    def reselect(self, epoch: int, sampler: SelectionSampler, model=None, **kwargs) -> None:
        strategy = self.args.selection_strategy
        scores = self.score(model) if strategy in ("scas", "min_nll") else None
        selection = scas_select(
            self.pool,
            scores,
            strategy=strategy,
            group=self.args.selection_group,
            num_groups=self.args.num_groups,
            only_correct=True,  # `correct` already folds in only_correct and the rows dropped by preparation
            seed=self.args.selection_seed,
            strict=self.args.strict,
            warn=False,  # the trainer warned before training; the skipped prompts never change (scas/skipped_prompts)
            score_key=self.args.selection_score_key,
        )
        sampler.select([self.dataset_index[i] for i in selection.indices])
        sampler.set_epoch(epoch)

        chosen = dict(zip(selection.prompt_ids, selection.indices))
        record = {"epoch": epoch, "selected_rows": [chosen[p] for p in selection.prompt_ids]}
        counts = Counter(self.pool["teacher"][i] for i in selection.indices)
        metrics = {f"scas/teacher_share/{t}": counts[t] / len(selection.indices) for t in self.teachers}
        if scores is not None:
            metrics["scas/learning_cost"] = sum(scores[i]["learning_cost"] for i in selection.indices) / len(chosen)
        if self.selected_rows is not None:
            common = [p for p in chosen if p in self.selected_rows]
            changed = sum(chosen[p] != self.selected_rows[p] for p in common)
            metrics["scas/changed_fraction"] = changed / max(1, len(common))
        metrics["scas/skipped_prompts"] = float(len(selection.skipped))
        record["metrics"] = metrics
        self.history.append(record)
        self.selected_rows = chosen
        if self.metrics is not None:
            for key, value in metrics.items():
                self.metrics[key] = [value]

    fingerprint_labels = SelectionCallback.fingerprint_labels | {
        "candidates": "candidates (prompt ids, teachers, `correct` flags, or their order)"
    }

    def data_fingerprint(self, train_dataset) -> dict:
        """The prepared rows (see [`rows_fingerprint`]) and, in pool order, each candidate's prompt, teacher, `correct`
        flag (eligibility) and training row: a resumed selection must index the same candidates."""
        pool = self.pool
        candidates = [pool["prompt_id"], pool["teacher"], pool["correct"], sorted(self.dataset_index.items())]
        return super().data_fingerprint(train_dataset) | {"candidates": fingerprint_of(candidates)}

    def rounds(self) -> list[tuple[int, dict[str, float]]]:
        return [(record["epoch"], record["metrics"]) for record in self.history]

    def extra_state(self) -> dict:
        rows = None if self.selected_rows is None else [[p, r] for p, r in self.selected_rows.items()]
        return {"selected_rows": rows, "history": self.history}

    def load_extra_state(self, state: dict) -> None:
        rows = state.get("selected_rows")
        self.selected_rows = None if rows is None else {p: r for p, r in rows}
        self.history = list(state.get("history", []))
