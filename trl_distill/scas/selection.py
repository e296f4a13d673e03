"""SCAS selection: per prompt, one verified answer chosen from its learning-cost rank group.

Correct candidates of a prompt are sorted by learning cost `S` ascending (ties by teacher name, then row), ranked
`r = 1..n`, and put in group `g(r) = min(G, max(1, ceil(r·G/n)))`; one answer is drawn uniformly at random (seeded
per prompt) from the chosen group (group 1 by default). Selection is a pure function of the scores and the seed.

Baselines with the same interface: `best_teacher` (the answer of the most accurate teacher in the pool that answered
the prompt correctly), `random` (a uniform draw among correct answers) and `min_nll` (lowest answer NLL `d_A`).
The `scas` strategy ranks by any score [`scas_scores`] returns (`score_key`, e.g. the released scorer's
`scas_score_no_diag` or `nll_weight_score`); candidates whose score is NaN never compete (a warning counts them).
"""

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from ..core.pool import as_dataset, parse_correct, prompt_groups, to_long_pool
from .scoring import SCORE_KEYS


logger = logging.getLogger(__name__)

STRATEGIES = ("scas", "best_teacher", "random", "min_nll")


def rank_group(rank: int, n: int, num_groups: int = 5) -> int:
    """SCAS rank group `g(r) = min(G, max(1, ceil(r·G/n)))` of 1-based rank `r` among `n` candidates."""
    return min(num_groups, max(1, math.ceil(rank * num_groups / n)))


@dataclass
class SCASSelection:
    """The answer chosen for each prompt.

    Args:
        indices (`list[int]`): long-pool row of the chosen answer, one per selected prompt, in prompt order.
        prompt_ids (`list`): the prompt of each entry of `indices`.
        skipped (`list`): prompts with no eligible candidate.
        groups (`list[int]`): rank group of every long-pool row among its prompt's eligible candidates, 0 where the
            row is not eligible (for ablations and reports; `scas` strategy only, else all 0).
    """

    indices: list[int]
    prompt_ids: list
    skipped: list = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def teacher_shares(self, teachers) -> dict[str, float]:
        """Share of each teacher among the selected answers."""
        counts = Counter(teachers[i] for i in self.indices)
        return {name: counts[name] / max(1, len(self.indices)) for name in sorted(counts)}


def _column(pool, name):
    if isinstance(pool, dict):
        return list(pool[name]) if name in pool else None
    return list(pool[name]) if name in pool.column_names else None


def _as_columns(pool):
    """A `Dataset` or a dict of columns; a list of rows becomes a `Dataset`, a grouped pool its long form."""
    if not isinstance(pool, dict):
        pool = as_dataset(pool)
    if "candidates" in (pool if isinstance(pool, dict) else pool.column_names):
        pool = to_long_pool(as_dataset(pool), require_correct=False)
    return pool


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def teacher_accuracy(teachers, correct) -> dict[str, float]:
    """Share of verified-correct answers of each teacher in the pool."""
    totals, hits = Counter(teachers), Counter(t for t, c in zip(teachers, correct) if c)
    return {t: hits[t] / totals[t] for t in totals}


def _pick_group(members: dict[int, list[int]], group: int) -> list[int]:
    # With fewer candidates than groups some groups are empty (n=3, G=5 fills groups 2, 4, 5); the nearest
    # non-empty group stands in, the cheaper one on a tie, so group 1 always means "the lowest-cost answers".
    nearest = min(members, key=lambda g: (abs(g - group), g))
    return members[nearest]


