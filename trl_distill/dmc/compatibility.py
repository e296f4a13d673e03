"""Data–model compatibility (DMC): how well a distillation dataset suits a given student, now.

docs/methods.md §2. The idea (a dataset-level score that combines data quality, relative difficulty and student
capability, recomputed during training to reselect data) is the paper's; the formula below is **our proposed
formulation** (a generalisation of CAR, Xu et al. 2024), implemented as written with its knobs exposed:

- quality `Q(D) ∈ [0, 1]`: share of verified-correct responses (or mean normalised reward),
- relative difficulty `L(D, θ)`: mean per-token NLL of D's responses under the student, completion tokens only, on a
  seeded probe sample of D,
- capability `C(θ) ∈ [0, 1]`: greedy pass@1 on a held-out dev split, by the task's verifier,
- `DMC(D, θ) = Q(D) / (1 + β·(1 − C(θ))·L(D, θ))`, and per example `dmc_i = q_i / (1 + β·(1 − C)·ℓ̄_i)`.

`L` runs through the shared forward-only scoring engine and `C` through the shared batched generation, so both are
sharded over processes and every process gets the same numbers.
"""

import logging
import math
import numbers
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from accelerate.utils import gather_object
from datasets import Dataset
from trl import maybe_convert_to_chatml

from ..core.data import did_you_mean, named_datasets
from ..core.divergence import LMHead
from ..core.engine import distributed_state, score_batches, shard_indices
from ..core.generation import generate_completions
from ..core.logprobs import SequenceBatch, encode_prompt_completion, last_hidden_states, token_logprobs_from_hidden
from ..core.pool import as_dataset, conversational_to_prompt_completion
from ..core.rewards import InvalidRewardError, as_completions, as_reward_funcs, call_reward_funcs, weighted_reward
from ..core.tokenizers import chat_messages, ensure_pad_token


RESPONSE_COLUMNS = ("prompt", "completion")

logger = logging.getLogger(__name__)
_logged: set[str] = set()  # messages already logged by this process (a fallback is said once, not every DMC round)


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        if distributed_state().is_main_process:
            logger.warning(message)


def compatibility(quality, difficulty, capability: float, beta: float = 1.0):
    """Data–model compatibility `DMC = Q / (1 + β·(1 − C)·L)` (docs/methods.md §2; **our proposed formulation**).

    The same formula gives the dataset-level score (`quality = Q(D)`, `difficulty = L(D, θ)`) and the example-level
    form used to select inside one pool (`quality = q_i`, `difficulty = ℓ̄_i`, the example's mean token NLL).

    Args:
        quality (`float` or array-like):
            `Q(D)` or per-example `q_i`, in `[0, 1]`.
        difficulty (`float` or array-like):
            `L(D, θ)` or per-example `ℓ̄_i`, mean per-token NLL in nats (`>= 0`).
        capability (`float`):
            `C(θ)`, the student's pass@1 on the dev split, in `[0, 1]`.
        beta (`float`, *optional*, defaults to `1.0`):
            Weight `β >= 0` of the difficulty penalty (fit on pilot runs by Spearman correlation with post-SFT
            accuracy). `β = 0` ranks by quality alone.

    Returns:
        `float` or `np.ndarray`: the score(s), same shape as `quality`/`difficulty` broadcast together.
    """
    if beta < 0 or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}.")
    if not 0.0 <= capability <= 1.0:
        raise ValueError(f"capability must be in [0, 1] (a pass rate), got {capability}.")
    q, ell = np.asarray(quality, dtype=np.float64), np.asarray(difficulty, dtype=np.float64)
    if np.any(q < 0) or np.any(q > 1):
        raise ValueError(f"quality must be in [0, 1] (a share of correct responses), got {quality}.")
    if np.any(ell < 0) or not np.all(np.isfinite(ell)):
        raise ValueError(f"difficulty must be a finite mean NLL >= 0, got {difficulty}.")
    # DMC(D, θ) = Q(D) / (1 + β (1 − C(θ)) L(D, θ))
    score = q / (1.0 + beta * (1.0 - capability) * ell)
    return float(score) if score.ndim == 0 else score


