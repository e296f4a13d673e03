import math

import pytest

from trl_distill.evaluation.judges import AutomaticJudge, ChatJudge, Judge, LocalChatJudge, SimilarityScore
from trl_distill.evaluation.rse import rse, rse_scores
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tokenizer import build_tokenizer


PROMPTS = {
    "geo": ["What is the capital of France?", "Where is Mount Fuji?"],
    "math": ["What is 2 + 2?"],
}
REFERENCES = {
    "geo": ["The capital of France is Paris.", "Mount Fuji is in Japan, on the island of Honshu."],
    "math": ["2 + 2 equals 4."],
}


class FixedJudge(Judge):
    """Returns given scores in order (to check the aggregation arithmetic, not a judge)."""

    name = "fixed"

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)
        self.calls = 0

    def score_similarity(self, prompts, responses, references):
        self.calls += len(prompts)
        return [self.scores.pop(0) for _ in prompts]


def test_reference_against_itself_gives_five():
    result = rse(PROMPTS, responses=REFERENCES, references=REFERENCES, show_progress=False)
    assert result.rse == 5.0
    assert all(d["rse"] == 5.0 for d in result.per_dataset.values())
    # with an LLM judge the aspects are 2 each, and the judge is never asked about identical texts
    judge = FixedJudge([])
    result = rse(PROMPTS, responses=REFERENCES, references=REFERENCES, judge=judge, show_progress=False)
    assert (result.rse, result.aspects) == (5.0, {"style": 2.0, "logic": 2.0, "content": 2.0})
    assert judge.calls == 0


def test_unweighted_mean_over_datasets_and_aspects():
    scores = [
        SimilarityScore(overall=4, style=2, logic=1, content=2),  # geo
        SimilarityScore(overall=2, style=0, logic=1, content=0),  # geo
        SimilarityScore(overall=5, style=2, logic=2, content=2),  # math
    ]
    responses = {"geo": ["a", "b"], "math": ["c"]}
    result = rse(PROMPTS, responses=responses, references=REFERENCES, judge=FixedJudge(scores), show_progress=False)
    assert result.per_dataset["geo"]["rse"] == 3.0
    assert result.per_dataset["math"]["rse"] == 5.0
    assert result.rse == 4.0  # (3 + 5) / 2, not the pair-weighted 11 / 3
    assert result.aspects == {"style": 1.5, "logic": 1.5, "content": 1.5}
    assert result.num_pairs == 3 and result.num_failed == 0
    assert result.pairs[2]["score"]["overall"] == 5
    table = result.format_table()
    assert "geo" in table and "4.000" in table


def test_judge_failures_are_excluded_not_zero():
    summary = rse_scores({"a": [SimilarityScore(overall=4), None], "b": [None]})
    assert summary["per_dataset"]["a"] == {
        "rse": 4.0,
        "style": None,
        "logic": None,
        "content": None,
        "num_pairs": 2,
        "num_failed": 1,
    }
    assert summary["per_dataset"]["b"]["rse"] is None
    assert summary["rse"] == 4.0  # dataset b has no scored pair, so it cannot enter the mean


def test_automatic_judge_orders_models():
    close = {"geo": ["Paris is the capital of France.", "Mount Fuji is in Japan, on Honshu."], "math": ["2 + 2 = 4."]}
    far = {"geo": ["I like turtles.", "Bananas are yellow."], "math": ["The weather is nice."]}
    judge = AutomaticJudge()
    good = rse(PROMPTS, responses=close, references=REFERENCES, judge=judge, show_progress=False)
    bad = rse(PROMPTS, responses=far, references=REFERENCES, judge=judge, show_progress=False)
    assert 5.0 > good.rse > bad.rse >= 1.0
    assert good.aspects == {"style": None, "logic": None, "content": None}
    assert not good.comparable_to_llm_judges
    assert "not comparable to LLM judges" in good.format_table()


def test_input_errors_name_the_dataset():
    with pytest.raises(ValueError, match=r"`responses\['geo'\]` has 1 texts for 2 prompts"):
        rse(PROMPTS, responses={"geo": ["x"], "math": ["y"]}, references=REFERENCES)
    with pytest.raises(ValueError, match=r"no entry for dataset\(s\) \['math'\]"):
        rse(PROMPTS, responses={"geo": ["x", "y"]}, references=REFERENCES)
    with pytest.raises(ValueError, match="exactly one of `responses`"):
        rse(PROMPTS, references=REFERENCES)


