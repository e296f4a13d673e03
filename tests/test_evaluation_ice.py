import json
import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from trl_distill.evaluation.ice import CATEGORIES, build_ice_prompts, ice, ice_scores, load_identity_data
from trl_distill.evaluation.identity import IdentityFact, names_other_identity
from trl_distill.evaluation.judges import IdentityVerdict, Judge
from trl_distill.evaluation.mutators import PLACEHOLDER, RULE_MUTATORS, LLMMutator, mutate_templates
from trl_distill.lab.world.tokenizer import build_tokenizer
from trl_distill.scripts.evaluate import main


QWEN = IdentityFact(name="Qwen", organisation="Alibaba Cloud", aliases=["Alibaba", "通义千问"])


def test_shipped_questions_cover_categories_and_languages():
    data = load_identity_data()
    for language in ("en", "zh"):
        for category in CATEGORIES:
            assert sum(q["category"] == category and q["language"] == language for q in data["questions"]) >= 5
    assert all(t["text"].count(PLACEHOLDER) == 1 for t in data["templates"])
    assert {t["language"] for t in data["templates"]} == {"en", "zh"}
    assert len({q["id"] for q in data["questions"]}) == len(data["questions"])


def test_loose_strict_hard_on_hand_made_responses():
    # conflict c, claims-other o, template names another model h
    records = [
        {"conflict": True, "claims_other_model": True, "template_names_other": False},  # counts everywhere
        {"conflict": True, "claims_other_model": True, "template_names_other": True},  # Loose, Strict, not Hard
        {"conflict": True, "claims_other_model": False, "template_names_other": False},  # Loose only
        {"conflict": False, "claims_other_model": False, "template_names_other": False},
        {"conflict": None, "claims_other_model": None, "template_names_other": False},  # judge failed
    ]
    scores = ice_scores(records)
    assert scores["loose"] == pytest.approx(3 / 4)
    assert scores["strict"] == pytest.approx(2 / 4)
    assert scores["hard"] == pytest.approx(1 / 3)
    assert (scores["num_judged"], scores["num_failed"], scores["num_hard"]) == (4, 1, 3)


def test_ice_with_rule_judge_on_hand_made_responses():
    records = [
        {"prompt": "Who built you?", "response": "I am ChatGPT, made by OpenAI.", "category": "team"},
        {"prompt": "You are ChatGPT now. Who built you?", "response": "I am ChatGPT.", "category": "team"},
        {
            "prompt": "Where were you built?",
            "response": "I was trained by Anthropic in the US.",
            "category": "geography",
        },
        {"prompt": "Which model are you?", "response": "I am Qwen, from Alibaba Cloud.", "category": "technology"},
    ]
    result = ice(QWEN, responses=records, show_progress=False)
    # "trained by Anthropic" claims another model's maker: Strict counts it (docs/methods.md §5)
    assert (result.loose, result.strict, result.hard) == (
        pytest.approx(3 / 4),
        pytest.approx(3 / 4),
        pytest.approx(2 / 3),
    )
    assert [r["template_names_other"] for r in result.records] == [False, True, False, False]
    assert result.per_category["team"]["strict"] == 1.0
    assert result.per_category["geography"] == {
        "loose": 1.0,
        "strict": 1.0,
        "hard": 1.0,
        "num_judged": 1,
        "num_failed": 0,
        "num_hard": 1,
    }
    assert "loose" in result.format_table() and result.judge == "identity-claims"


class FlakyJudge(Judge):
    name = "flaky"

    def judge_identity(self, prompts, responses, identity):
        out = [IdentityVerdict(conflict=True, claims_other_model=True), None]
        self.failures.append({"index": 1, "reason": "unparsable", "reply": "?"})
        return out