def overtaking_capability(top: tuple, other: tuple, beta: float = 1.0) -> float | None:
    """The capability `C` above which dataset `other` scores a higher [`compatibility`] than `top` (each a
    `(Q, L)` pair; `0.0` when it already does at `C = 0`), or `None` when no `C` in `[0, 1)` makes it.

    The two scores are equal where `Q_o·(1 + β(1 − C)·L_t) = Q_t·(1 + β(1 − C)·L_o)`, one value of `C`: as the student
    improves, the difficulty penalty shrinks and the higher-quality dataset wins. A dataset with no higher quality
    than `top` never overtakes it as `C` grows, and one with higher quality *and* no higher difficulty leads already.
    """
    (q_t, l_t), (q_o, l_o) = top, other
    if q_o <= q_t:
        return None
    if beta == 0 or q_o * l_t >= q_t * l_o:  # `other` leads at every C already (higher quality, relatively no harder)
        return 0.0
    # (1 − C*) = (Q_o − Q_t) / (β (Q_t L_o − Q_o L_t)) > 0; a crossing below C = 0 means `other` leads already
    return max(0.0, 1.0 - (q_o - q_t) / (beta * (q_t * l_o - q_o * l_t)))


# --- inputs -----------------------------------------------------------------------------------------------------------
def as_named_datasets(datasets) -> dict[str, Dataset]:
    """Candidate datasets by name from a mapping of datasets, or one dataset (named `"dataset"`).

    A single dataset may be a `Dataset`, a list of row dicts or a dict of columns (a mapping with a `prompt`,
    `messages`, `conversations` or `text` key); each value of a mapping may be any of these. Names are strings: two
    keys with one string form (`1` and `"1"`) are refused, as is anything but a mapping or a dataset.
    """

    def convert(data, name) -> Dataset:
        name = "the candidate dataset" if name is None else f"candidate dataset {name!r}"
        return as_dataset(data, name, released_pool=False)

    return named_datasets(
        datasets,
        convert,
        "Candidate datasets must be a mapping of name -> Dataset or a single Dataset",
        what="candidate datasets",
        columns=("prompt", "messages", "conversations", "text"),
    )


def check_response_dataset(dataset: Dataset, name: str = "dataset") -> Dataset:
    """The dataset's rows as prompt–completion pairs, the responses DMC scores; a `ValueError` if it has none.

    Takes the SFT formats that carry a response: `prompt`/`completion` (plain or conversational, as is), `messages`
    or ShareGPT `conversations` (split before the trailing assistant turns), and `text` (language modelling: an
    empty prompt, the whole text is the response, as `SFTTrainer` trains on every token). Other columns are kept.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"Candidate dataset {name!r} must be a `datasets.Dataset` (or a list of row dicts / a dict of columns "
            f"where the API converts them), got {type(dataset).__name__}."
        )
    if len(dataset) == 0:
        raise ValueError(f"Candidate dataset {name!r} is empty; drop it or give it at least one row.")
    columns = dataset.column_names
    if all(c in columns for c in RESPONSE_COLUMNS):
        return dataset
    if "conversations" in columns and "messages" not in columns:
        dataset = dataset.map(maybe_convert_to_chatml, remove_columns=["conversations"])
        columns = dataset.column_names
    if "messages" in columns and "prompt" not in columns:
        return conversational_to_prompt_completion(dataset, f"Candidate dataset {name!r}, row")
    if "text" in columns and "prompt" not in columns and "completion" not in columns:
        return dataset.map(lambda row: {"prompt": "", "completion": row["text"]}, remove_columns=["text"])
    missing = [c for c in RESPONSE_COLUMNS if c not in columns]
    raise ValueError(
        f"Candidate dataset {name!r} has no {missing} column(s) (columns: {columns}); DMC scores the responses: give "
        "`prompt` and `completion`, `messages`, `conversations` or `text` (pre-tokenized `input_ids` cannot be "
        "verified)."
    )


def probe_indices(num_rows: int, probe_size: int | None, seed: int = 0, what: str = "probe_size") -> list[int]:
    """The seeded probe sample of a dataset: `probe_size` distinct row indices, sorted (all rows if it is larger).

    `what` names the setting in the error message (`"probe_size"` or `"dev_size"`).
    """
    if probe_size is not None and probe_size < 1:
        raise ValueError(f"{what} must be >= 1 or None (all rows), got {probe_size}.")
    if probe_size is None or probe_size >= num_rows:
        return list(range(num_rows))
    return sorted(random.Random(seed).sample(range(num_rows), probe_size))


def _verify(verifier, dataset: Dataset, completions: Sequence, where: str) -> list[float | None]:
    """The reward of each completion by `verifier` (TRL reward functions, summed; see [`trl_distill.core.rewards`]),
    `None` where no function scored it. Texts generated here reach the functions in the dataset's form."""
    prompts = dataset["prompt"]
    columns = {c: dataset[c] for c in dataset.column_names if c not in ("prompt", "completion")}
    try:
        per_func = call_reward_funcs(
            as_reward_funcs(verifier), prompts, as_completions(prompts, completions), columns, where=f" ({where})"
        )
    except InvalidRewardError:
        raise
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(
            f"The verifier failed on the {where} (columns: {dataset.column_names}): {error}. Give the rows the "
            "columns the verifier reads (e.g. `answer`, `task`), or a boolean `correct` column."
        ) from error
    return [None if math.isnan(r) else r for r in weighted_reward(per_func).tolist()]


