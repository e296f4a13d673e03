"""Verifiers with TRL's reward-function signature: `(prompts, completions, **columns) -> list[float | None]`.

A completion is a string or a list of assistant messages. A malformed completion (no final answer line) scores 0.0;
a row without a reference answer scores `None` (not applicable), as TRL treats `None` rewards.
"""

import math
import re


ANSWER_PATTERN = re.compile(r"Answer:\s*(.*?)\s*$", re.MULTILINE)


def completion_text(completion) -> str:
    """The text of a completion given as a string or as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    raise TypeError(f"A completion must be a string or a list of messages, got {type(completion).__name__}.")


def extract_final_answer(text: str) -> str | None:
    """The content of the last `Answer: ...` line, or `None` when there is none."""
    found = ANSWER_PATTERN.findall(text)
    return found[-1] if found else None


def _score(completions, answer, same) -> list[float | None]:
    if answer is None:
        raise ValueError("This verifier needs an `answer` column with the reference answer of each row.")
    if len(answer) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(answer)} reference answers.")
    rewards: list[float | None] = []
    for completion, reference in zip(completions, answer):
        if reference is None:
            rewards.append(None)
            continue
        predicted = extract_final_answer(completion_text(completion))
        rewards.append(0.0 if predicted is None else float(same(predicted, str(reference).strip())))
    return rewards


def exact_match_reward(prompts=None, completions=None, answer=None, **kwargs) -> list[float | None]:
    """1.0 when the final `Answer:` line equals the `answer` column exactly (after stripping), else 0.0."""
    return _score(completions, answer, lambda predicted, reference: predicted == reference)


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def numeric_reward(prompts=None, completions=None, answer=None, tolerance: float = 1e-6, **kwargs):
    """1.0 when the final `Answer:` line is a number within `tolerance` (relative or absolute) of `answer`."""

    def same(predicted: str, reference: str) -> bool:
        a, b = _as_number(predicted), _as_number(reference)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)

    return _score(completions, answer, same)