def test_models_generate_in_batches_and_local_judge_failures_are_reported():
    tokenizer = build_tokenizer()
    student, teacher = tiny_model(tokenizer, "xs", seed=0).eval(), tiny_model(tokenizer, "xs", seed=1).eval()
    result = rse(
        PROMPTS,
        model=student,
        tokenizer=tokenizer,
        reference_model=teacher,
        max_new_tokens=6,
        batch_size=2,
        show_progress=False,
    )
    assert result.num_pairs == 3 and len(result.pairs[0]["response"]) > 0
    assert 1.0 <= result.rse <= 5.0
    # a random "judge" model cannot follow the rubric: every pair is re-asked, then counted as failed, never as 0
    judge = LocalChatJudge(
        tiny_model(tokenizer, "xs", seed=2).eval(), tokenizer, max_new_tokens=4, max_retries=1, show_progress=False
    )
    responses = {"geo": ["Paris.", "Japan."], "math": ["4"]}
    result = rse(PROMPTS, responses=responses, references=REFERENCES, judge=judge, show_progress=False)
    assert result.num_failed == 3 and judge.num_failures == 3 and judge.num_reasks == 3
    assert math.isnan(result.rse)
    assert all(pair["score"] is None for pair in result.pairs)


def test_chat_judge_conversation_holds_the_rubric():
    conversation = ChatJudge().similarity_conversation("Q?", "test answer", "reference answer")
    assert conversation[0]["role"] == "system"
    text = conversation[1]["content"]
    assert "[TEST]\ntest answer" in text and "[REFERENCE]\nreference answer" in text
    assert "0 to 2" in text and "1 to 5" in text


def test_a_none_response_is_left_out_with_a_warning_naming_it(caplog):
    responses = {"geo": ["Paris.", None], "math": ["4"]}
    judge = FixedJudge([SimilarityScore(overall=3.0), SimilarityScore(overall=1.0)])
    with caplog.at_level("WARNING", logger="trl_distill.evaluation.rse"):
        result = rse(PROMPTS, responses=responses, references=REFERENCES, judge=judge, show_progress=False)
    assert "geo[1]" in caplog.text and judge.calls == 2  # never judged as the text "None"
    assert result.per_dataset["geo"]["num_failed"] == 1 and result.per_dataset["geo"]["rse"] == 3.0
    assert result.rse == pytest.approx((3.0 + 1.0) / 2) and result.pairs[1]["score"] is None


def test_a_plain_function_is_a_judge_and_a_dataset_gives_the_prompts():
    from datasets import Dataset

    seen = []

    def overlap(prompt, response, reference):
        seen.append((prompt, response, reference))
        return {"overall": 5.0 if response in reference else 1.0, "style": 1}

    prompts = Dataset.from_dict({"prompt": PROMPTS["geo"]})
    result = rse(
        prompts, responses=["Paris", "Tokyo"], references=REFERENCES["geo"], judge=overlap, show_progress=False
    )
    assert result.judge == "overlap" and result.per_dataset["default"]["rse"] == pytest.approx(3.0)
    assert result.aspects["style"] == 1.0 and seen[1] == (PROMPTS["geo"][1], "Tokyo", REFERENCES["geo"][1])
    bare = rse(PROMPTS["math"], responses=["4"], references=["four"], judge=lambda p, r, ref: 2, show_progress=False)
    assert bare.rse == 2.0
    with pytest.raises(ValueError, match=r"gave overall=9.0 for item 0"):
        rse(PROMPTS["math"], responses=["4"], references=["four"], judge=lambda p, r, ref: 9, show_progress=False)
    with pytest.raises(TypeError, match="must be a Judge .* or a plain function, got str"):
        rse(PROMPTS["math"], responses=["4"], references=["four"], judge="gpt-4", show_progress=False)


def test_a_judge_returning_too_few_scores_is_refused():
    class ShortJudge(Judge):
        name = "short"

        def score_similarity(self, prompts, responses, references):
            return [SimilarityScore(overall=3)]

    with pytest.raises(ValueError, match=r"Judge short returned 1 scores for 2 pairs"):
        rse({"math": ["a", "b"]}, responses={"math": ["x", "y"]}, references={"math": ["u", "v"]}, judge=ShortJudge(),
            show_progress=False)  # fmt: skip