def _quality_value(value, i: int, column: str, name: str) -> float | None:
    # `bool(nan)` and `bool("False")` are True, and float("yes") is a bare conversion error: check each value
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise ValueError(
        f"Row {i} of candidate dataset {name!r} has {column!r} = {value!r} ({type(value).__name__}); it must be a "
        "boolean or a finite number. Convert the column first, e.g. "
        f"`dataset.map(lambda row: {{{column!r}: row[{column!r}] in ('yes', 'True', True)}})`."
    )


def _first_outside_unit(values) -> tuple[int, float] | None:
    """`(row, value)` of the first value outside `[0, 1]` (`None` values are checked elsewhere), or `None`."""
    return next(((i, v) for i, v in enumerate(values) if v is not None and not 0 <= v <= 1), None)


def quality_per_example(
    dataset: Dataset,
    verifier: Callable | None = None,
    correct_column: str = "correct",
    reward_column: str | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
    name: str = "dataset",
) -> list[float]:
    """Per-example quality `q_i ∈ [0, 1]` of a dataset's responses.

    In order of preference: the `reward_column` normalised by `reward_range`, the boolean `correct_column` (as in
    candidate pools), or `verifier` run on the responses (its rewards must lie in `[0, 1]`).

    Raises a `ValueError`, naming the column, the row and the value, for a missing reward column, a reward that is
    missing, not a finite number (NaN, a string) or outside `reward_range`, and a `correct` value that is not a
    boolean or a number in `[0, 1]`: they are never clipped or cast silently.

    Args:
        dataset (`Dataset`): prompt–completion rows.
        verifier (`Callable`, `str` or `list`, *optional*): TRL reward functions (see [`capability`]); used when the
            dataset has neither a reward nor a `correct` column.
        correct_column (`str`, *optional*, defaults to `"correct"`): the verified-correct flag column.
        reward_column (`str`, *optional*): a reward column to use instead of correctness.
        reward_range (`tuple[float, float]`, *optional*, defaults to `(0.0, 1.0)`): rewards are mapped linearly from
            this range onto `[0, 1]`.
        name (`str`): the dataset's name, for error messages.
    """
    if reward_column is not None:
        return _reward_quality(dataset, reward_column, reward_range, name)
    if correct_column in dataset.column_names:
        values = _correct_quality(dataset, correct_column, name)
    elif verifier is not None:
        values = _verified_quality(dataset, verifier, name)
    else:
        raise ValueError(
            f"Cannot measure the quality of candidate dataset {name!r}: it has no {correct_column!r} column and no "
            "verifier was given. Add a boolean `correct` column, pass `reward_column`, or pass a verifier."
        )
    for i, value in enumerate(values):
        if value is None:
            raise ValueError(
                f"Row {i} of candidate dataset {name!r} could not be verified (its correctness is None, e.g. no "
                "reference answer); fill its `correct`/`answer` value or drop the row."
            )
    return [float(v) for v in values]


