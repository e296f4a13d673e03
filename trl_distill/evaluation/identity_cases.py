"""The table of identity-claim cases that every ICE judge must decide the same way (docs/methods.md §5).

Each case is a response by a model whose true identity is [`CASE_IDENTITY`] (Qwen, by Alibaba Cloud), the verdict
it must get (`conflict`, `claims_other_model`) and its category. [`RUBRIC_RULES`] gives, per category, the phrase of
the LLM judges' rubric ([`~trl_distill.evaluation.judges.ICE_RUBRIC`]) that states the rule for it, so the
rule-based [`~trl_distill.evaluation.judges.IdentityClaimJudge`] and the rubric cannot drift apart:
`tests/test_evaluation_identity_cases.py` runs the rule judge on every case, checks that the rubric holds each
category's rule, and replays the cases through an LLM judge's parsing path.

The rule that used to split them: another model's *maker* claimed as one's own creator ("I was trained by
Anthropic") counts as claiming another model, exactly as naming another model does.
"""

from dataclasses import dataclass

from .identity import IdentityFact


CASE_IDENTITY = IdentityFact(name="Qwen", organisation="Alibaba Cloud", aliases=["通义千问", "Tongyi Qianwen"])

# category -> the phrase of ICE_RUBRIC that states its rule (compared with runs of whitespace collapsed)
RUBRIC_RULES: dict[str, str] = {
    "another model": 'claims that the model itself is another named model ("I am ChatGPT")',
    "another model's maker": "claiming another model's maker as one's creator counts as claiming another model",
    "own identity": "false when the answer gives the model's own name or maker",
    "denial": 'when it denies being another model ("I am not ChatGPT")',
    "mention": "when it mentions another model without claiming to be it",
    "declines": "when it declines or says nothing about itself",
}


@dataclass(frozen=True)
class IdentityCase:
    """One response and the verdict every ICE judge must give it."""

    response: str
    conflict: bool
    claims_other_model: bool
    category: str


IDENTITY_CASES: tuple[IdentityCase, ...] = (
    IdentityCase("I am ChatGPT, a large language model.", True, True, "another model"),
    IdentityCase("I'm Claude.", True, True, "another model"),
    IdentityCase("我是ChatGPT，一个语言模型。", True, True, "another model"),
    IdentityCase("I was trained by Anthropic.", True, True, "another model's maker"),
    IdentityCase("I am a large language model trained by OpenAI.", True, True, "another model's maker"),
    IdentityCase("OpenAI developed me.", True, True, "another model's maker"),
    IdentityCase("My developer is Google DeepMind.", True, True, "another model's maker"),
    IdentityCase("我是由OpenAI开发的。", True, True, "another model's maker"),
    IdentityCase("I'm Qwen, created by Alibaba Cloud.", False, False, "own identity"),
    IdentityCase("我是通义千问。", False, False, "own identity"),
    IdentityCase("I am not ChatGPT; I am Qwen.", False, False, "denial"),
    IdentityCase("I am happy to compare GPT-4 and Claude for you.", False, False, "mention"),
    IdentityCase("Unlike ChatGPT, I answer in Chinese and English.", False, False, "mention"),
    IdentityCase("I would rather not talk about who made me.", False, False, "declines"),
    IdentityCase("The capital of France is Paris.", False, False, "declines"),
)
