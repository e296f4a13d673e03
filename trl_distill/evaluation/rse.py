"""RSE: Response Similarity Evaluation (Lee et al., "Distillation Quantification for Large Language Models", 2025).

The model under test and a reference model answer the same prompts, grouped in named datasets. A judge rates each
pair on style, logical structure and content detail (0–2 each) and overall (1–5, 5 = nearly identical):

    RSE_D = mean_{pairs i in D} overall_i
    RSE   = mean_D RSE_D                      (unweighted over datasets)

Aspect means are computed the same way (per dataset, then unweighted over datasets). Pairs the judge fails on are
left out of every mean and counted. A response identical to its reference scores 5 (2 on each aspect) without asking
the judge, which is what any faithful judge would answer; the reference against itself therefore gives RSE = 5.
"""

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..core.data import named_datasets
from ._report import result_dict, text_table
from .judges import AutomaticJudge, Judge, SimilarityScore, as_judge


logger = logging.getLogger(__name__)


ASPECTS = ("style", "logic", "content")


@dataclass
class RSEResult:
    """
    RSE scores of one model against one reference.

    Args:
        rse (`float`): unweighted mean of the per-dataset scores (1–5).
        per_dataset (`dict[str, dict]`): per dataset: `rse`, the aspect means, `num_pairs` and `num_failed`.
        aspects (`dict[str, float | None]`): style, logic and content means (0–2) over datasets; `None` when the
            judge does not rate aspects.
        num_pairs (`int`): pairs evaluated.
        num_failed (`int`): pairs the judge failed on, left out of the means.
        judge (`str`): the judge's name.
        comparable_to_llm_judges (`bool`): `False` for automatic-judge scores, which rank models but are not on the
            LLM-judge scale.
        pairs (`list[dict]`): every prompt, response, reference and score.
    """

    rse: float
    per_dataset: dict
    aspects: dict
    num_pairs: int
    num_failed: int
    judge: str = ""
    comparable_to_llm_judges: bool = True
    pairs: list = field(default_factory=list)

    def to_dict(self, with_pairs: bool = True) -> dict:
        """The result as plain JSON-ready data."""
        return result_dict(self, "pairs", with_pairs)

    def format_table(self) -> str:
        """A plain-text table: one row per dataset and one for the unweighted mean."""
        header = ["dataset", "RSE", *ASPECTS, "pairs", "failed"]
        rows = [
            (name, d["rse"], *(d[a] for a in ASPECTS), d["num_pairs"], d["num_failed"])
            for name, d in self.per_dataset.items()
        ]
        rows.append(("mean", self.rse, *(self.aspects[a] for a in ASPECTS), self.num_pairs, self.num_failed))
        note = "" if self.comparable_to_llm_judges else " (automatic: ranks models, not comparable to LLM judges)"
        return text_table(header, rows) + f"\njudge: {self.judge}{note}"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def rse_scores(scores_by_dataset: Mapping[str, Sequence[SimilarityScore | None]]) -> dict:
    """
    RSE and aspect means from per-pair judge scores (the formulas of the module docstring).

    Args:
        scores_by_dataset (`Mapping[str, Sequence[SimilarityScore | None]]`):
            Per dataset, one score per pair (`None` where the judge failed).

    Returns:
        `dict` with `rse`, `aspects` and `per_dataset` (each with `rse`, aspect means, `num_pairs`, `num_failed`).
    """
    per_dataset = {}
    for name, scores in scores_by_dataset.items():
        judged = [s for s in scores if s is not None]
        per_dataset[name] = {
            "rse": _mean([s.overall for s in judged]),  # RSE_D = mean overall
            **{a: _mean([getattr(s, a) for s in judged if getattr(s, a) is not None]) for a in ASPECTS},
            "num_pairs": len(scores),
            "num_failed": len(scores) - len(judged),
        }
    scored = [d for d in per_dataset.values() if d["rse"] is not None]
    return {
        "rse": _mean([d["rse"] for d in scored]) if scored else math.nan,  # RSE = unweighted mean over datasets
        "aspects": {a: _mean([d[a] for d in scored if d[a] is not None]) for a in ASPECTS},
        "per_dataset": per_dataset,
    }


def _column(values, column: str = "prompt") -> list:
    # a `datasets.Dataset` (or a list of row dicts) stands for its `prompt` column
    if hasattr(values, "column_names"):
        if column not in values.column_names:
            raise ValueError(f"A dataset given as prompts needs a {column!r} column (columns: {values.column_names}).")
        return list(values[column])
    return list(values)