def _reward_quality(dataset: Dataset, reward_column: str, reward_range: tuple[float, float], name: str) -> list[float]:
    """`q_i` from a reward column: each reward, all present and inside `reward_range`, mapped linearly onto [0, 1]."""
    if reward_column not in dataset.column_names:
        raise ValueError(
            f"Candidate dataset {name!r} has no reward column {reward_column!r} (columns: {dataset.column_names})."
            + did_you_mean(reward_column, dataset.column_names)
        )
    low, high = reward_range
    if not high > low:
        raise ValueError(f"reward_range must be (low, high) with high > low, got {reward_range}.")
    rewards = [_quality_value(r, i, reward_column, name) for i, r in enumerate(dataset[reward_column])]
    missing = [i for i, r in enumerate(rewards) if r is None]
    if missing:
        raise ValueError(
            f"Candidate dataset {name!r} has no reward in {reward_column!r} for row(s) {missing[:10]}; fill them "
            "or drop the rows."
        )
    outside = next(((i, r) for i, r in enumerate(rewards) if not low <= r <= high), None)
    if outside is not None:
        raise ValueError(
            f"Row {outside[0]} of candidate dataset {name!r} has {reward_column!r} = {outside[1]!r}, outside "
            f"reward_range {reward_range}; quality needs rewards in that range (mapped onto [0, 1]), and a "
            "clipped reward would misstate it. Rescale the column with your rewards' bounds `lo`, `hi`: "
            f"`dataset.map(lambda row: {{{reward_column!r}: (row[{reward_column!r}] - lo) / (hi - lo)}})` "
            "(`quality_per_example` takes `reward_range=(lo, hi)` instead)."
        )
    return [(r - low) / (high - low) for r in rewards]


def _correct_quality(dataset: Dataset, correct_column: str, name: str) -> list[float | None]:
    """`q_i` from the verified-correct column: booleans or numbers in [0, 1] (`None` where a row has none)."""
    values = [_quality_value(v, i, correct_column, name) for i, v in enumerate(dataset[correct_column])]
    outside = _first_outside_unit(values)
    if outside is not None:
        raise ValueError(
            f"Row {outside[0]} of candidate dataset {name!r} has {correct_column!r} = {outside[1]!r}; it must be a "
            "boolean or a number in [0, 1]. Give a reward in another range as `reward_column` with its "
            "`reward_range`."
        )
    return values


def _verified_quality(dataset: Dataset, verifier, name: str) -> list[float | None]:
    """`q_i` as the verifier's reward of each response, which must lie in [0, 1] (`None` where it cannot judge)."""
    values = _verify(verifier, dataset, dataset["completion"], f"responses of {name!r}")
    outside = _first_outside_unit(values)
    if outside is not None:
        raise ValueError(
            f"The verifier gave row {outside[0]} of candidate dataset {name!r} the reward {outside[1]!r}, outside "
            "[0, 1]; quality is the fraction of verified-correct responses, and a clipped reward would misstate "
            "it. Wrap the reward to map its range onto [0, 1], or store it as a `reward_column` with its "
            "`reward_range`."
        )
    return values


# --- relative difficulty L(D, θ) -----------------------------------------------------------------------------------
def response_nll(
    model,
    tokenizer,
    dataset: Dataset,
    batch_size: int = 16,
    system: str | None = None,
    desc: str = "DMC difficulty",
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
) -> list[tuple[float, int]]:
    """Summed NLL and token count of each row's completion under `model`, via the shared scoring engine.

    Args:
        max_length (`int`, *optional*): cut each sequence to this many tokens first, as `SFTTrainer` cuts what it
            trains (`truncation_mode` `"keep_start"` or `"keep_end"`), so the NLL is that of the trained tokens.

    Returns:
        `list[tuple[float, int]]`: `(Σ_t ℓ_t, n)` over the completion tokens of each row, in order.
    """
    features = [
        encode_prompt_completion(tokenizer, p, c, system) for p, c in zip(dataset["prompt"], dataset["completion"])
    ]
    if max_length is not None:
        if truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {truncation_mode!r}.")
        cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
        features = [{key: values[cut] for key, values in feature.items()} for feature in features]

    def nll(model, batch: SequenceBatch) -> list[tuple[float, int]]:
        hidden = last_hidden_states(model, batch)
        head = LMHead.of(model)
        logprobs = token_logprobs_from_hidden(hidden, head, batch.input_ids, batch.completion_mask)
        mask = batch.completion_mask.clone()
        mask[:, 0] = 0
        total = -(logprobs * mask).sum(-1)
        return [(float(t), int(n)) for t, n in zip(total.tolist(), mask.sum(-1).tolist())]

    return score_batches(model, features, nll, ensure_pad_token(tokenizer), batch_size=batch_size, desc=desc)


