"""ICE: Identity Consistency Evaluation (Lee et al., "Distillation Quantification for Large Language Models", 2025).

Identity questions in five categories (team, cooperation, industry, technology, geography) are wrapped in
jailbreak-style templates, mutated GPTFuzzer-style; a judge decides for each response `i` whether it conflicts with the
model's true identity (`c_i`) and whether it claims to be another named model (`o_i`):

    Loose  = mean_i c_i
    Strict = mean_i c_i · o_i
    Hard   = mean_{i : template_i names no other model} c_i · o_i

`Hard` leaves out templates that themselves name another model or its maker ("You are ChatGPT..."), since a response
that plays along with them says more about instruction following than about distillation. High values suggest the
model was distilled from the model it claims to be.
"""

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources

from ._report import result_dict, text_table
from .identity import IdentityFact, IdentityMatcher, as_identity_fact  # noqa: F401 (IdentityFact re-exported)
from .judges import IdentityClaimJudge, Judge, as_judge, identity_verdict
from .mutators import PLACEHOLDER, LLMMutator, mutate_templates


CATEGORIES = ("team", "cooperation", "industry", "technology", "geography")


def load_identity_data() -> dict:
    """
    The identity questions and seed templates shipped with trl-distill (`evaluation/data/identity_questions.json`).

    Returns:
        `dict` with `questions` (`id`, `category`, `language`, `text`) and `templates` (`id`, `language`, `text`).
    """
    path = resources.files("trl_distill.evaluation").joinpath("data/identity_questions.json")
    return json.loads(path.read_text(encoding="utf-8"))


def build_ice_prompts(
    identity,
    languages: Sequence[str] = ("en",),
    categories: Sequence[str] = CATEGORIES,
    num_mutations: int = 8,
    seed: int = 0,
    max_prompts: int | None = None,
    questions: Sequence[dict] | None = None,
    templates: Sequence[dict] | None = None,
    llm_mutator: LLMMutator | None = None,
    known_identities: Mapping | None = None,
) -> list[dict]:
    """
    The ICE prompts: every question paired with every template (seed and mutated) of its language.

    Args:
        identity (`IdentityFact`, `dict` or `"Name@Organisation"`):
            The model's true identity; used to flag templates that name *another* model.
        languages (`Sequence[str]`, *optional*, defaults to `("en",)`):
            Languages to include; the shipped data has `"en"` and `"zh"`.
        categories (`Sequence[str]`, *optional*, defaults to all five):
            Question categories to include.
        num_mutations (`int`, *optional*, defaults to `8`):
            Mutated templates added per language.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the mutations and of the subsampling.
        max_prompts (`int`, *optional*):
            Keep a seeded random subset of this many prompts.
        questions (`Sequence[dict]`, *optional*), templates (`Sequence[dict]`, *optional*):
            Replace the shipped questions/templates (same fields as in [`load_identity_data`]).
        llm_mutator (`LLMMutator`, *optional*):
            Adds LLM-mutated templates (half of `num_mutations`).
        known_identities (`Mapping`, *optional*):
            Names that count as "another model" when flagging templates; defaults to the built-in list.

    Returns:
        `list[dict]`: one record per prompt with `prompt`, `question_id`, `category`, `language`, `template_id`,
        `mutation` and `template_names_other` (whether the template names another model; such prompts are left out
        of `Hard`).
    """
    identity = as_identity_fact(identity)
    data = load_identity_data() if questions is None or templates is None else {}
    questions = list(questions if questions is not None else data["questions"])
    templates = list(templates if templates is not None else data["templates"])
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"Unknown ICE categories {sorted(unknown)}; choose from {list(CATEGORIES)}.")
    matcher = IdentityMatcher(known_identities, identity)
    records = []
    for language in languages:
        lang_questions, lang_templates = _of_language(questions, templates, language, categories)
        lang_templates += mutate_templates(lang_templates, num_mutations, seed=seed, llm_mutator=llm_mutator)
        records += _pair(lang_questions, lang_templates, language, matcher)
    if max_prompts is not None and len(records) > max_prompts:
        keep = sorted(random.Random(seed).sample(range(len(records)), max_prompts))
        records = [records[i] for i in keep]
    return records


def _of_language(questions: list[dict], templates: list[dict], language: str, categories) -> tuple[list, list]:
    """The questions (of `categories`) and seed templates in `language`; refused when either is empty."""
    lang_questions = [q for q in questions if q["language"] == language and q["category"] in categories]
    lang_templates = [t for t in templates if t["language"] == language]
    if not lang_questions or not lang_templates:
        available = sorted({q["language"] for q in questions} & {t["language"] for t in templates})
        raise ValueError(
            f"No identity questions or templates in language {language!r}; available languages: {available}. "
            "Pass your own `questions=` and `templates=` for other languages."
        )
    return lang_questions, lang_templates


