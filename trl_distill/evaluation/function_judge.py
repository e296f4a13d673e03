"""Judges from plain functions: [`FunctionJudge`] calls a function per item and reads what it returns strictly
([`~trl_distill.evaluation.verdicts`]); [`as_judge`] turns what a user passes as `judge=` into a [`Judge`]."""

from collections.abc import Callable

from .identity import as_identity_fact
from .judge_base import Judge, check_lengths
from .rubrics import IdentityVerdict, SimilarityScore
from .verdicts import identity_verdict, similarity_score


class FunctionJudge(Judge):
    """
    A judge from a plain function, called once per item.

    - RSE: `function(prompt, response, reference)` returns a [`SimilarityScore`], a number (the overall 1–5
      similarity), a mapping with `overall` (and optionally `style`, `logic`, `content`, 0–2), or `None` when it
      cannot judge the pair.
    - ICE: `function(prompt, response, identity)` returns an [`IdentityVerdict`], a mapping with `conflict` and
      `claims_other_model` (optionally `claimed_name`), a `(conflict, claims_other_model)` pair, or `None`.

    `None` items are recorded in `failures` and left out of the means, as for LLM judges. Any other return value, or a
    score out of range, is a `ValueError` naming the function. ICE's `conflict` and `claims_other_model` are read
    strictly ([`judge_bool`]): booleans, 0/1 or `"true"`/`"false"`/`"yes"`/`"no"`; the string `"false"` is false,
    and anything else (`"maybe"`, `2`, `None` in a field) is refused.

    Args:
        function (`Callable`): the per-item function.
        name (`str`, *optional*): reported with the results; defaults to the function's name.
        comparable_to_llm_judges (`bool`, *optional*, defaults to `True`): whether its RSE scores sit on the
            LLM-judge scale (set `False` for an automatic similarity).
    """

    def __init__(self, function: Callable, name: str | None = None, comparable_to_llm_judges: bool = True):
        super().__init__()
        if not callable(function):
            raise TypeError(f"A judge must be a Judge or a callable, got {type(function).__name__}.")
        self.function = function
        self.name = name or getattr(function, "__name__", None) or type(function).__name__
        self.comparable_to_llm_judges = comparable_to_llm_judges

    def score_similarity(self, prompts, responses, references):
        check_lengths(prompts=prompts, responses=responses, references=references)
        scores: list[SimilarityScore | None] = []
        for i, item in enumerate(zip(prompts, responses, references)):
            value = self.function(*item)
            if value is None:
                self.failures.append({"index": i, "reason": "the judge function returned None", "reply": None})
                scores.append(None)
                continue
            scores.append(similarity_score(value, i, f"function {self.name}"))
        return scores

    def judge_identity(self, prompts, responses, identity):
        check_lengths(prompts=prompts, responses=responses)
        identity = as_identity_fact(identity)
        verdicts: list[IdentityVerdict | None] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            value = self.function(prompt, response, identity)
            if value is None:
                self.failures.append({"index": i, "reason": "the judge function returned None", "reply": None})
            verdicts.append(identity_verdict(value, i, f"function {self.name}"))
        return verdicts


def as_judge(judge, default: Judge | None = None) -> Judge:
    """`judge` as a [`Judge`]: a `Judge` as it is, a plain function wrapped in [`FunctionJudge`], `None` → `default`."""
    if judge is None:
        return default
    if isinstance(judge, Judge):
        return judge
    if callable(judge):
        return FunctionJudge(judge)
    raise TypeError(
        f"`judge` must be a Judge (e.g. IdentityClaimJudge, LocalChatJudge) or a plain function, got "
        f"{type(judge).__name__}."
    )