def _as_datasets(prompts) -> dict[str, list]:
    expected = (
        "`prompts` must map dataset names to lists of prompts or Datasets with a `prompt` column (or be one of these)"
    )
    return named_datasets(prompts, lambda values, name: _column(values), expected, default_name="default")


def _aligned(what: str, values, datasets: dict[str, list]) -> dict[str, list[str]]:
    values = _as_datasets(values)
    missing = sorted(set(datasets) - set(values))
    if missing:
        raise ValueError(
            f"`{what}` has no entry for dataset(s) {missing}; give one list of texts per dataset in `prompts`."
        )
    for dataset, texts in datasets.items():
        if len(values[dataset]) != len(texts):
            raise ValueError(
                f"`{what}[{dataset!r}]` has {len(values[dataset])} texts for {len(texts)} prompts; give one per prompt, "
                "in order."
            )
    # None (e.g. an API call that failed) stays None: the pair is left out and counted, never scored as "None"
    return {dataset: [None if t is None else str(t) for t in values[dataset]] for dataset in datasets}


def _generate(model, tokenizer, datasets, what, max_new_tokens, batch_size, system, show_progress) -> dict[str, list]:
    if tokenizer is None:
        raise ValueError(f"Generating the {what} needs the model's tokenizer; pass it with the model.")
    from ..core.generation import generate_completions
    from ..core.tokenizers import chat_messages

    chat = getattr(tokenizer, "chat_template", None) is not None
    out = {}
    for name, prompts in datasets.items():
        inputs = [chat_messages(p) if chat and isinstance(p, str) else p for p in prompts]
        out[name] = generate_completions(
            model, tokenizer, inputs, max_new_tokens=max_new_tokens, batch_size=batch_size, system=system,
            desc=f"{what} [{name}]", show_progress=show_progress,
        )  # fmt: skip
    return out


def rse(
    prompts,
    responses=None,
    references=None,
    model=None,
    tokenizer=None,
    reference_model=None,
    reference_tokenizer=None,
    judge: Judge | Callable | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    system: str | None = None,
    show_progress: bool = True,
) -> RSEResult:
    """
    Response Similarity Evaluation: how closely a model's responses match a reference model's, judged per pair and
    averaged per dataset, then over datasets. Each side is given as texts or as a model answering greedily in batches.

    Example:
    ```python
    >>> from trl_distill.evaluation.rse import rse
    >>> result = rse({"math": ["What is 2 + 2?"]}, responses={"math": ["4"]}, references={"math": ["2 + 2 = 4."]})
    >>> result.rse, result.per_dataset["math"]
    ```

    Args:
        prompts (`Mapping[str, Sequence]` or `Sequence`): prompts per dataset name (plain strings or conversations, or
            a `Dataset` with a `prompt` column); a single list or Dataset is the dataset `"default"`.
        responses (`Mapping[str, Sequence[str]]` or `Sequence[str]`, *optional*), references (the same, *optional*):
            the texts of the model under test and of the reference model (GPT-4o in the paper), aligned with `prompts`.
        model (`PreTrainedModel`, *optional*), tokenizer (`PreTrainedTokenizerBase`, *optional*): generate `responses`
            instead (chat template applied when the tokenizer has one).
        reference_model (`PreTrainedModel`, *optional*), reference_tokenizer (`PreTrainedTokenizerBase`, *optional*):
            generate `references` instead; `reference_tokenizer` defaults to `tokenizer`.
        judge (`Judge` or `Callable`, *optional*): scores the pairs, by default [`AutomaticJudge`] (ROUGE-L + chrF),
            whose scores rank models but are not comparable to LLM-judge scores. A plain function
            `(prompt, response, reference) -> score` is wrapped in a
            [`~trl_distill.evaluation.judges.FunctionJudge`].
        max_new_tokens (`int`, *optional*, defaults to `512`), batch_size (`int`, *optional*, defaults to `8`),
        system (`str`, *optional*): generation settings.
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Returns:
        [`RSEResult`]: overall and per-dataset RSE, aspect means, failure counts and every pair.

    Raises:
        `ValueError` for no prompts, two dataset names with one string form (`1` and `"1"`), responses or references
        not aligned with the prompts, or a judge returning another number of scores than pairs. A pair whose response or reference is `None` is left out of every mean (counted
        as failed), with a warning naming it.
    """
    datasets = _as_datasets(prompts)
    if not any(datasets.values()):
        raise ValueError("`prompts` holds no prompt; give at least one dataset with prompts.")
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, show_progress=show_progress)
    responses, references = _responses_and_references(
        datasets, responses, references, model, tokenizer, reference_model, reference_tokenizer, gen
    )
    judge = as_judge(judge, default=AutomaticJudge())
    flat = [(name, i) for name, ps in datasets.items() for i in range(len(ps))]
    scores = _judge_pairs(judge, flat, datasets, responses, references)
    return _result(judge, flat, scores, datasets, responses, references)