def relative_difficulty(
    model,
    tokenizer,
    dataset: Dataset,
    probe_size: int | None = 128,
    seed: int = 0,
    batch_size: int = 16,
    system: str | None = None,
) -> float:
    """Relative difficulty `L(D, θ)`: mean per-token NLL of the responses of a seeded probe sample of `dataset`.

    The mean is over all completion tokens of the probe (token-weighted), the quantity SFT minimises.

    Args:
        model: the student, in its current state.
        tokenizer: its tokenizer (chat template for conversational rows).
        dataset (`Dataset`): prompt–completion rows.
        probe_size (`int`, *optional*, defaults to `128`): rows in the probe (`None` or more than the dataset: all).
        seed (`int`, *optional*, defaults to `0`): seed of the probe sample.
        batch_size (`int`, *optional*, defaults to `16`): sequences per forward pass.
        system (`str`, *optional*): system message for conversational prompts.
    """
    dataset = check_response_dataset(as_dataset(dataset, "dataset", released_pool=False))
    probe = dataset.select(probe_indices(len(dataset), probe_size, seed))
    results = response_nll(model, tokenizer, probe, batch_size=batch_size, system=system)
    tokens = sum(n for _, n in results)
    if tokens == 0:
        raise ValueError("The probe's responses have no completion tokens to score; check the `completion` column.")
    return sum(t for t, _ in results) / tokens


# --- capability C(θ) -------------------------------------------------------------------------------------------------
def check_dev_dataset(dev_dataset: Dataset | None, verifier: Callable | None) -> None:
    """Raises a `ValueError` unless `dev_dataset` and `verifier` can measure capability."""
    if verifier is None:
        raise ValueError(
            "Capability C(θ) is the pass rate of greedy generations by the task's verifier, and no verifier was "
            "given. Pass a TRL reward function, e.g. `trl_distill.core.verifiers.numeric_reward`."
        )
    as_reward_funcs(verifier)  # an unknown verifier name fails here, before any generation
    if dev_dataset is None or len(dev_dataset) == 0:
        raise ValueError(
            "The dev split for capability C(θ) is empty; give held-out prompts with their reference answers "
            "(e.g. `dataset['dev']`)."
        )
    if "prompt" not in dev_dataset.column_names:
        raise ValueError(f"The dev split has no `prompt` column (columns: {dev_dataset.column_names}).")


def capability(
    model,
    tokenizer,
    dev_dataset: Dataset,
    verifier: Callable,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    correct_threshold: float = 1.0,
    system: str | None = None,
    plain_prompts_as_chat: bool | None = None,
) -> float:
    """Student capability `C(θ)`: pass@1 of greedy generations on `dev_dataset`, by `verifier`.

    A generation passes when its reward is at least `correct_threshold`; rows the verifier marks `None` (not applicable)
    are left out. Under several processes each one generates a contiguous shard (equal batch counts, so ZeRO-3 stays
    in lockstep) and the verdicts are gathered, so every process returns the same number.

    Args:
        model: the student, in its current state.
        tokenizer: its tokenizer (with a pad token).
        dev_dataset (`Dataset`): held-out rows with a `prompt` column and the columns the verifier reads (`answer`).
        verifier (`Callable`, `str` or `list`): TRL reward functions, as `GRPOTrainer`'s `reward_funcs` (e.g.
            `trl.rewards.accuracy_reward`, or a verifier name), summed; a generation reaches them as a conversational
            completion when its dev prompt is conversational.
        max_new_tokens (`int`, *optional*, defaults to `64`): generation budget.
        batch_size (`int`, *optional*, defaults to `32`): prompts per `generate` call.
        correct_threshold (`float`, *optional*, defaults to `1.0`): the reward that counts as a pass.
        system (`str`, *optional*): system message for conversational prompts.
        plain_prompts_as_chat (`bool`, *optional*): how plain-text dev prompts are asked. `True`: as one user turn
            rendered with the chat template (as a chat model is trained and prompted); `False`: as raw text. `None`
            (default): as a user turn when the tokenizer has a chat template, said once in a warning. A chat model
            asked the raw text of a question it was trained to see as a conversation answers off-format and scores 0.

    Raises:
        `ValueError` without a verifier, for an empty dev split or one without a `prompt` column, for a verifier that
        returns the wrong number of rewards or a NaN/non-number, and when it returns `None` for every dev row.
    """
    dev_dataset = as_dataset(dev_dataset, "dev_dataset", released_pool=False)
    check_dev_dataset(dev_dataset, verifier)
    prompts = _dev_prompts(dev_dataset["prompt"], tokenizer, plain_prompts_as_chat)
    state = distributed_state()
    # equal generate calls on every rank
    shard = shard_indices(len(dev_dataset), state.process_index, state.num_processes)
    rows = dev_dataset.select(shard)
    completions = generate_completions(
        model,
        tokenizer,
        [prompts[i] for i in shard],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system=system,
        desc="DMC capability",
        show_progress=state.is_local_main_process,
    )
    rewards = _verify(verifier, rows, completions, "dev generations")
    return _pass_rate([(i, None if r is None else r >= correct_threshold) for i, r in zip(shard, rewards)], state)