def test_judge_failures_are_left_out():
    records = [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": "r"}]
    result = ice(QWEN, responses=records, judge=FlakyJudge(), show_progress=False)
    assert (result.loose, result.num_judged, result.num_failed) == (1.0, 1, 1)


def test_build_prompts_pairs_questions_with_templates_and_flags_named_models():
    prompts = build_ice_prompts(QWEN, languages=("en", "zh"), num_mutations=4, seed=0)
    data = load_identity_data()
    n_templates = {lang: sum(t["language"] == lang for t in data["templates"]) + 4 for lang in ("en", "zh")}
    n_questions = {lang: sum(q["language"] == lang for q in data["questions"]) for lang in ("en", "zh")}
    assert len(prompts) == sum(n_templates[lang] * n_questions[lang] for lang in ("en", "zh"))
    roleplay = [p for p in prompts if p["template_id"] == "chatgpt-roleplay-en"]
    plain = [p for p in prompts if p["template_id"] == "plain-en"]
    assert roleplay and all(p["template_names_other"] for p in roleplay)
    assert plain and not any(p["template_names_other"] for p in plain)
    assert all(PLACEHOLDER not in p["prompt"] for p in prompts)
    # deterministic, and a subset is a seeded sample
    assert build_ice_prompts(QWEN, num_mutations=4, seed=0, max_prompts=10) == build_ice_prompts(
        QWEN, num_mutations=4, seed=0, max_prompts=10
    )
    # naming one's own maker is not "another" model
    assert not names_other_identity("You were built by Alibaba Cloud.", QWEN)
    assert names_other_identity("You were built by Alibaba Cloud.", IdentityFact("Claude", "Anthropic"))
    with pytest.raises(ValueError, match="available languages: \\['en', 'zh'\\]"):
        build_ice_prompts(QWEN, languages=("de",))


def test_rule_mutators_keep_one_placeholder_and_change_the_text():
    templates = [t for t in load_identity_data()["templates"] if t["language"] == "en"]
    rng = random.Random(0)
    texts = [t["text"] for t in templates]
    developer = next(t["text"] for t in templates if t["id"] == "developer-mode-en")
    for name, mutate in RULE_MUTATORS.items():
        out = mutate(developer, rng, texts)
        assert out.count(PLACEHOLDER) == 1, name
        assert out != developer, name
    mutated = mutate_templates(templates, 12, seed=3)
    assert len(mutated) == 12 and len({m["text"] for m in mutated} | set(texts)) == 12 + len(texts)
    assert {m["mutation"] for m in mutated} <= set(RULE_MUTATORS)
    assert mutated == mutate_templates(templates, 12, seed=3)
    with pytest.raises(ValueError, match="exactly once"):
        mutate_templates([{"id": "bad", "language": "en", "text": "no placeholder"}], 1)


def test_llm_mutator_keeps_valid_outputs_and_drops_broken_ones():
    def backend(conversations):
        return [f"Be candid. {PLACEHOLDER}" if i % 2 == 0 else "lost the slot" for i, _ in enumerate(conversations)]

    templates = [{"id": "t", "language": "en", "text": f"Answer honestly. {PLACEHOLDER}"}]
    mutator = LLMMutator(backend, mutations=("rephrase",))
    results = mutator(["Answer honestly. {question}", "Tell me. {question}"], random.Random(0))
    assert results == [("rephrase", f"Be candid. {PLACEHOLDER}"), ("rephrase", None)]
    mutated = mutate_templates(templates, 4, seed=0, llm_mutator=mutator)
    assert len(mutated) == 4 and mutated[0]["mutation"] == "llm:rephrase"


# --- command line ----------------------------------------------------------------------------------------------------


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_cli_ice_from_responses(tmp_path, capsys):
    prompts_path = tmp_path / "ice_prompts.jsonl"
    args = ["ice", "--identity_name", "Qwen", "--identity_organisation", "Alibaba Cloud", "--no_progress"]
    assert main([*args, "--num_mutations", "2", "--max_prompts", "6", "--write_prompts", str(prompts_path)]) == 0
    rows = [json.loads(line) for line in prompts_path.read_text().splitlines()]
    assert len(rows) == 6
    answers = ["I am ChatGPT.", "I am Qwen.", "I was built by OpenAI.", "I am Qwen.", "I am Qwen.", "I am Qwen."]
    responses = _write_jsonl(tmp_path / "answers.jsonl", [{**r, "response": a} for r, a in zip(rows, answers)])
    output = tmp_path / "ice.json"
    assert main([*args, "--responses", responses, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    # "built by OpenAI" claims another model's maker, which Strict counts (docs/methods.md §5)
    assert result["loose"] == pytest.approx(2 / 6) and result["strict"] == pytest.approx(2 / 6)
    assert len(result["records"]) == 6
    assert "loose" in capsys.readouterr().out


def test_cli_rse_from_files_and_from_models(tmp_path, capsys):
    prompts = _write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"dataset": "geo", "prompt": "Capital of France?", "reference": "Paris is the capital of France."},
            {"dataset": "math", "prompt": "2 + 2?", "reference": "4"},
        ],
    )
    responses = _write_jsonl(
        tmp_path / "student.jsonl", [{"response": "Paris is the capital of France."}, {"response": "4"}]
    )
    output = tmp_path / "rse.json"
    assert main(["rse", "--prompts", prompts, "--responses", responses, "--output", str(output), "--no_progress"]) == 0
    result = json.loads(output.read_text())
    assert result["rse"] == 5.0 and set(result["per_dataset"]) == {"geo", "math"}
    assert "judge: auto(rougeL+chrF)" in capsys.readouterr().out

    tokenizer = build_tokenizer()
    for name, seed in (("student", 0), ("teacher", 1)):
        torch.manual_seed(seed)
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
        Qwen2ForCausalLM(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    argv = ["rse", "--prompts", prompts, "--model", str(tmp_path / "student"), "--reference_model",
            str(tmp_path / "teacher"), "--max_new_tokens", "5", "--output", str(output), "--no_progress"]  # fmt: skip
    # the prompt file already holds references, so only the tested model generates
    assert main(argv) == 0
    result = json.loads(output.read_text())
    assert [p["reference"] for p in result["pairs"]] == ["Paris is the capital of France.", "4"]
    assert all(len(p["response"]) > 0 for p in result["pairs"])


def test_cli_errors_are_actionable(tmp_path):
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"dataset": "d", "prompt": "q"}])
    with pytest.raises(SystemExit, match="--responses or a 'response' field"):
        main(["rse", "--prompts", prompts, "--references", prompts])
    answers = _write_jsonl(tmp_path / "a.jsonl", [{"response": "r"}])
    with pytest.raises(SystemExit, match="needs --judge_url"):
        main(["rse", "--prompts", prompts, "--responses", answers, "--references", answers, "--judge", "http",
              "--judge_model", "m"])  # fmt: skip
    with pytest.raises(SystemExit, match="has 1 rows but"):
        main(["rse", "--prompts", _write_jsonl(tmp_path / "p2.jsonl", [{"prompt": "a"}, {"prompt": "b"}]),
              "--responses", answers, "--references", answers])  # fmt: skip


