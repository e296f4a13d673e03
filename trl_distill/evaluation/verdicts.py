"""Verdicts as plain Python values, read strictly: what a judge function or a pre-computed table returns for one item,
turned into a [`SimilarityScore`] (RSE) or an [`IdentityVerdict`] (ICE), or refused with a `ValueError` naming the
value, the item and the judge. (Replies of LLM judges, which are text, are parsed in [`~trl_distill.evaluation.rubrics`].)
"""

from collections.abc import Mapping

from .rubrics import RSE_RANGES, IdentityVerdict, JudgeParseError, SimilarityScore, as_number


_JUDGE_TRUE, _JUDGE_FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def judge_bool(value, field_name: str, item: int, judge_name: str) -> bool:
    """A judge's yes/no answer read strictly: a `bool`, `0`/`1`, or the strings `"true"`/`"false"`/`"yes"`/`"no"`
    (any case, surrounding spaces ignored). Anything else raises a `ValueError` naming the value, field, item and
    judge: `bool("false")` is `True`, so a loose reading would turn a "no" into a "yes"."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy / torch scalars
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _JUDGE_TRUE:
            return True
        if word in _JUDGE_FALSE:
            return False
    raise ValueError(
        f"Judge {judge_name} answered {field_name}={value!r} ({type(value).__name__}) for item {item}; it must be a "
        'boolean, 0/1, or "true"/"false"/"yes"/"no". Return one of these (None, for the whole verdict, marks an item '
        "the judge could not decide)."
    )


def identity_verdict(value, item: int, judge_name: str) -> IdentityVerdict | None:
    """An ICE verdict from what a judge returned: an [`IdentityVerdict`], a mapping with `conflict` and
    `claims_other_model` (optionally `claimed_name`), a `(conflict, claims_other_model)` pair, or `None` (the judge
    could not decide). The yes/no fields are read by [`judge_bool`]; any other value raises a `ValueError`."""
    if value is None:
        return None
    if isinstance(value, IdentityVerdict):
        conflict, other, name = value.conflict, value.claims_other_model, value.claimed_name
    elif isinstance(value, Mapping) and {"conflict", "claims_other_model"} <= set(value):
        conflict, other, name = value["conflict"], value["claims_other_model"], value.get("claimed_name")
    elif isinstance(value, tuple) and len(value) == 2:
        (conflict, other), name = value, None
    else:
        raise ValueError(
            f"Judge {judge_name} returned {value!r} for item {item}; an ICE verdict is an IdentityVerdict, a mapping "
            "with 'conflict' and 'claims_other_model', a (conflict, claims_other_model) pair, or None."
        )
    return IdentityVerdict(
        judge_bool(conflict, "conflict", item, judge_name),
        judge_bool(other, "claims_other_model", item, judge_name),
        name,
    )


def similarity_score(value, item: int, judge_name: str) -> SimilarityScore:
    """An RSE score from what a judge returned: a [`SimilarityScore`], a number (the overall 1–5 similarity) or a
    mapping with `overall` (and optionally `style`, `logic`, `content`, 0–2). Any other value, or a field out of its
    range ([`~trl_distill.evaluation.rubrics.RSE_RANGES`]), raises a `ValueError`; `None` is the caller's to handle."""
    if isinstance(value, SimilarityScore):
        value = value.to_dict()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = {"overall": value}
    unreadable = f"Judge {judge_name} returned {value!r} for item {item}; see FunctionJudge for what it may return."
    if not isinstance(value, Mapping) or "overall" not in value:
        raise ValueError(unreadable)
    try:
        fields = {k: None if value.get(k) is None else as_number(k, value[k]) for k in RSE_RANGES}
    except JudgeParseError as error:
        raise ValueError(unreadable) from error
    for key, (low, high) in RSE_RANGES.items():
        if fields[key] is not None and not low <= fields[key] <= high:
            raise ValueError(f"Judge {judge_name} gave {key}={fields[key]} for item {item}; it must lie in "
                             f"[{low}, {high}].")  # fmt: skip
    return SimilarityScore(**fields)
