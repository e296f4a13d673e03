"""SCAS selection: per prompt, one verified answer chosen from its learning-cost rank group.

Correct candidates of a prompt are sorted by learning cost `S` ascending (ties by teacher name, then row), ranked
`r = 1..n`, and put in group `g(r) = min(G, max(1, ceil(r·G/n)))`; one answer is drawn uniformly at random (seeded
per prompt) from the chosen group (group 1 by default). Selection is a pure function of the scores and the seed.

Baselines with the same interface: `best_teacher` (the answer of the most accurate teacher in the pool that answered
the prompt correctly), `random` (a uniform draw among correct answers) and `min_nll` (lowest answer NLL `d_A`).
"""

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from ..core.pool import prompt_groups


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
    if hasattr(pool, "column_names"):
        return list(pool[name]) if name in pool.column_names else None
    return [row.get(name) for row in pool] if all(name in row for row in pool) else None


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
) -> SCASSelection:
    """Chooses one answer per prompt of a long-form pool.

    Args:
        pool: the long-form pool (a `Dataset`, a dict of columns or a list of rows) with `prompt_id`, `teacher` and
            `correct`; see [`to_long_pool`].
        scores (`list[dict]` or `list[float]`, *optional*): per row, the output of [`scas_scores`] or the learning
            cost alone (`None` allowed on rows that do not compete); read from the pool's `learning_cost` (and `d_A`)
            columns when omitted. Not needed by `best_teacher` and `random`.
        strategy (`str`, defaults to `"scas"`): `"scas"`, `"best_teacher"`, `"random"` or `"min_nll"`.
        group (`int`, defaults to 1): the SCAS rank group to draw from (1 = lowest learning cost).
        num_groups (`int`, defaults to 5): `G`, the number of rank groups.
        only_correct (`bool`, defaults to `True`): only verified-correct candidates compete.
        seed (`int`, defaults to 0): seed of the per-prompt draws.
        strict (`bool`, defaults to `False`): raise on prompts without an eligible candidate instead of skipping them.
        warn (`bool`, defaults to `True`): log a warning naming the skipped prompts (they stay in `skipped` either way).

    Returns:
        [`SCASSelection`]
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown selection strategy {strategy!r}; choose one of {STRATEGIES}.")
    if num_groups < 1 or not 1 <= group <= num_groups:
        raise ValueError(f"Need 1 <= group <= num_groups, got group={group}, num_groups={num_groups}.")
    prompt_ids, teachers = _column(pool, "prompt_id"), _column(pool, "teacher")
    if prompt_ids is None or teachers is None:
        raise ValueError(
            "scas_select needs a long-form pool with `prompt_id` and `teacher` columns (see to_long_pool)."
        )
    correct = _column(pool, "correct") if only_correct else None
    correct = [True] * len(prompt_ids) if correct is None else [bool(c) for c in correct]
    if only_correct and _column(pool, "correct") is None:
        raise ValueError(
            "only_correct=True needs a `correct` column; verify the answers first or pass only_correct=False."
        )

    cost, nll = None, None
    if strategy in ("scas", "min_nll"):
        if scores is None:
            cost, nll = _column(pool, "learning_cost"), _column(pool, "d_A")
        elif any(isinstance(s, dict) for s in scores):  # rows that cannot compete may hold None
            cost = [None if s is None else s["learning_cost"] for s in scores]
            nll = [None if s is None else s.get("d_A") for s in scores]
        else:
            cost, nll = list(scores), None
        key = cost if strategy == "scas" else nll
        if key is None or len(key) != len(prompt_ids) or any(v is None for v, c in zip(key, correct) if c):
            raise ValueError(
                f"Strategy {strategy!r} needs a {'learning_cost' if strategy == 'scas' else 'd_A'} score for every "
                f"eligible one of the {len(prompt_ids)} rows; pass the output of scas_scores."
            )

    accuracy = teacher_accuracy(teachers, correct) if strategy == "best_teacher" else None
    indices, selected_prompts, skipped = [], [], []
    groups = [0] * len(prompt_ids)
    for prompt_id, rows in prompt_groups(prompt_ids).items():
        eligible = [i for i in rows if correct[i]]
        if not eligible:
            skipped.append(prompt_id)
            continue
        rng = random.Random(f"{seed}:{prompt_id}")
        if strategy == "scas":
            ranked = sorted(eligible, key=lambda i: (cost[i], str(teachers[i]), i))
            members: dict[int, list[int]] = {}
            for rank, i in enumerate(ranked, start=1):
                groups[i] = rank_group(rank, len(ranked), num_groups)
                members.setdefault(groups[i], []).append(i)
            choice = rng.choice(_pick_group(members, group))
        elif strategy == "min_nll":
            choice = min(eligible, key=lambda i: (nll[i], str(teachers[i]), i))
        elif strategy == "best_teacher":
            choice = min(eligible, key=lambda i: (-accuracy[teachers[i]], str(teachers[i]), i))
        else:
            choice = rng.choice(eligible)
        indices.append(choice)
        selected_prompts.append(prompt_id)

    if skipped:
        message = (
            f"{len(skipped)} of {len(skipped) + len(indices)} prompts have no "
            f"{'verified-correct ' if only_correct else ''}candidate (e.g. prompt_id {skipped[0]!r})"
        )
        if strict:
            raise ValueError(f"{message}. Add correct answers for them, drop them, or set strict=False to skip them.")
        if warn:
            logger.warning(f"{message}; they are skipped.")
    if not indices:
        raise ValueError("No prompt has an eligible candidate: nothing to train on. Check the `correct` flags.")
    return SCASSelection(indices=indices, prompt_ids=selected_prompts, skipped=skipped, groups=groups)