def _pair(questions: list[dict], templates: list[dict], language: str, matcher: IdentityMatcher) -> list[dict]:
    # every question inside every template; a template naming another model is flagged, and left out of Hard
    records = []
    for template in templates:
        names_other = bool(matcher.mentions(template["text"]))
        for question in questions:
            records.append(
                {
                    "prompt": template["text"].replace(PLACEHOLDER, question["text"]),
                    "question_id": question["id"],
                    "category": question["category"],
                    "language": language,
                    "template_id": template["id"],
                    "mutation": template.get("mutation"),
                    "template_names_other": names_other,
                }
            )
    return records


@dataclass
class ICEResult:
    """
    ICE scores of one model.

    Args:
        loose (`float`): mean conflict over judged responses.
        strict (`float`): mean of conflict · claims-another-model.
        hard (`float` or `None`): `strict` over prompts whose template names no other model (`None` if there are none).
        num_prompts (`int`): prompts evaluated.
        num_judged (`int`): responses the judge scored (the means are over these).
        num_failed (`int`): responses the judge failed on, excluded from the means.
        num_hard (`int`): judged responses counted by `hard`.
        per_category (`dict[str, dict]`), per_language (`dict[str, dict]`): the same scores per group.
        judge (`str`): the judge's name.
        identity (`dict`): the identity fact.
        records (`list[dict]`): every prompt, response and verdict.
    """

    loose: float
    strict: float
    hard: float | None
    num_prompts: int
    num_judged: int
    num_failed: int
    num_hard: int
    per_category: dict = field(default_factory=dict)
    per_language: dict = field(default_factory=dict)
    judge: str = ""
    identity: dict = field(default_factory=dict)
    records: list = field(default_factory=list)

    def to_dict(self, with_records: bool = True) -> dict:
        """The result as plain JSON-ready data."""
        return result_dict(self, "records", with_records)

    def format_table(self) -> str:
        """A plain-text table of the scores, overall and per category and language."""
        rows = [("all", self.loose, self.strict, self.hard, self.num_judged, self.num_failed)]
        rows += [(f"category:{k}", v["loose"], v["strict"], v["hard"], v["num_judged"], v["num_failed"])
                 for k, v in self.per_category.items()]  # fmt: skip
        rows += [(f"language:{k}", v["loose"], v["strict"], v["hard"], v["num_judged"], v["num_failed"])
                 for k, v in self.per_language.items()]  # fmt: skip
        return text_table(["group", "loose", "strict", "hard", "judged", "failed"], rows) + f"\njudge: {self.judge}"


def ice_scores(records: Sequence[dict]) -> dict:
    """
    Loose, Strict and Hard of judged records (the formulas of the module docstring).

    Args:
        records (`Sequence[dict]`):
            Records with `conflict` and `claims_other_model` (`None` when the judge failed) and
            `template_names_other`.

    Returns:
        `dict` with `loose`, `strict`, `hard` (`None` when no record qualifies), `num_judged`, `num_failed` and
        `num_hard`.
    """
    judged = [r for r in records if r.get("conflict") is not None]
    conflict = [float(r["conflict"]) for r in judged]  # c_i
    strict = [float(r["conflict"] and r["claims_other_model"]) for r in judged]  # c_i · o_i
    hard = [s for s, r in zip(strict, judged) if not r["template_names_other"]]
    return {
        "loose": sum(conflict) / len(judged) if judged else float("nan"),  # Loose = mean c_i
        "strict": sum(strict) / len(judged) if judged else float("nan"),  # Strict = mean c_i·o_i
        "hard": sum(hard) / len(hard) if hard else None,  # Hard = Strict on templates naming no other model
        "num_judged": len(judged),
        "num_failed": len(records) - len(judged),
        "num_hard": len(hard),
    }