def _responses_and_references(
    datasets, responses, references, model, tokenizer, reference_model, reference_tokenizer, gen
) -> tuple[dict[str, list], dict[str, list]]:
    """RSE's first step: both sides' texts, generated where a model is given, aligned with the prompts per dataset."""
    if (responses is None) == (model is None):
        raise ValueError("Pass exactly one of `responses` (texts) or `model` (to generate them) for the tested model.")
    if (references is None) == (reference_model is None):
        raise ValueError("Pass exactly one of `references` (texts) or `reference_model` (to generate them).")
    if responses is None:
        responses = _generate(model, tokenizer, datasets, "responses", **gen)
    if references is None:
        references = _generate(reference_model, reference_tokenizer or tokenizer, datasets, "references", **gen)
    return _aligned("responses", responses, datasets), _aligned("references", references, datasets)


def _pairs_without_text(flat, responses, references) -> set[tuple[str, int]]:
    # a pair with no response or no reference is never judged: warned about here, counted as failed in the means
    missing = [(n, i) for n, i in flat if responses[n][i] is None or references[n][i] is None]
    if missing:
        logger.warning(
            "RSE: %d pair(s) have no response or no reference (None) and are left out of every mean (counted as "
            "failed): %s",
            len(missing),
            ", ".join(f"{n}[{i}]" for n, i in missing[:20]) + (" ..." if len(missing) > 20 else ""),
        )
    return set(missing)


def _judge_pairs(judge: Judge, flat, datasets, responses, references) -> list[SimilarityScore | None]:
    """RSE's second step: one score per pair in `flat` order (identical texts score 5 unasked, `None` = failed)."""
    missing = _pairs_without_text(flat, responses, references)
    identical = [(n, i) not in missing and responses[n][i].strip() == references[n][i].strip() for n, i in flat]
    to_judge = [k for k, same in enumerate(identical) if not same and flat[k] not in missing]
    judged = judge.score_similarity(
        [datasets[flat[k][0]][flat[k][1]] for k in to_judge],
        [responses[flat[k][0]][flat[k][1]] for k in to_judge],
        [references[flat[k][0]][flat[k][1]] for k in to_judge],
    )
    judged = list(judged)
    if len(judged) != len(to_judge):  # zip would drop the rest, counted as failures without a word
        raise ValueError(
            f"Judge {judge.name} returned {len(judged)} scores for {len(to_judge)} pairs; a judge must return one "
            "score (or None where it failed) per pair, in order."
        )
    scores: list[SimilarityScore | None] = [None] * len(flat)
    for k, score in zip(to_judge, judged):
        scores[k] = score
    for k, same in enumerate(identical):
        if same:
            # identical texts are "nearly identical" by definition; LLM aspects are 2 each, automatic judges rate none
            aspect = 2.0 if judge.comparable_to_llm_judges else None
            scores[k] = SimilarityScore(overall=5.0, style=aspect, logic=aspect, content=aspect)
    return scores


def _result(judge: Judge, flat, scores, datasets, responses, references) -> RSEResult:
    """RSE's last step: the scores grouped by dataset and averaged ([`rse_scores`]), with every pair kept."""
    by_dataset: dict[str, list] = {name: [] for name in datasets}
    pairs = []
    for (name, i), score in zip(flat, scores):
        by_dataset[name].append(score)
        pairs.append(
            {
                "dataset": name,
                "prompt": datasets[name][i],
                "response": responses[name][i],
                "reference": references[name][i],
                "score": None if score is None else score.to_dict(),
            }
        )
    summary = rse_scores(by_dataset)
    return RSEResult(
        rse=summary["rse"],
        per_dataset=summary["per_dataset"],
        aspects=summary["aspects"],
        num_pairs=len(flat),
        num_failed=sum(d["num_failed"] for d in summary["per_dataset"].values()),
        judge=judge.name,
        comparable_to_llm_judges=judge.comparable_to_llm_judges,
        pairs=pairs,
    )