def scas_select(
    pool,
    scores: list[dict] | list[float] | None = None,
    strategy: str = "scas",
    group: int = 1,
    num_groups: int = 5,
    only_correct: bool = True,
    seed: int = 0,
    strict: bool = False,
    warn: bool = True,
    score_key: str = "learning_cost",
) -> SCASSelection:
    """Chooses one answer per prompt of a candidate pool.

    Args:
        pool: the pool (a `Dataset`, a dict of columns or a list of rows) with `prompt_id`, `teacher` and `correct`,
            long or grouped (a grouped pool is unfolded as [`to_long_pool`] does, and `scores` follow that order, as
            [`scas_scores`] returns them).
        scores (`list[dict]` or `list[float]`, *optional*): per long-form row, the output of [`scas_scores`] or the
            ranking score alone (`None` allowed on rows that do not compete); read from the pool's `score_key` (and
            `d_A`) columns when omitted. Not needed by `best_teacher` and `random`.
        strategy (`str`, defaults to `"scas"`): `"scas"`, `"best_teacher"`, `"random"` or `"min_nll"`.
        group (`int`, defaults to 1): the SCAS rank group to draw from (1 = lowest learning cost).
        num_groups (`int`, defaults to 5): `G`, the number of rank groups.
        only_correct (`bool`, defaults to `True`): only verified-correct candidates compete.
        seed (`int`, defaults to 0): seed of the per-prompt draws.
        strict (`bool`, defaults to `False`): raise on prompts without an eligible candidate instead of skipping them.
        warn (`bool`, defaults to `True`): log a warning naming the skipped prompts (they stay in `skipped` either way).
        score_key (`str`, defaults to `"learning_cost"`): the score the `scas` strategy ranks by, one of
            [`SCORE_KEYS`] (`"scas_score"`, the released scorer's name, means `learning_cost`).

    Returns:
        [`SCASSelection`]
    """
    score_key = _check_args(strategy, score_key, group, num_groups)
    pool = _as_columns(pool)
    prompt_ids, teachers, flags = _pool_columns(pool, strategy, only_correct)
    correct = flags if only_correct else [True] * len(prompt_ids)
    cost, nll = None, None
    if strategy in ("scas", "min_nll"):
        cost, nll = _ranking_scores(pool, scores, strategy, score_key, len(prompt_ids))
        key, name = (cost, score_key) if strategy == "scas" else (nll, "d_A")
        correct = _drop_unscored(key, name, correct, prompt_ids, strategy)

    accuracy = teacher_accuracy(teachers, flags) if strategy == "best_teacher" else None
    indices, selected_prompts, skipped = [], [], []
    groups = [0] * len(prompt_ids)
    for prompt_id, rows in prompt_groups(prompt_ids).items():
        eligible = [i for i in rows if correct[i]]
        if not eligible:
            skipped.append(prompt_id)
            continue
        rng = random.Random(f"{seed}:{prompt_id}")
        indices.append(_choose(strategy, eligible, rng, cost, nll, teachers, accuracy, group, num_groups, groups))
        selected_prompts.append(prompt_id)
    _report_skipped(skipped, len(indices), only_correct, strict, warn)
    return SCASSelection(indices=indices, prompt_ids=selected_prompts, skipped=skipped, groups=groups)


def _check_args(strategy: str, score_key: str, group: int, num_groups: int) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown selection strategy {strategy!r}; choose one of {STRATEGIES}.")
    score_key = "learning_cost" if score_key == "scas_score" else score_key
    if score_key not in SCORE_KEYS:
        raise ValueError(f"Unknown score_key {score_key!r}; choose one of {SCORE_KEYS}.")
    if num_groups < 1 or not 1 <= group <= num_groups:
        raise ValueError(f"Need 1 <= group <= num_groups, got group={group}, num_groups={num_groups}.")
    return score_key


def _pool_columns(pool: dict, strategy: str, only_correct: bool) -> tuple[list, list, list[bool] | None]:
    """`prompt_id`, `teacher` and the parsed `correct` flags (`None` when the pool has none) of a columnar pool."""
    prompt_ids, teachers = _column(pool, "prompt_id"), _column(pool, "teacher")
    if prompt_ids is None or teachers is None:
        raise ValueError(
            "scas_select needs a pool with `prompt_id` and `teacher` columns, long or grouped (see to_long_pool)."
        )
    flags = _column(pool, "correct")
    if flags is not None:
        flags = [parse_correct(c, f"Row {i}") for i, c in enumerate(flags)]
    if only_correct and flags is None:
        raise ValueError(
            "only_correct=True needs a `correct` column; verify the answers first or pass only_correct=False."
        )
    if strategy == "best_teacher" and flags is None:
        raise ValueError("strategy='best_teacher' ranks teachers by accuracy and needs a `correct` column.")
    return prompt_ids, teachers, flags