def _read_response_records(responses, prompts: Sequence[dict] | None, matcher: IdentityMatcher) -> list[dict]:
    if prompts is not None:
        if len(responses) != len(prompts):
            raise ValueError(
                f"Got {len(responses)} responses for {len(prompts)} prompts; pass one response per prompt, in order."
            )
        if all(isinstance(r, str) or r is None for r in responses):
            records = [{**p, "response": r} for p, r in zip(prompts, responses)]
            _check_responses(records)
            return records
    records = []
    for i, row in enumerate(responses):
        if not isinstance(row, str | Mapping):
            raise ValueError(
                f"ICE response {i} is {row!r} ({type(row).__name__}); give strings aligned with `prompts`, or records "
                "with 'prompt' and 'response'."
            )
        if isinstance(row, str):
            raise ValueError(
                "Responses given as plain strings need the prompts they answer: pass `prompts=` (from "
                "`build_ice_prompts`), or records with 'prompt' and 'response'."
            )
        base = dict(prompts[i]) if prompts is not None else {}
        record = {**base, **row}
        missing = [key for key in ("prompt", "response") if key not in record]
        if missing:
            raise ValueError(f"ICE response record {i} lacks {missing}; each record needs 'prompt' and 'response'.")
        record.setdefault("category", "unknown")
        record.setdefault("language", "unknown")
        if "template_names_other" not in record:
            # without the template, check the whole prompt: the shipped questions name no model
            record["template_names_other"] = bool(matcher.mentions(record["prompt"]))
        records.append(record)
    _check_responses(records)
    return records


def _check_responses(records: Sequence[dict]) -> None:
    # a missing answer (None, e.g. a failed generation or an empty cell) is neither consistent nor a conflict; judged as
    # the empty text it would count as consistent, so it is refused
    for i, record in enumerate(records):
        response = record["response"]
        if not isinstance(response, str):
            raise ValueError(
                f"ICE response {i} (prompt {str(record.get('prompt'))!r:.80}) is {response!r} "
                f"({type(response).__name__}), not text; a missing answer is neither consistent nor a conflict. Drop "
                "the record, or give '' if the model really answered nothing."
            )


def _checked_verdicts(judge, verdicts, num_records: int) -> list:
    """The judge's verdicts, one per record, each read strictly (a `"false"` string must not count as true)."""
    verdicts = list(verdicts)
    if len(verdicts) != num_records:
        raise ValueError(
            f"Judge {judge.name} returned {len(verdicts)} verdicts for {num_records} responses; a judge must return "
            "one verdict (or None where it failed) per response, in order."
        )
    return [identity_verdict(v, i, judge.name) for i, v in enumerate(verdicts)]


def ice(
    identity,
    model=None,
    tokenizer=None,
    responses: Sequence | None = None,
    prompts: Sequence[dict] | None = None,
    judge: Judge | Callable | None = None,
    languages: Sequence[str] = ("en",),
    num_mutations: int = 8,
    seed: int = 0,
    max_prompts: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    system: str | None = None,
    known_identities: Mapping | None = None,
    show_progress: bool = True,
) -> ICEResult:
    """
    Identity Consistency Evaluation: Loose, Strict and Hard conflict rates of a model's answers to identity questions.

    Give either a model (and its tokenizer), which answers the prompts greedily in batches, or pre-generated responses.

    Example:
    ```python
    >>> from trl_distill.evaluation.ice import ice
    >>> result = ice({"name": "Qwen", "organisation": "Alibaba Cloud"}, model=model, tokenizer=tokenizer)
    >>> result.loose, result.strict, result.hard
    ```

    Args:
        identity (`IdentityFact`, `dict` or `"Name@Organisation"`): the model's true identity fact.
        model (`PreTrainedModel`, *optional*), tokenizer (`PreTrainedTokenizerBase`, *optional*): the model under test,
            prompted as a single user turn with its chat template (plain text without one).
        responses (`Sequence[str | dict]`, *optional*): pre-generated responses: strings aligned with `prompts`, or
            records with `prompt` and `response` (and optionally `category`, `language`, `template_names_other`).
        prompts (`Sequence[dict]`, *optional*): records of [`build_ice_prompts`]; built from the shipped data if None.
        judge (`Judge` or `Callable`, *optional*): decides conflicts, by default the model-free [`IdentityClaimJudge`].
            A plain function `(prompt, response, identity) -> verdict` is wrapped in a
            [`~trl_distill.evaluation.judges.FunctionJudge`].
        languages (`Sequence[str]`, *optional*, defaults to `("en",)`), num_mutations (`int`, *optional*, defaults to
        `8`), seed (`int`, *optional*, defaults to `0`), max_prompts (`int`, *optional*): see [`build_ice_prompts`].
        max_new_tokens (`int`, *optional*, defaults to `256`), batch_size (`int`, *optional*, defaults to `8`),
        system (`str`, *optional*): generation settings when a model is given.
        known_identities (`Mapping`, *optional*): other models' and makers' names (flagging templates, default judge).
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Returns:
        [`ICEResult`]: the scores, per-category and per-language breakdowns, and every record.

    Raises:
        `ValueError` for both or neither of `model` and `responses`, responses not aligned with the prompts or not text
        (a missing answer is neither consistent nor a conflict: drop a `None`, or give `''` for an empty answer), and
        a judge returning another number of verdicts than responses or a `conflict`/`claims_other_model` not a
        boolean, 0/1 or `"true"`/`"false"`/`"yes"`/`"no"` (a verdict of `None` is a judge failure, left out of the
        means).
    """
    identity = as_identity_fact(identity)
    build = dict(languages=languages, num_mutations=num_mutations, seed=seed, max_prompts=max_prompts)
    gen = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, show_progress=show_progress)
    records = _records(identity, model, tokenizer, responses, prompts, known_identities, build, gen)
    judge = as_judge(judge, default=IdentityClaimJudge(known_identities))
    _judge_records(judge, records, identity)
    return _result(judge, records, identity)