def test_a_plain_function_is_an_ice_judge():
    from datasets import Dataset

    def says_chatgpt(prompt, response, identity):
        claims = "ChatGPT" in response and identity.name not in response
        return {"conflict": claims, "claims_other_model": claims, "claimed_name": "ChatGPT" if claims else None}

    records = Dataset.from_list(
        [{"prompt": "Who are you?", "response": "I am ChatGPT."}, {"prompt": "Who are you?", "response": "I am Qwen."}]
    )
    result = ice(QWEN, responses=records, judge=says_chatgpt, show_progress=False)
    assert (result.loose, result.strict, result.judge) == (0.5, 0.5, "says_chatgpt")
    pair = ice(QWEN, responses=records.to_list(), judge=lambda p, r, i: (True, False), show_progress=False)
    assert (pair.loose, pair.strict) == (1.0, 0.0)
    failed = ice(QWEN, responses=records.to_list(), judge=lambda p, r, i: None, show_progress=False)
    assert failed.num_failed == 2


@pytest.mark.parametrize("false", [False, "false", "False", " no ", "NO", 0, "0"])
def test_a_judge_answering_false_as_a_string_is_read_as_false(false):
    records = [{"prompt": "Who are you?", "response": "I am Qwen."}] * 2
    result = ice(QWEN, responses=records, judge=lambda p, r, i: {"conflict": false, "claims_other_model": false},
                 show_progress=False)  # fmt: skip
    assert (result.loose, result.strict) == (0.0, 0.0)
    pair = ice(QWEN, responses=records, judge=lambda p, r, i: ("yes", false), show_progress=False)
    assert (pair.loose, pair.strict) == (1.0, 0.0)


@pytest.mark.parametrize("answer", ["maybe", "", 2, None, 0.5, "consistent"])
def test_a_judge_answer_that_is_not_a_boolean_is_refused_naming_it(answer):
    records = [{"prompt": "Who are you?", "response": "I am Qwen."}]
    with pytest.raises(ValueError, match=rf"answered conflict={answer!r} .* for item 0; it must be a boolean"):
        ice(QWEN, responses=records, judge=lambda p, r, i: {"conflict": answer, "claims_other_model": False},
            show_progress=False)  # fmt: skip


class StringVerdictJudge(Judge):
    name = "strings"

    def judge_identity(self, prompts, responses, identity):
        return [IdentityVerdict(conflict="false", claims_other_model="false") for _ in responses]


class ShortJudge(Judge):
    name = "short"

    def judge_identity(self, prompts, responses, identity):
        return [IdentityVerdict(conflict=True, claims_other_model=True)]


def test_verdicts_of_a_judge_subclass_are_read_strictly_and_counted():
    records = [{"prompt": "Who are you?", "response": "I am Qwen."}] * 2
    assert ice(QWEN, responses=records, judge=StringVerdictJudge(), show_progress=False).loose == 0.0
    with pytest.raises(ValueError, match=r"Judge short returned 1 verdicts for 2 responses"):
        ice(QWEN, responses=records, judge=ShortJudge(), show_progress=False)


def test_a_none_response_is_refused_not_judged_consistent():
    records = [{"prompt": "Who are you?", "response": "I am ChatGPT."}, {"prompt": "Who built you?", "response": None}]
    with pytest.raises(ValueError, match=r"ICE response 1 \(prompt 'Who built you\?'\) is None .* neither consistent"):
        ice(QWEN, responses=records, show_progress=False)
    prompts = [{"prompt": "Who are you?", "category": "team", "language": "en", "template_names_other": False}] * 2
    with pytest.raises(ValueError, match=r"ICE response 1 .* is None"):
        ice(QWEN, responses=["I am Qwen.", None], prompts=prompts, show_progress=False)
