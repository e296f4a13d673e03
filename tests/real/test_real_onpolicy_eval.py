"""The on-policy trainers (OGLS-SD, OPSD, CaMOPD), the pool builder and RSE/ICE on real checkpoints: SmolLM2-135M-Instruct
(ChatML with a default system prompt, `pad == eos == <|im_end|>`) and Gemma-3-270M (262k vocabulary, BOS, an end of
turn `<end_of_turn>` that is not its `eos_token`), with tiny budgets.

What is checked is what a real checkpoint can get wrong: rollouts and answers end at the model's own end of turn (the
generation config's EOS ids), with nothing after it; that final token is trained although it is also the pad token;
teacher prompts hold the privileged context, one system prompt and one BOS; a teacher of another tokenizer fails at
initialisation, naming both tokenizers.
"""

import json
import math
import re

import pytest
import torch
from datasets import Dataset
from real_models import load

from trl_distill import CaMOPDConfig, CaMOPDTrainer, OGLSSDConfig, OGLSSDTrainer
from trl_distill.cli import main as cli_main
from trl_distill.core.generation import stop_token_ids
from trl_distill.core.teachers import load_teacher
from trl_distill.core.verifiers import exact_match_reward
from trl_distill.evaluation.diagnostics import token_diagnostics
from trl_distill.evaluation.ice import ice
from trl_distill.evaluation.judges import LocalChatJudge
from trl_distill.evaluation.rse import rse
from trl_distill.pool.builder import build_pool, load_pool


SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
# one worked example makes both models answer in one short "Answer: ..." line
CAPITAL_SHOT = [
    {"role": "user", "content": "What is the capital of Spain?"},
    {"role": "assistant", "content": "Answer: Madrid"},
]
SUM_SHOT = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1 + 1 = 2\nAnswer: 2"}]
# an answer that ran past its end of turn shows the next turn's role ("...Paris.\nsystem\n\nuser\n...")
INVENTED_TURN = re.compile(r"^(system|user|assistant|model)\s*$", re.MULTILINE)


def capitals(countries=(("France", "Paris"), ("Italy", "Rome")), context=False):
    rows = [
        {"prompt": [*CAPITAL_SHOT, {"role": "user", "content": f"What is the capital of {country}?"}], "answer": city}
        for country, city in countries
    ]
    if context:
        for row in rows:
            row["privileged_context"] = f"The capital is {row['answer']}. Answer: {row['answer']}"
    return Dataset.from_list(rows)