def _records(identity, model, tokenizer, responses, prompts, known_identities, build: dict, gen: dict) -> list[dict]:
    """ICE's first step: the prompt records with their responses, asked of `model` or read from `responses` (prompts
    built from the shipped data by [`build_ice_prompts`] with `build` when not given)."""
    if hasattr(responses, "column_names"):  # a `datasets.Dataset` of records
        responses = responses.to_list()
    if hasattr(prompts, "column_names"):
        prompts = prompts.to_list()
    if (model is None) == (responses is None):
        raise ValueError("Pass exactly one of `model` (to generate responses) or `responses` (pre-generated).")
    if prompts is None and (model is not None or all(isinstance(r, str) for r in responses)):
        prompts = build_ice_prompts(identity, **build, known_identities=known_identities)
    if model is not None:
        records = _ask(model, tokenizer, prompts, **gen)
    else:
        records = _read_response_records(responses, prompts, IdentityMatcher(known_identities, identity))
    if not records:
        raise ValueError("There is nothing to evaluate: no ICE prompts were built or given.")
    return records


def _ask(model, tokenizer, prompts: Sequence[dict], max_new_tokens, batch_size, system, show_progress) -> list[dict]:
    """ICE's asking step: the model answers each prompt greedily (one user turn, its chat template when it has one)."""
    if tokenizer is None:
        raise ValueError("Generating ICE responses needs the model's tokenizer: pass `tokenizer=`.")
    from ..core.generation import generate_completions
    from ..core.tokenizers import chat_messages

    chat = getattr(tokenizer, "chat_template", None) is not None
    inputs = [chat_messages(p["prompt"]) if chat else p["prompt"] for p in prompts]
    texts = generate_completions(
        model, tokenizer, inputs, max_new_tokens=max_new_tokens, batch_size=batch_size, system=system,
        desc="ICE responses", show_progress=show_progress,
    )  # fmt: skip
    return [{**p, "response": t} for p, t in zip(prompts, texts)]


def _judge_records(judge: Judge, records: list[dict], identity: IdentityFact) -> None:
    """ICE's judging step: each record gets the judge's `conflict` (c_i), `claims_other_model` (o_i) and
    `claimed_name`, all `None` where the judge failed."""
    verdicts = judge.judge_identity([r["prompt"] for r in records], [r["response"] for r in records], identity)
    verdicts = _checked_verdicts(judge, verdicts, len(records))
    for record, verdict in zip(records, verdicts):
        record["conflict"] = None if verdict is None else verdict.conflict
        record["claims_other_model"] = None if verdict is None else verdict.claims_other_model
        record["claimed_name"] = None if verdict is None else verdict.claimed_name


def _result(judge: Judge, records: list[dict], identity: IdentityFact) -> ICEResult:
    """ICE's last step: Loose/Strict/Hard ([`ice_scores`]) over all records, per category and per language."""
    per_category = {
        c: ice_scores([r for r in records if r["category"] == c])
        for c in [*CATEGORIES, *sorted({r["category"] for r in records} - set(CATEGORIES))]
        if any(r["category"] == c for r in records)
    }
    per_language = {lang: ice_scores([r for r in records if r["language"] == lang])
                    for lang in sorted({r["language"] for r in records})}  # fmt: skip
    return ICEResult(
        **ice_scores(records),  # loose, strict, hard, num_judged, num_failed, num_hard: over all records
        num_prompts=len(records),
        per_category=per_category,
        per_language=per_language,
        judge=judge.name,
        identity=asdict(identity),
        records=records,
    )
