"""Verifiers with TRL's reward-function signature: `(prompts, completions, **columns) -> list[float | None]`, and the
one registry every job resolves verifier names through.

A completion is a string or a list of assistant messages. A malformed completion (no final answer line) scores 0.0;
a row without a reference answer scores `None` (not applicable), as TRL treats `None` rewards.

Named verifiers:

- `exact_match`: the final `Answer:` line equals the `answer` column ([`exact_match_reward`]);
- `numeric`: the final `Answer:` line is a number within `tolerance` of `answer` ([`numeric_reward`]);
- `math_verify`: the completion's boxed LaTeX answer is mathematically equal to `answer` (needs the optional
  `math-verify` package: `pip install "trl-distill[math]"`);
- `lab_task`: the tiny world's verifier, dispatching on the `task` column (registered by `trl_distill.lab.world`).

A source name (`lab:task`, [`~trl_distill.core.sources`]) is built by its source. Anything else is either an import path `"package.module:function"` (e.g. `"trl.rewards:accuracy_reward"`) or a
callable `(prompts, completions, **columns) -> list[float | None]`. A reward of `None` means the answer could not be
checked (e.g. no reference); such answers are never marked correct. [`trl_distill.core.rewards`] calls them.

Only verifiers TRL has no counterpart for live here: `trl.rewards.accuracy_reward` reads a `solution` column from
one-message conversational completions, while `math_verify` reads `answer` (or `solution`) from plain or
conversational completions and parses a bare reference (`1+x`) as one expression.
"""

import functools
import importlib
import importlib.util
import math
import re
from collections.abc import Callable


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


def is_math_verify_available() -> bool:
    """Whether the optional `math-verify` package can be imported."""
    return importlib.util.find_spec("math_verify") is not None


def math_verify_reward(prompts=None, completions=None, answer=None, solution=None, **kwargs) -> list[float | None]:
    r"""1.0 when the completion's final answer (boxed first) is mathematically equal to the `answer` column.

    Datasets made for TRL's `accuracy_reward` keep the reference in a `solution` column; it is read when there is no
    `answer` column.

    A bare reference (`"42"`, `"\frac{1}{3}"`, `"1+x"`) is read as one inline-LaTeX expression, one with `$` or
    `\boxed` as written; a reference that cannot be parsed scores `None` (not applicable). A completion without a
    parseable LaTeX answer scores 0.0. Uses `math_verify.parse`/`verify` with their default timeouts.
    """
    if not is_math_verify_available():
        raise ImportError(
            "The `math_verify` verifier needs the `math-verify` package: `pip install 'trl-distill[math]'` "
            "(or `pip install math-verify`)."
        )
    from math_verify import LatexExtractionConfig, parse, verify

    answer = answer if answer is not None else solution
    if answer is None:
        raise ValueError(
            "The `math_verify` verifier needs an `answer` (or `solution`) column with the reference answer of each row."
        )
    if len(answer) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(answer)} reference answers.")
    prediction_config = [LatexExtractionConfig(boxed_match_priority=0)]
    rewards: list[float | None] = []
    for completion, reference in zip(completions, answer):
        if reference is None:
            rewards.append(None)
            continue
        reference = str(reference).strip()
        # a bare reference is one LaTeX expression (plain parsing would read "1+x" as its first number)
        gold = parse(reference if "$" in reference or "\\boxed" in reference else f"${reference}$")
        if not gold:
            rewards.append(None)
            continue
        predicted = parse(completion_text(completion), extraction_config=prediction_config)
        rewards.append(float(bool(predicted) and verify(gold, predicted)))
    return rewards


VERIFIERS: dict[str, Callable] = {
    "exact_match": exact_match_reward,
    "numeric": numeric_reward,
    "math_verify": math_verify_reward,
}


def register_verifier(name: str, verifier: Callable) -> None:
    """Adds `verifier` to the registry under `name`, so every job that takes a verifier name accepts it (the tiny
    world registers its `lab_task` verifier this way when `trl_distill.lab.world` is imported)."""
    if not callable(verifier):
        raise TypeError(f"Verifier {name!r} must be callable, got {type(verifier).__name__}.")
    VERIFIERS[name] = verifier


def verifier_name(verifier) -> str:
    """A stable name for `verifier`: the registry name, the import path, or `module.qualname` of a callable."""
    if isinstance(verifier, str):
        return verifier
    if isinstance(verifier, functools.partial):
        return verifier_name(verifier.func)
    module = getattr(verifier, "__module__", None) or type(verifier).__module__
    qualname = getattr(verifier, "__qualname__", None) or type(verifier).__qualname__
    return f"{module}.{qualname}"


def resolve_verifier(verifier: str | Callable, tolerance: float = 1e-6) -> Callable:
    """The reward function named by `verifier` (see the module docstring), with `tolerance` bound for `numeric`.

    Args:
        verifier (`str` or `Callable`): a registry name, an import path `"package.module:function"`, or a callable.
        tolerance (`float`, defaults to `1e-6`): relative and absolute tolerance of the `numeric` verifier.

    Returns:
        `Callable`: a function `(prompts, completions, **columns) -> list[float | None]`.
    """
    if callable(verifier):
        return verifier
    if not isinstance(verifier, str):
        raise TypeError(f"`verifier` must be a name or a callable, got {type(verifier).__name__}.")
    from .sources import is_source, resolve_source

    if is_source(verifier):
        return resolve_source(verifier, kind="reward")
    if verifier == "numeric":
        return functools.partial(numeric_reward, tolerance=tolerance)
    if verifier == "math_verify" and not is_math_verify_available():
        raise ImportError(
            "verifier='math_verify' needs the `math-verify` package: `pip install 'trl-distill[math]'`, or choose "
            f"another verifier ({', '.join(v for v in VERIFIERS if v != 'math_verify')})."
        )
    if verifier in VERIFIERS:
        return VERIFIERS[verifier]
    if ":" in verifier:
        module_name, _, attribute = verifier.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"Cannot import verifier {verifier!r}: {error}.") from error
        if not callable(function):
            raise ValueError(f"Verifier {verifier!r} is not callable.")
        return function
    raise ValueError(
        f"Unknown verifier {verifier!r}. Choose one of {sorted(VERIFIERS)}, give an import path "
        "'package.module:function', or pass a callable with TRL's reward-function signature."
    )
