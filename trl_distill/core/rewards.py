"""Reward functions as TRL's `GRPOTrainer` takes them, shared by every method that verifies answers.

A reward function has TRL's signature `f(prompts, completions, **kwargs) -> list[float | None]`: `prompts` and
`completions` in the dataset's form (plain strings, or lists of messages for a conversational dataset, a completion
being `[{"role": "assistant", "content": ...}]`), and the dataset's other columns as keyword arguments, one value per
completion. `None` means the function does not apply to that completion (e.g. no reference answer). So
`trl.rewards.accuracy_reward`, `trl.rewards.think_format_reward` or a user's own GRPO reward work unchanged in SCAS
pools, DMC quality and capability, OGLS-SD outcomes and the pool builder.

`reward_funcs` is a callable, a verifier name of [`trl_distill.core.verifiers`] (`"exact_match"`, `"numeric"`, ...),
an import path `"package.module:function"`, or a list of these; [`as_reward_funcs`] turns it into callables,
[`compute_rewards`] calls them and checks what they return, and [`is_correct`] thresholds the weighted reward.
"""

import functools
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from trl import is_conversational

from .verifiers import resolve_verifier


RewardFunc = Callable[..., list]


class InvalidRewardError(ValueError, TypeError):
    """A reward function returned something other than one finite number (or `None`) per completion. Both a
    `ValueError` and a `TypeError` (a string reward), so callers can tell it from an error raised inside the function."""


def reward_func_name(func: Callable) -> str:
    """The name a reward function is logged under (`rewards/<name>/mean`), as TRL names it: the function's
    `__name__` (a `functools.partial` unwrapped), or the class name of a callable object."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def as_reward_funcs(reward_funcs, tolerance: float = 1e-6) -> list[RewardFunc]:
    """`reward_funcs` as a list of callables.

    Args:
        reward_funcs (`str`, `Callable` or `list` of them):
            Reward functions with TRL's signature, verifier names of [`trl_distill.core.verifiers`] or import paths
            `"package.module:function"`.
        tolerance (`float`, *optional*, defaults to `1e-6`):
            Tolerance bound to the `"numeric"` verifier when it is named.

    Returns:
        `list[Callable]`: one callable per reward function, in order.

    Raises:
        `ValueError` for no reward function or an unknown name; `TypeError` for an entry that is neither a name nor a
        callable.
    """
    funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
    if not funcs or any(f is None for f in funcs):
        raise ValueError(
            "No reward function given. Pass a TRL reward function `f(prompts, completions, **kwargs) -> list[float | "
            "None]` (e.g. `trl.rewards.accuracy_reward`), a verifier name such as 'exact_match', or a list of them."
        )
    resolved = []
    for func in funcs:
        if not (callable(func) or isinstance(func, str)):
            raise TypeError(
                f"Reward functions must be callables or verifier names, got {type(func).__name__} {func!r:.60}."
            )
        resolved.append(resolve_verifier(func, tolerance))
    return resolved


def as_completions(prompts: Sequence, texts: Sequence[str]) -> list:
    """Completion texts in the form TRL passes them to reward functions: `[{"role": "assistant", "content": text}]`
    after a conversational prompt, the text itself after a plain one (judged per row)."""
    return [
        text
        if isinstance(text, list) or not is_conversational({"prompt": prompt})
        else [{"role": "assistant", "content": text}]
        for prompt, text in zip(prompts, texts, strict=True)
    ]


def _checked(values, name: str, n: int, completions: Sequence, where: str) -> list[float | None]:
    """One finite float (or `None`) per completion, or an error naming the function, the completion and the value."""
    if values is None or not hasattr(values, "__len__") or len(values) != n:
        got = "None" if values is None else f"{len(values)} values" if hasattr(values, "__len__") else repr(values)
        raise InvalidRewardError(
            f"Reward function {name!r} returned {got} for {n} completions{where}; it must return a list with one "
            "float (or None where it does not apply) per completion."
        )
    checked: list[float | None] = []
    for j, value in enumerate(values):
        if value is None:
            checked.append(None)
            continue
        if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy / torch scalars
            value = value.item()
        if isinstance(value, str | bytes) or not isinstance(value, numbers.Real):
            raise InvalidRewardError(
                f"Reward function {name!r} returned {type(value).__name__} {value!r:.60} for completion {j}{where}; "
                "it must return a number (or None where it does not apply) per completion, e.g. "
                "float(answer_is_right) rather than a string."
            )
        if not math.isfinite(value):  # a NaN would silently count as wrong, an inf make the logged means inf/NaN
            raise InvalidRewardError(
                f"Reward function {name!r} returned {value} for completion {j}{where} ({completions[j]!r:.80}). Return "
                "None for a completion the function does not apply to, and a finite number otherwise."
            )
        checked.append(float(value))
    return checked


def call_reward_funcs(
    reward_funcs: Sequence[RewardFunc],
    prompts: Sequence,
    completions: Sequence,
    columns: dict[str, Sequence] | None = None,
    where: str = "",
    **kwargs,
) -> torch.Tensor:
    """Calls each reward function as TRL does and checks what it returns.

    Args:
        reward_funcs (`Sequence[Callable]`): resolved reward functions (see [`as_reward_funcs`]).
        prompts (`Sequence`): the prompt of each completion (text or messages).
        completions (`Sequence`): the completions, in TRL's form (see [`as_completions`]).
        columns (`dict[str, Sequence]`, *optional*): the dataset's other columns, one value per completion, passed as
            keyword arguments (`prompt` and `completion` are left out).
        where (`str`, *optional*): what is being scored, for error messages (e.g. `" (dev generations)"`).
        **kwargs: further keyword arguments every function receives (e.g. `completion_ids`, `trainer_state`).

    Returns:
        `torch.Tensor`: `(len(completions), len(reward_funcs))` float64 rewards (a function's floats exactly), `NaN`
        where a function returned `None`.

    Raises:
        [`InvalidRewardError`] when a function returns the wrong number of values, a NaN/inf or a non-number (a
        string); what a function raises itself passes through.
    """
    n = len(completions)
    columns = {k: list(v) for k, v in (columns or {}).items() if k not in ("prompt", "completion")}
    per_func = torch.full((n, len(reward_funcs)), math.nan, dtype=torch.float64)
    for i, func in enumerate(reward_funcs):
        values = func(prompts=list(prompts), completions=list(completions), **columns, **kwargs)
        for j, value in enumerate(_checked(values, reward_func_name(func), n, completions, where)):
            if value is not None:
                per_func[j, i] = value
    return per_func


def weighted_reward(per_func: torch.Tensor, weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """The reward of each completion, `Σ_f w_f · r_f` over the functions that scored it (as `GRPOTrainer` sums
    them), `NaN` where none did."""
    weights = torch.ones(per_func.size(1)) if weights is None else torch.as_tensor(weights, dtype=per_func.dtype)
    rewards = torch.nansum(per_func * weights.to(per_func.device), dim=1)
    rewards[torch.isnan(per_func).all(dim=1)] = math.nan
    return rewards


def is_correct(rewards: torch.Tensor | Sequence, threshold: float = 1.0) -> list[bool | None]:
    """Per completion, whether its reward reaches `threshold` (`True`/`False`), or `None` where it was not scored."""
    values = rewards.tolist() if isinstance(rewards, torch.Tensor) else list(rewards)
    return [None if r is None or math.isnan(r) else r >= threshold for r in values]
