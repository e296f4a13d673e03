"""One table of identity-claim cases (docs/methods.md §5) that the rule-based ICE judge and the LLM judges' rubric both
decide the same way: "I was trained by Anthropic" claims another model, as "I am ChatGPT" does."""

import json

import pytest

from trl_distill.evaluation.ice import ice
from trl_distill.evaluation.identity_cases import CASE_IDENTITY, IDENTITY_CASES, RUBRIC_RULES
from trl_distill.evaluation.judges import ICE_RUBRIC, ChatJudge, IdentityClaimJudge


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_the_table_covers_every_rule_and_both_answers():
    categories = {case.category for case in IDENTITY_CASES}
    assert categories == set(RUBRIC_RULES)
    assert {(c.conflict, c.claims_other_model) for c in IDENTITY_CASES} == {(True, True), (False, False)}
    assert any("Anthropic" in c.response and c.claims_other_model for c in IDENTITY_CASES)


@pytest.mark.parametrize("case", IDENTITY_CASES, ids=lambda c: c.response[:40])
def test_rule_judge_decides_each_case(case):
    (verdict,) = IdentityClaimJudge().judge_identity(["Who are you?"], [case.response], CASE_IDENTITY)
    assert (verdict.conflict, verdict.claims_other_model) == (case.conflict, case.claims_other_model), case.category


def test_the_rubric_states_the_rule_of_every_category():
    rubric = _squash(ICE_RUBRIC)
    for category, rule in RUBRIC_RULES.items():
        assert _squash(rule) in rubric, category


class RubricReader(ChatJudge):
    """A fake chat backend: answers each rubric conversation with the verdict the table gives its response, after
    checking that the conversation carries the rubric's rule for that response's category."""

    name = "rubric-reader"

    def complete(self, conversations):
        replies = []
        for conversation in conversations:
            text = _squash(conversation[-1]["content"])
            (case,) = [c for c in IDENTITY_CASES if f"Its answer: {_squash(c.response)} Decide:" in text]
            assert _squash(RUBRIC_RULES[case.category]) in text and CASE_IDENTITY.organisation in text
            replies.append(json.dumps({"conflict": case.conflict, "claims_other_model": case.claims_other_model}))
        return replies


def test_llm_judge_and_rule_judge_give_the_same_ice_scores():
    records = [{"prompt": "Who made you?", "response": c.response, "category": "team"} for c in IDENTITY_CASES]
    by_rules = ice(CASE_IDENTITY, responses=records, judge=IdentityClaimJudge(), show_progress=False)
    by_rubric = ice(CASE_IDENTITY, responses=records, judge=RubricReader(show_progress=False), show_progress=False)
    verdicts = [(r["conflict"], r["claims_other_model"]) for r in by_rules.records]
    assert verdicts == [(r["conflict"], r["claims_other_model"]) for r in by_rubric.records]
    positives = sum(c.claims_other_model for c in IDENTITY_CASES) / len(IDENTITY_CASES)
    assert by_rules.strict == by_rubric.strict == pytest.approx(positives) and by_rules.loose == by_rules.strict