def tiny_args(config_class, tmp_path, opsd=False, **overrides):
    """One optimizer step on a handful of short rollouts. SGD keeps no optimizer state: the step costs the trainer's
    work, not AdamW's over 135M-268M parameters (Gemma's 262k x 640 embedding)."""
    settings = dict(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        max_completion_length=8,
        learning_rate=1e-4,
        optim="sgd",
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    settings.update(overrides)
    return config_class.opsd(**settings) if opsd else config_class(**settings)


def rollouts(batch):
    """The completion ids of a generation batch, one list per rollout, as the loss masks them."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["completion_ids"], batch["completion_mask"])]


def assert_ends_at_a_stop_or_the_budget(rollout, stop_ids, budget):
    """A rollout holds one stop id, as its last token, or none and fills the budget: nothing after the end of turn."""
    stops = [i for i, token in enumerate(rollout) if token in stop_ids]
    assert stops == [len(rollout) - 1] or (not stops and len(rollout) == budget), rollout


def assert_finite_metrics(trainer):
    logged = trainer.state.log_history[0]
    assert "loss" in logged
    for key, value in logged.items():
        assert isinstance(value, int | float) and math.isfinite(value), (key, value)
    return logged


class RecordingOGLSSD(OGLSSDTrainer):
    """Keeps the generation batch and the token ids of every prompt the teacher reads."""

    teacher_prompts: list

    def _generate_and_score_completions(self, inputs):
        self.batch = super()._generate_and_score_completions(inputs)
        return self.batch

    def _teacher_hidden_on_ids(self, prompt_ids, completion_ids, completion_mask):
        self.teacher_prompts = [*getattr(self, "teacher_prompts", []), *prompt_ids]
        return super()._teacher_hidden_on_ids(prompt_ids, completion_ids, completion_mask)


class RecordingCaMOPD(CaMOPDTrainer):
    """Keeps the generation batch and the names of the teachers that ran."""

    def _generate_and_score_completions(self, inputs):
        self.batch = super()._generate_and_score_completions(inputs)
        return self.batch

    def _teacher_hidden(self, name, input_ids, attention_mask, logits_to_keep):
        self.teachers_run = {*getattr(self, "teachers_run", set()), name}
        return super()._teacher_hidden(name, input_ids, attention_mask, logits_to_keep)


# ------------------------------------------------------------------------------------------------------------ OGLS-SD
def test_ogls_sd_v2_on_smollm2_stops_at_im_end_and_trains_it(smollm2, tmp_path):
    model, tokenizer = smollm2
    trainer = RecordingOGLSSD(
        model,
        reward_funcs=exact_match_reward,
        args=tiny_args(OGLSSDConfig, tmp_path, num_generations=2),
        train_dataset=capitals(),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = assert_finite_metrics(trainer)
    assert 0 <= logged["steering/success_rate"] <= 1

    batch, im_end = trainer.batch, tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(model, tokenizer) == [im_end] == [tokenizer.pad_token_id]
    ended = 0
    for row, rollout in enumerate(rollouts(batch)):
        assert_ends_at_a_stop_or_the_budget(rollout, [im_end, tokenizer.convert_tokens_to_ids("<|endoftext|>")], 8)
        if rollout[-1] == im_end:
            ended += 1
            # the end of turn is a trained token (divergence or positive-tail NLL) although it is also the pad token
            last = len(rollout) - 1
            assert batch["distill_mask"][row, last] + batch["tail_mask"][row, last] > 0
    assert ended > 0  # "Answer: Paris<|im_end|>" is 4 tokens: the model's own end of turn ended rollouts
    # the anchor reads the student's prompt: SmolLM2's default system prompt once, and an open assistant turn
    for ids in trainer.teacher_prompts:
        text = tokenizer.decode(ids)
        assert text.startswith(SMOL_SYSTEM) and text.count("<|im_start|>system") == 1
        assert text.endswith("<|im_start|>assistant\n")
        # a rollout put in a contextual teacher prompt is its text: no stray end of turn inside a user message
        assert text.count("<|im_end|>") == text.count("<|im_start|>") - 1


def test_opsd_on_smollm2_teacher_reads_the_privileged_context(smollm2, tmp_path):
    model, tokenizer = smollm2
    dataset = capitals(context=True)
    trainer = RecordingOGLSSD(
        model,
        reward_funcs=exact_match_reward,
        args=tiny_args(OGLSSDConfig, tmp_path, opsd=True, num_generations=2),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = assert_finite_metrics(trainer)
    assert logged["steering/frac_distilled_rollouts"] == 1.0  # OPSD matches every rollout
    # the teacher knows the answer and the student does not: a real divergence, not a copy of the student
    assert logged["loss"] > 0

    contexts = dataset["privileged_context"]
    assert len(trainer.teacher_prompts) == 4
    for ids, student_ids, mask in zip(
        trainer.teacher_prompts, trainer.batch["prompt_ids"], trainer.batch["prompt_mask"]
    ):
        text, student_text = tokenizer.decode(ids), tokenizer.decode(student_ids[mask.bool()])
        assert text.startswith(SMOL_SYSTEM) and text.count("<|im_start|>system") == 1
        [context] = [c for c in contexts if c in text]  # the row's own context, in the last user message
        assert text.endswith(
            f"Here is a reference solution to this problem:\n{context}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert context not in student_text
    for row, rollout in enumerate(rollouts(trainer.batch)):
        assert_ends_at_a_stop_or_the_budget(rollout, [2, 0], 8)
        assert trainer.batch["distill_mask"][row, len(rollout) - 1] == 1  # the last token, <|im_end|> included


def test_ogls_sd_on_gemma_stops_at_end_of_turn_with_one_bos(gemma, tmp_path):
    model, tokenizer = gemma

    def first_of_each_pair(completions, **kwargs):
        """Marks the first rollout of each group correct: every group is mixed, so the contextual teacher prompts
        (the group's rollouts as the teacher's context) are built from Gemma's own rollouts."""
        return [float(i % 2 == 0) for i in range(len(completions))]

    trainer = RecordingOGLSSD(
        model,
        reward_funcs=first_of_each_pair,
        args=tiny_args(
            OGLSSDConfig, tmp_path, num_generations=2, per_device_train_batch_size=2, max_completion_length=4
        ),
        train_dataset=capitals(),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = assert_finite_metrics(trainer)
    assert logged["steering/frac_mixed_groups"] == 1.0 and logged["steering/direction_norm"] > 0

    stops = stop_token_ids(model, tokenizer)
    assert stops == [1, 106]  # <eos> and <end_of_turn>
    for rollout in rollouts(trainer.batch):
        assert_ends_at_a_stop_or_the_budget(rollout, stops, 4)
    # anchor and contextual prompts: one BOS, at the start (the chat template writes it; tokenizing must not add one)
    assert len(trainer.teacher_prompts) == 2 + 2 * 1  # the anchor for both rollouts; 2 contexts for the failed one
    for ids in trainer.teacher_prompts:
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        assert tokenizer.decode(ids).endswith("<start_of_turn>model\n")


# ------------------------------------------------------------------------------------------------------------- CaMOPD
def test_camopd_two_teachers_on_smollm2(smollm2_dir, smollm2_other_eos_dir, tmp_path):
    model, tokenizer = load(smollm2_dir)
    with torch.no_grad():  # a student that differs from its teachers (both SmolLM2's weights): sharper logits
        model.model.norm.weight.mul_(1.2)
    sources = {
        "general": capitals(),
        "domain": capitals((("Germany", "Berlin"), ("Japan", "Tokyo"))),
    }
    trainer = RecordingCaMOPD(
        model,
        # the second copy's tokenizer says eos = <|endoftext|>: the same tokenizer (ids and special tokens), accepted
        teacher_model={"general": smollm2_dir, "domain": smollm2_other_eos_dir},
        args=tiny_args(CaMOPDConfig, tmp_path, per_device_train_batch_size=2, schedule="mixed", rho=0.5),
        train_dataset=sources,
        processing_class=tokenizer,
    )
    assert trainer.teachers["general"] is not trainer.teachers["domain"]
    trainer.train()
    logged = assert_finite_metrics(trainer)
    assert trainer.teachers_run == {"general", "domain"}
    # the generation pool held all four prompts: each teacher scored its own source's samples
    assert logged["gap/general"] > 0 and logged["gap/domain"] > 0
    assert logged["selection/kept_fraction"] == 0.5 and logged["loss"] > 0
    for row, rollout in enumerate(rollouts(trainer.batch)):
        assert_ends_at_a_stop_or_the_budget(rollout, [2, 0], 8)
        assert trainer.batch["completion_mask"][row].sum() == len(rollout)


def test_camopd_on_gemma_student_and_teacher_agree(gemma, gemma_dir, tmp_path):
    model, tokenizer = gemma
    trainer = RecordingCaMOPD(
        model,
        teacher_model=gemma_dir,
        args=tiny_args(CaMOPDConfig, tmp_path, per_device_train_batch_size=2, max_completion_length=4),
        train_dataset=capitals(),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = assert_finite_metrics(trainer)
    # teacher = the student's weights: the two read the very same tokens (one BOS, the same padding), so the
    # reverse KL over the 262k vocabulary is zero up to float error, on tokens that were scored
    assert abs(logged["loss"]) < 1e-4 and logged["entropy"] > 0
    for ids, mask in zip(trainer.batch["prompt_ids"], trainer.batch["prompt_mask"]):
        ids = ids[mask.bool()].tolist()
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    for rollout in rollouts(trainer.batch):
        assert_ends_at_a_stop_or_the_budget(rollout, [1, 106], 4)


def test_gemma_teacher_for_smollm2_student_fails_at_init_naming_both_tokenizers(
    smollm2_dir, gemma_dir, gemma, tmp_path
):
    model, tokenizer = load(smollm2_dir)
    trained = []

    class NeverTrains(CaMOPDTrainer):
        def training_step(self, *args, **kwargs):
            trained.append(True)
            return super().training_step(*args, **kwargs)

    args = tiny_args(CaMOPDConfig, tmp_path, per_device_train_batch_size=2)
    # as a path: its tokenizer is compared before its weights load
    with pytest.raises(ValueError, match="tokenizer of teacher 'teacher' differs") as error:
        NeverTrains(model, teacher_model=gemma_dir, args=args, train_dataset=capitals(), processing_class=tokenizer)
    message = str(error.value)
    assert f"student tokenizer '{smollm2_dir}' (49152 tokens)" in message
    assert f"teacher tokenizer '{gemma_dir}' (262144 tokens)" in message
    assert not trained
    # as a loaded model (no tokenizer to compare): the vocab_size check names both models and the student's tokenizer
    gemma_model, _ = gemma
    with pytest.raises(ValueError, match="vocab_size 49152 but the teacher model 'general'") as error:
        load_teacher(gemma_model, args, name="general", student=model, tokenizer=tokenizer)
    message = str(error.value)
    assert f"({gemma_dir}) has vocab_size 262144" in message
    assert f"student is '{smollm2_dir}' with the tokenizer '{smollm2_dir}' (49152 tokens)" in message
    # token diagnostics compared Gemma's first 49152 logits with SmolLM2's (KL 10.5, top-1 agreement 0) without a word
    with pytest.raises(ValueError, match=f"teacher tokenizer '{gemma_dir}' \\(262144 tokens\\)"):
        token_diagnostics(model, gemma_model, tokenizer, ["The capital of France is Paris."])


# ------------------------------------------------------------------------------------------------------- pool builder
def own_check(answer_text, reference):
    """Correct when the last line is `Answer: <reference>`: the verifier's rule, written out independently."""
    lines = answer_text.strip().splitlines()
    return bool(lines) and lines[-1].strip() == f"Answer: {reference}"


def test_build_pool_with_smollm2_verifies_its_real_answers(smollm2_dir, tmp_path):
    questions = {"10+10": 20, "12+30": 42, "7*6": 42, "2+3": 5}
    prompts = Dataset.from_list(
        [
            {"prompt": [*SUM_SHOT, {"role": "user", "content": f"What is {q}?"}], "answer": str(a)}
            for q, a in questions.items()
        ]
    )
    pool = build_pool(
        [smollm2_dir], prompts, str(tmp_path / "pool"), n=1, temperature=0.0, max_new_tokens=24, verifier="numeric",
        show_progress=False,
    )  # fmt: skip
    assert len(pool) == len(questions)
    verdicts = []
    for row in pool:
        text = row["completion"][0]["content"]
        assert not INVENTED_TURN.search(text) and "<|im_end|>" not in text
        verdicts.append(own_check(text, row["answer"]))
        assert row["correct"] == verdicts[-1], row
    # SmolLM2-135M gets some right and some wrong ("12 + 30 = 32\nAnswer: 32"): the verifier is not constant
    assert 0 < sum(verdicts) < len(verdicts)


def test_build_pool_cli_teacher_whose_eos_is_not_its_end_of_turn(smollm2_dir, smollm2_other_eos_dir, tmp_path):
    """The copy's tokenizer eos is `<|endoftext|>`; only its generation config's `<|im_end|>` ends a turn. Its answers
    must be SmolLM2's own, token for token (they ran on into invented "system"/"user" turns before)."""
    data = tmp_path / "prompts.jsonl"
    rows = capitals((("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin")))
    rows.to_json(str(data))
    status = cli_main(
        [
            "build-pool", "--teachers", f"name=smol,model={smollm2_dir}", f"name=other-eos,model={smollm2_other_eos_dir}",
            "--dataset_name", str(data), "--n", "1", "--temperature", "0", "--max_new_tokens", "24",
            "--output_dir", str(tmp_path / "pool"),
        ]
    )  # fmt: skip
    assert status == 0
    pool = load_pool(str(tmp_path / "pool"))
    answers = {(row["teacher"], row["prompt_id"]): row for row in pool}
    for prompt_id, city in enumerate(rows["answer"]):
        smol, other = answers["smol", prompt_id], answers["other-eos", prompt_id]
        assert other["completion"] == smol["completion"]
        assert other["completion_tokens"] == smol["completion_tokens"] < 24  # ended before the budget
        assert smol["correct"] == (smol["completion"][0]["content"].strip() == f"Answer: {city}")
    assert sum(row["correct"] for row in pool) >= 2  # "Answer: Paris", "Answer: Tokyo", ...


# ------------------------------------------------------------------------------------------------------------ RSE, ICE
QUESTIONS = ["What is the capital of France?", "Name a primary colour."]


def test_rse_and_local_judge_stop_at_the_end_of_turn(smollm2, smollm2_other_eos_dir):
    model, tokenizer = smollm2
    other_model, other_tokenizer = load(smollm2_other_eos_dir)
    result = rse(
        {"general": QUESTIONS}, model=model, tokenizer=tokenizer, reference_model=other_model,
        reference_tokenizer=other_tokenizer, max_new_tokens=32, show_progress=False,
    )  # fmt: skip
    # greedy, same weights: the references end where the responses do, so every pair is identical and scores 5
    for pair in result.pairs:
        assert pair["response"] == pair["reference"] and not INVENTED_TURN.search(pair["response"])
    assert result.rse == 5.0 and result.num_failed == 0

    # SmolLM2 as a local chat judge, through the copy whose tokenizer eos is not its end of turn: its replies are
    # SmolLM2's own (scored or counted as failed, never past the end of turn)
    judge = LocalChatJudge(other_model, other_tokenizer, max_new_tokens=32, max_retries=0, show_progress=False)
    reference_judge = LocalChatJudge(model, tokenizer, max_new_tokens=32, max_retries=0, show_progress=False)
    conversation = judge.similarity_conversation(QUESTIONS[0], "Paris.", "The capital of France is Paris.")
    [reply] = judge.complete([conversation])
    assert reply == reference_judge.complete([conversation])[0] and not INVENTED_TURN.search(reply)
    scored = rse(
        QUESTIONS[:1], responses=["Paris."], references=["The capital of France is Paris."], judge=judge,
        show_progress=False,
    )  # fmt: skip
    assert scored.num_failed == judge.num_failures
    assert scored.num_failed == 1 or 1 <= scored.rse <= 5


def test_rse_cli_auto_judge_scores_real_answers(smollm2_other_eos_dir, tmp_path):
    prompts, references = tmp_path / "prompts.jsonl", tmp_path / "references.jsonl"
    prompts.write_text("".join(json.dumps({"dataset": "general", "prompt": q}) + "\n" for q in QUESTIONS))
    references.write_text(
        json.dumps({"response": "The capital of France is Paris."}) + "\n" + json.dumps({"response": "Red."}) + "\n"
    )
    output = tmp_path / "rse.json"
    argv = [
        "evaluate", "rse", "--prompts", str(prompts), "--references", str(references), "--model",
        smollm2_other_eos_dir, "--max_new_tokens", "32", "--output", str(output), "--no_progress",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    result = json.loads(output.read_text())
    assert 1 <= result["rse"] <= 5 and result["num_failed"] == 0
    for pair in result["pairs"]:
        assert not INVENTED_TURN.search(pair["response"]) and 1 <= pair["score"]["overall"] <= 5


def test_ice_api_and_cli_answers_end_at_the_end_of_turn(smollm2, smollm2_other_eos_dir, tmp_path):
    model, tokenizer = smollm2
    result = ice("SmolLM@Hugging Face", model=model, tokenizer=tokenizer, max_prompts=3, max_new_tokens=24,
                 show_progress=False)  # fmt: skip
    assert result.num_prompts == 3 and result.num_judged == 3
    assert 0 <= result.strict <= result.loose <= 1
    assert math.isnan(result.hard) if result.num_hard == 0 else 0 <= result.hard <= 1
    for record in result.records:
        assert not INVENTED_TURN.search(record["response"])

    output = tmp_path / "ice.json"
    argv = [
        "evaluate", "ice", "--identity_name", "SmolLM", "--identity_organisation", "Hugging Face", "--model",
        smollm2_other_eos_dir, "--max_prompts", "3", "--max_new_tokens", "24", "--output", str(output),
        "--no_progress",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    written = json.loads(output.read_text())
    # the same prompts (same seed), answered by the copy that stops only at its generation config's end of turn
    assert [r["response"] for r in written["records"]] == [r["response"] for r in result.records]
    assert written["loose"] == result.loose and written["strict"] == result.strict