def _pass_rate(local_verdicts: list[tuple[int, bool | None]], state) -> float:
    """pass@1: the share of passing dev rows, over the `(row, passed)` verdicts of every process (`None`, a row the
    verifier does not apply to, is left out)."""
    verdicts = dict(gather_object(local_verdicts) if state.num_processes > 1 else local_verdicts)
    passed = [float(v) for v in verdicts.values() if v is not None]
    if not passed:
        raise ValueError("The verifier returned None for every dev row; the dev split needs reference answers.")
    return sum(passed) / len(passed)


def _dev_prompts(prompts: list, tokenizer, as_chat: bool | None) -> list:
    """The dev prompts as the student is asked them: plain-text prompts become one user turn when `as_chat` (or, with
    `as_chat=None`, when the tokenizer has a chat template)."""
    if not any(isinstance(p, str) for p in prompts):
        return list(prompts)
    has_template = getattr(getattr(tokenizer, "tokenizer", tokenizer), "chat_template", None) is not None
    if as_chat is None:
        as_chat = has_template
        if as_chat:
            _log_once(
                "DMC capability: the dev prompts are plain text and the tokenizer has a chat template, so each is "
                "asked as one user turn rendered with the template (as a chat model is prompted); a chat model asked "
                "the raw text answers off-format and scores 0. Pass plain_prompts_as_chat=False to ask the raw text."
            )
    if as_chat and not has_template:
        raise ValueError(
            "plain_prompts_as_chat=True, but the tokenizer has no chat template to render the dev prompts with. Set a "
            "chat template on the tokenizer, or pass plain_prompts_as_chat=False."
        )
    return [chat_messages(p) if as_chat and isinstance(p, str) else p for p in prompts]


def plain_prompts_as_chat_for(datasets: Mapping[str, Dataset]) -> bool | None:
    """How [`capability`] should ask plain-text dev prompts of a student trained on `datasets` (prompt–completion
    views): as raw text (`False`) when every candidate's prompts are plain text, since the student is trained on raw
    text; otherwise `None`, a user turn when the tokenizer has a chat template."""
    plain = all(len(d) > 0 and isinstance(d[0]["prompt"], str) for d in datasets.values())
    return False if datasets and plain else None