def _ranking_scores(
    pool: dict, scores, strategy: str, score_key: str, num_rows: int
) -> tuple[list | None, list | None]:
    """The learning costs and the `d_A` NLLs per row, from `scores` or, when omitted, from the pool's columns."""
    if scores is None:
        return _column(pool, score_key), _column(pool, "d_A")
    if not any(isinstance(s, dict) for s in scores):  # bare ranking scores
        return list(scores), None
    if len(scores) == num_rows and strategy == "scas":  # rows that cannot compete may hold None
        missing = next((s for s in scores if s is not None and score_key not in s), None)
        if missing is not None:
            raise ValueError(f"The scores have no {score_key!r} (keys: {sorted(missing)}); pass scas_scores' output.")
    cost = [None if s is None else s.get(score_key) for s in scores]
    nll = [None if s is None else s.get("d_A") for s in scores]
    return cost, nll


def _drop_unscored(key: list | None, name: str, correct: list[bool], prompt_ids: list, strategy: str) -> list[bool]:
    """Checks one score per eligible row; rows whose score is NaN stop competing (warned with an example)."""
    if key is not None and len(key) != len(prompt_ids):
        raise ValueError(
            f"Got {len(key)} scores for the {len(prompt_ids)} rows of the pool: too "
            f"{'many' if len(key) > len(prompt_ids) else 'few'}. Pass one score per long-form row (scas_scores' "
            "output, in the order of to_long_pool)."
        )
    if key is None or any(v is None for v, c in zip(key, correct) if c):
        raise ValueError(
            f"Strategy {strategy!r} needs a {name} score for every eligible one of the {len(prompt_ids)} rows; "
            "pass the output of scas_scores."
        )
    nan_rows = [i for i, (v, c) in enumerate(zip(key, correct)) if c and _is_nan(v)]
    if nan_rows:
        logger.warning(
            f"{len(nan_rows)} candidate(s) have a NaN {name} (e.g. row {nan_rows[0]}, prompt_id "
            f"{prompt_ids[nan_rows[0]]!r}) and do not compete; a NaN score usually means the scoring forward "
            "overflowed (score in float32 or bfloat16, not float16)."
        )
    return [c and not _is_nan(v) for v, c in zip(key, correct)]


def _choose(strategy: str, eligible, rng, cost, nll, teachers, accuracy, group: int, num_groups: int, groups) -> int:
    """One prompt's answer among its `eligible` rows: SCAS draws (`rng`, seeded per prompt) from rank group `group`;
    the baselines take the lowest `d_A`, the most accurate teacher's answer, or a uniform draw."""
    if strategy == "scas":
        return rng.choice(_pick_group(_rank_groups(eligible, cost, teachers, num_groups, groups), group))
    if strategy == "min_nll":
        return min(eligible, key=lambda i: (nll[i], str(teachers[i]), i))
    if strategy == "best_teacher":
        return min(eligible, key=lambda i: (-accuracy[teachers[i]], str(teachers[i]), i))
    return rng.choice(eligible)


def _rank_groups(eligible: list[int], cost: list, teachers: list, num_groups: int, groups: list[int]) -> dict:
    """SCAS's rank groups of one prompt's candidates (1 = lowest learning cost); writes each row's group into
    `groups` and returns the rows of each group."""
    ranked = sorted(eligible, key=lambda i: (cost[i], str(teachers[i]), i))
    members: dict[int, list[int]] = {}
    for rank, i in enumerate(ranked, start=1):
        groups[i] = rank_group(rank, len(ranked), num_groups)
        members.setdefault(groups[i], []).append(i)
    return members


def _report_skipped(skipped: list, num_selected: int, only_correct: bool, strict: bool, warn: bool) -> None:
    if skipped:
        message = (
            f"{len(skipped)} of {len(skipped) + num_selected} prompts have no "
            f"{'verified-correct ' if only_correct else ''}candidate (e.g. prompt_id {skipped[0]!r})"
        )
        if strict:
            raise ValueError(f"{message}. Add correct answers for them, drop them, or set strict=False to skip them.")
        if warn:
            logger.warning(f"{message}; they are skipped.")
    if not num_selected:
        raise ValueError("No prompt has an eligible candidate: nothing to train on. Check the `correct` flags.")
