"""What the lab's verdicts are made of: statistics over seeds, measured preconditions, and the verdict rules."""

import math


# --- statistics -------------------------------------------------------------------------------------------------------
def summary(values) -> dict:
    """Mean, sample standard deviation and the values themselves."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "values": values, "n": len(values)}


def compare(method: dict, baseline: dict, higher_is_better: bool = True) -> dict:
    """Whether `method` beats `baseline` across seeds: the difference of means against its standard error.

    `reproduced` when the method is better by more than one standard error of the difference, `not reproduced` when it
    is not better (worse or exactly tied), `inconclusive` when it is better by less than one standard error.
    """
    diff = method["mean"] - baseline["mean"]
    diff = diff if higher_is_better else -diff
    se = math.sqrt(method["std"] ** 2 / method["n"] + baseline["std"] ** 2 / baseline["n"])
    if diff > se and diff > 0:
        verdict = "reproduced"
    elif diff <= 0:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return {"difference": diff, "standard_error": se, "verdict": verdict}


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); `nan` when either side is constant."""

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


# --- preconditions ----------------------------------------------------------------------------------------------------
NO_MECHANISM = "no mechanism here"
# a method an experiment prints beside the compared ones (`reference_lines` in its results) that its verdict ignores
REFERENCE_LINE = "reference line, not part of the claim"


def precondition(name: str, value: float, threshold: str, met: bool | None, how: str, detail: str = "") -> dict:
    """One measured precondition of an experiment, recorded before its methods are compared.

    Args:
        name (`str`): what is measured, e.g. `"best-teacher SFT − base student (test accuracy)"`.
        value (`float`): the measured value (finite).
        threshold (`str`): the condition `value` must meet, in words (e.g. `"> 0.041 (one standard error)"`).
        met (`bool` or `None`): whether it is met; `None` for a measurement that is printed without a threshold.
        how (`str`): how the precondition was built and measured.
        detail (`str`, *optional*): further measured numbers behind `value`.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Precondition {name!r} measured a non-finite value ({value}); it cannot be checked.")
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "met": None if met is None else bool(met),
        "how": how,
        "detail": detail,
    }


def gated(verdict: str, preconditions: list[dict]) -> str:
    """`"no mechanism here"` when a precondition is not met (the claim cannot show), else the comparisons' verdict."""
    return NO_MECHANISM if any(p["met"] is False for p in preconditions) else verdict


def above(stat: dict, reference: float) -> dict:
    """`stat` (over seeds) against a fixed `reference` number: difference and the standard error of `stat`'s mean."""
    return compare(stat, summary([reference]))


def combined_verdict(verdicts: list[str]) -> str:
    """One verdict from the comparisons of a claim that has several: `reproduced` when all are, `partly reproduced`
    when some are, otherwise `inconclusive` when one is, else `not reproduced`."""
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if "reproduced" in verdicts:
        return "partly reproduced"
    if "inconclusive" in verdicts:
        return "inconclusive"
    return "not reproduced"