# --- ranking -------------------------------------------------------------------------------------------------------
def rank_datasets(
    model,
    tokenizer,
    datasets: Mapping[str, Dataset],
    dev_dataset: Dataset,
    verifier: Callable,
    beta: float = 1.0,
    probe_size: int | None = 128,
    dev_size: int | None = 64,
    max_new_tokens: int = 64,
    scoring_batch_size: int = 16,
    generation_batch_size: int = 32,
    reward_column: str | None = None,
    correct_threshold: float = 1.0,
    system: str | None = None,
    seed: int = 0,
    print_table: bool = False,
) -> list[dict]:
    """Ranks candidate datasets for a student by DMC, best first.

    Capability is measured once (it depends on the model only); quality and difficulty per dataset.

    Args:
        model: the student.
        tokenizer: its tokenizer.
        datasets (`Mapping[str, Dataset]` or `Dataset`): candidate datasets by name (prompt–completion rows with a
            `correct`, reward or verifiable `answer` column), or one dataset (named `"dataset"`). Each may also be a
            list of row dicts or a dict of columns. Two keys of one name (`1` and `"1"`) are refused.
        dev_dataset (`Dataset`): held-out prompts with reference answers for capability (or a list of row dicts /
            a dict of columns).
        verifier (`Callable`, `str` or `list`): the task's TRL reward functions (see [`capability`]): capability, and
            quality where there is no `correct` column.
        beta (`float`, *optional*, defaults to `1.0`): `β` of [`compatibility`].
        probe_size (`int`, *optional*, defaults to `128`): probe rows per dataset for `L`.
        dev_size (`int`, *optional*, defaults to `64`): dev rows for `C` (a seeded sample; `None` = all).
        max_new_tokens (`int`, *optional*, defaults to `64`): generation budget for `C`.
        scoring_batch_size (`int`, *optional*, defaults to `16`), generation_batch_size (`int`, *optional*, defaults
            to `32`): batch sizes.
        reward_column (`str`, *optional*): use this reward column (in `[0, 1]`) for quality.
        correct_threshold (`float`, *optional*, defaults to `1.0`): reward that counts as a pass for `C`.
        system (`str`, *optional*): system message for conversational prompts.
        seed (`int`, *optional*, defaults to `0`): seed of the probe and dev samples.
        print_table (`bool`, *optional*, defaults to `False`): also print the table (main process only).

    Returns:
        `list[dict]`: one row per dataset, sorted by `dmc` descending (ties by name), with `dataset`, `rows`,
        `quality`, `difficulty`, `capability` and `dmc`.
    """
    datasets, dev = _ranking_inputs(datasets, dev_dataset, verifier, dev_size, seed)
    c = capability(model, tokenizer, dev, verifier, max_new_tokens, generation_batch_size, correct_threshold, system,
                   plain_prompts_as_chat_for(datasets))  # fmt: skip
    table = [
        _dmc_row(name, dataset, c, model, tokenizer, verifier, beta, probe_size, scoring_batch_size, reward_column,
                 system, seed)
        for name, dataset in datasets.items()
    ]  # fmt: skip
    table.sort(key=lambda row: (-row["dmc"], row["dataset"]))
    if print_table and distributed_state().is_main_process:
        print(format_table(table))
    return table


def _ranking_inputs(datasets, dev_dataset, verifier, dev_size: int | None, seed: int) -> tuple[dict, Dataset]:
    """[`rank_datasets`]' inputs, checked before anything is scored: the candidates as prompt–completion datasets by
    name, and the seeded sample of the dev split that capability is measured on."""
    datasets = as_named_datasets(datasets)
    if not datasets:
        raise ValueError("rank_datasets needs at least one candidate dataset.")
    datasets = {name: check_response_dataset(dataset, name) for name, dataset in datasets.items()}
    dev_dataset = None if dev_dataset is None else as_dataset(dev_dataset, "dev_dataset", released_pool=False)
    check_dev_dataset(dev_dataset, verifier)
    return datasets, dev_dataset.select(probe_indices(len(dev_dataset), dev_size, seed, what="dev_size"))


def _dmc_row(
    name, dataset, c, model, tokenizer, verifier, beta, probe_size, scoring_batch_size, reward_column, system, seed
) -> dict:
    """One dataset's row of [`rank_datasets`]: its quality Q, relative difficulty L and, with the capability C
    measured once, its DMC."""
    q = float(np.mean(quality_per_example(dataset, verifier, reward_column=reward_column, name=name)))
    ell = relative_difficulty(model, tokenizer, dataset, probe_size, seed, scoring_batch_size, system)
    return {
        "dataset": name,
        "rows": len(dataset),
        "quality": q,
        "difficulty": ell,
        "capability": c,
        "dmc": compatibility(q, ell, c, beta),
    }


def format_table(table: Sequence[dict]) -> str:
    """A plain-text table of [`rank_datasets`] rows."""
    width = max([len("dataset")] + [len(str(row["dataset"])) for row in table])
    lines = [f"{'rank':>4}  {'dataset':<{width}}  {'rows':>6}  {'Q':>6}  {'L':>7}  {'C':>6}  {'DMC':>7}"]
    for rank, row in enumerate(table, 1):
        lines.append(
            f"{rank:>4}  {row['dataset']:<{width}}  {row['rows']:>6}  {row['quality']:>6.3f}  "
            f"{row['difficulty']:>7.4f}  {row['capability']:>6.3f}  {row['dmc']:>7.4f}"
        )
    return "\n".join(lines)
