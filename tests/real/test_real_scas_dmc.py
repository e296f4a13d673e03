"""SCAS and DMC on real checkpoints: what they score and train is, token for token, what `SFTTrainer` trains.

SmolLM2-135M-Instruct has the traits that break this: a ChatML template that injects a default system prompt when the
conversation has none, and `pad_token == eos_token == <|im_end|>` (the end of turn is also the pad). Gemma-3-270M adds
a BOS token in its template, an end of turn (`<end_of_turn>`) that is not its `eos_token`, and a 262k vocabulary.
"""

import json
import math

import pytest
import torch
from datasets import Dataset
from real_models import load
from trl import SFTConfig, SFTTrainer

import trl_distill.dmc.compatibility as compatibility_module
import trl_distill.scas.scoring as scoring_module
from trl_distill import (
    CandidateDatasets,
    DMCCallback,
    SCASConfig,
    SCASTrainer,
    compatibility,
    numeric_reward,
    rank_datasets,
    scas_scores,
)
from trl_distill.cli import main as cli_main
from trl_distill.core.engine import score_batches


SMOLLM2_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
QUESTIONS = [("What is 2+3?", "5"), ("What is 4*2?", "8")]
ANSWERS = {  # two teachers' answers to each question: a worked one and a terse one
    "worked": "{q} Adding it up step by step gives {a}. Answer: {a}",
    "terse": "Answer: {a}",
}


def user(question):
    return [{"role": "user", "content": question}]


def assistant(answer):
    return [{"role": "assistant", "content": answer}]


def pool_rows(form="messages"):
    """A long-form pool: two prompts, two correct answers each, as whole `messages` conversations or as
    conversational `prompt`/`completion`."""
    rows = []
    for prompt_id, (question, answer) in enumerate(QUESTIONS):
        for teacher, text in ANSWERS.items():
            completion = text.format(q=question, a=answer)
            row = {"prompt_id": prompt_id, "teacher": teacher, "correct": True}
            if form == "messages":
                row["messages"] = user(question) + assistant(completion)
            else:
                row.update(prompt=user(question), completion=assistant(completion))
            rows.append(row)
    return rows


def as_prompt_completion(rows):
    """The pool's answers as the prompt–completion rows `SFTTrainer` would be given for them."""
    out = []
    for row in rows:
        messages = row.get("messages") or row["prompt"] + row["completion"]
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def config(tmp_path, config_class=SCASConfig, **overrides):
    values = dict(
        report_to="none",
        max_length=128,
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-4,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )
    return config_class(str(tmp_path / config_class.__name__), **(values | overrides))


def sft_rows(model, tokenizer, rows, tmp_path):
    """`(input_ids, labels)` of every row as TRL's own `SFTTrainer` prepares it for training."""
    trainer = SFTTrainer(
        model, config(tmp_path, SFTConfig), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    return [(row["input_ids"], row["labels"]) for row in trainer.train_dataset]


def record_trained_batches(trainer):
    """The batches `trainer` computes its loss on (after the collator), recorded as they are trained."""
    batches, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        batches.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    return batches


def trained_rows(batches):
    """`(input_ids, labels)` of each trained row, its padding stripped."""
    rows = []
    for batch in batches:
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(mask.sum())
            assert mask[:n].all()  # right padding
            rows.append((ids[:n].tolist(), labels[:n].tolist()))
    return rows


@pytest.fixture
def scored(monkeypatch):
    """Every sequence the SCAS scorer and DMC's difficulty send to the scoring engine, per call."""
    calls = []

    def recording(model, features, *args, **kwargs):
        calls.append([{k: list(v) for k, v in f.items() if k in ("input_ids", "completion_mask")} for f in features])
        return score_batches(model, features, *args, **kwargs)

    monkeypatch.setattr(scoring_module, "score_batches", recording)
    monkeypatch.setattr(compatibility_module, "score_batches", recording)
    return calls


def prompt_of(feature):
    return feature["input_ids"][: feature["completion_mask"].index(1)]


def sft_prompt(labels, input_ids):
    """SFT's prompt: the tokens before its first trained label."""
    return input_ids[: next(i for i, label in enumerate(labels) if label != -100)]


def assert_end_of_turn_trained(tokenizer, input_ids, labels, end_of_turn):
    """The completion's last end-of-turn token is a trained label (and it is the completion's end of turn)."""
    last = max(i for i, t in enumerate(input_ids) if t == end_of_turn)
    assert labels[last] == end_of_turn, tokenizer.decode(input_ids)
    assert all(label == t for label, t in zip(labels[last:], input_ids[last:]))  # and what the template puts after it


# --- SCASTrainer on SmolLM2 ------------------------------------------------------------------------------------------
def test_scas_trains_a_messages_dataset_as_sft_does_with_the_system_prompt_and_the_end_of_turn(smollm2, tmp_path):
    model, tokenizer = smollm2
    rows = [{"messages": row["messages"]} for row in pool_rows("messages")[1:3]]  # a terse and a worked answer
    reference = sft_rows(model, tokenizer, rows, tmp_path)
    trainer = SCASTrainer(model, config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert trainer.scas_callback is None  # plain SFT data: no selection
    batches = record_trained_batches(trainer)
    trainer.train()
    trained = trained_rows(batches)
    assert sorted(trained) == sorted(reference)  # the same ids and labels (a `messages` row trains every token)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id == im_end
    assert batches[0]["input_ids"].shape[1] > min(len(ids) for ids, _ in trained)  # a padded row: pad == <|im_end|>
    for ids, labels in trained:
        assert tokenizer.decode(ids).startswith(SMOLLM2_SYSTEM)
        assert_end_of_turn_trained(tokenizer, ids, labels, im_end)
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_scas_trains_a_candidate_pool_as_sft_trains_the_chosen_answers(smollm2, tmp_path):
    """A pool of `messages` conversations: each candidate is the sequence SFT trains for its prompt–completion split
    (system prompt included), its completion mask is SFT's, and the final `<|im_end|>` is trained although the pad
    token is `<|im_end|>` too."""
    model, tokenizer = smollm2
    rows = pool_rows("messages")
    reference = sft_rows(model, tokenizer, as_prompt_completion(rows), tmp_path)
    trainer = SCASTrainer(model, config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    prepared = {row["_scas_pool_row"]: (row["input_ids"], row["labels"]) for row in trainer.train_dataset}
    assert [prepared[i] for i in range(len(rows))] == reference
    for i, feature in enumerate(trainer.scas_callback.features):  # scored on the trained sequence
        assert feature["input_ids"] == reference[i][0]
        assert prompt_of(feature) == sft_prompt(reference[i][1], reference[i][0])
    batches = record_trained_batches(trainer)
    trainer.train()
    [selection] = trainer.scas_callback.history
    assert sorted(trained_rows(batches)) == sorted(reference[i] for i in selection["selected_rows"])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, labels in trained_rows(batches):
        assert tokenizer.decode(ids).startswith(SMOLLM2_SYSTEM)
        assert_end_of_turn_trained(tokenizer, ids, labels, im_end)
    assert math.isfinite(selection["metrics"]["scas/learning_cost"])


# --- scas_scores / scas-score ----------------------------------------------------------------------------------------
def test_scas_scores_and_the_scas_score_command_score_the_prompt_sft_trains(smollm2, smollm2_dir, tmp_path, scored):
    model, tokenizer = smollm2
    rows = pool_rows("prompt_completion")
    reference = sft_rows(model, tokenizer, as_prompt_completion(rows), tmp_path)
    scores = scas_scores(model, tokenizer, Dataset.from_list(rows), batch_size=2)
    [features] = scored
    for feature, (ids, labels), row in zip(features, reference, rows):
        assert feature["input_ids"] == ids
        assert prompt_of(feature) == sft_prompt(labels, ids)  # what it is asked, as SFT and inference show it
        inference = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)["input_ids"]
        assert prompt_of(feature) == inference
        assert tokenizer.decode(prompt_of(feature)).startswith(SMOLLM2_SYSTEM)
        assert feature["completion_mask"] == [int(label != -100) for label in labels]
    assert all(math.isfinite(s["learning_cost"]) and s["d_A"] > 0 for s in scores)

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "scored"
    argv = ["scas-score", "--model", smollm2_dir, "--pool", str(pool), "--output_dir", str(out), "--batch_size", "2"]
    assert cli_main(argv) == 0
    assert scored[1] == features  # the command scores the same sequences
    written = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["learning_cost"] for r in written] == pytest.approx([s["learning_cost"] for s in scores], rel=1e-4)
    assert len((out / "selected.jsonl").read_text().splitlines()) == len(QUESTIONS)


# --- rank_datasets / dmc-rank / DMCCallback --------------------------------------------------------------------------
def candidate_datasets(form):
    """DMC's candidate datasets, `worked` and `terse` answers, as `messages` or conversational prompt/completion."""
    rows = pool_rows(form)
    return {
        teacher: [
            {k: v for k, v in row.items() if k not in ("prompt_id", "teacher")}
            for row in rows
            if row["teacher"] == teacher
        ]
        for teacher in ANSWERS
    }


DEV = [{"prompt": user(f"{q} End with 'Answer: <number>'."), "answer": a} for q, a in QUESTIONS[:1]]


def test_rank_datasets_and_the_dmc_rank_command_measure_the_sequence_sft_trains(
    smollm2, smollm2_dir, tmp_path, scored
):
    model, tokenizer = smollm2
    datasets = candidate_datasets("messages")
    settings = dict(probe_size=None, dev_size=1, max_new_tokens=16)
    table = rank_datasets(model, tokenizer, datasets, DEV, numeric_reward, **settings)
    assert len(scored) == len(datasets)
    for name, measured in zip(datasets, scored):
        sft = sft_rows(model, tokenizer, [{"messages": r["messages"]} for r in datasets[name]], tmp_path)
        assert [f["input_ids"] for f in measured] == [ids for ids, _ in sft]
        for feature in measured:
            assert tokenizer.decode(prompt_of(feature)).startswith(SMOLLM2_SYSTEM)
    for row in table:
        assert row["quality"] == 1.0 and 0.0 <= row["capability"] <= 1.0 and row["difficulty"] > 0
        assert row["dmc"] == pytest.approx(compatibility(1.0, row["difficulty"], row["capability"]))

    args = ["dmc-rank", "--model_name_or_path", smollm2_dir, "--verifier", "numeric", "--datasets"]
    for name, rows in datasets.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        args.append(f"{name}={path}")
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(row) + "\n" for row in DEV))
    args += ["--dev_dataset", str(dev), "--probe_size", "null", "--dev_size", "1", "--max_new_tokens", "16"]
    args += ["--output_json", str(tmp_path / "ranking.json")]
    assert cli_main(args) == 0
    assert scored[2:] == scored[:2]  # the command measures the same sequences
    ranked = json.loads((tmp_path / "ranking.json").read_text())
    assert [r["dataset"] for r in ranked] == [r["dataset"] for r in table]
    assert [r["dmc"] for r in ranked] == pytest.approx([r["dmc"] for r in table], rel=1e-4)


def test_dmc_callback_measures_the_sequence_sft_trains_cut_to_max_length(smollm2, tmp_path, scored):
    """SFT with `max_length` that cuts the worked answers (not the terse ones): the difficulty `L` is measured on the
    tokens SFT trains, cut as it cuts them."""
    model, tokenizer = smollm2
    datasets = candidate_datasets("pc")
    length = {
        name: [len(tokenizer.apply_chat_template(r["prompt"] + r["completion"])["input_ids"]) for r in rows]
        for name, rows in datasets.items()
    }
    max_length = max(length["terse"]) + 4
    assert min(length["worked"]) > max_length
    candidates = CandidateDatasets({name: Dataset.from_list(rows) for name, rows in datasets.items()})
    trainer = SFTTrainer(
        model,
        config(tmp_path, SFTConfig, max_length=max_length),
        train_dataset=candidates.train_dataset,
        processing_class=tokenizer,
    )
    callback = DMCCallback(
        candidates,
        DEV,
        numeric_reward,
        trainer=trainer,
        strategy="top_dataset",
        probe_size=None,
        dev_size=1,
        max_new_tokens=16,
    )
    trainer.add_callback(callback)
    trainer.train()
    trained = list(zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]))
    measured = [f for call in scored for f in call]
    assert [f["input_ids"] for f in measured] == [ids for ids, _ in trained]
    assert [f["completion_mask"] for f in measured] == [[int(x != -100) for x in labels] for _, labels in trained]
    assert [len(ids) for ids, _ in trained] == [min(n, max_length) for n in length["worked"] + length["terse"]]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for feature, (ids, labels) in zip(measured, trained):
        assert tokenizer.decode(prompt_of(feature)).startswith(SMOLLM2_SYSTEM)
        if len(ids) < max_length:
            assert_end_of_turn_trained(tokenizer, ids, labels, im_end)
    [record] = callback.history
    metrics = record["metrics"]
    assert 0.0 <= metrics["dmc/capability"] <= 1.0
    assert all(math.isfinite(metrics[f"dmc/{name}/dmc"]) for name in candidates.names)
    assert sum(metrics[f"dmc/{name}/weight"] for name in candidates.names) == 1.0


# --- a LoRA student, save and resume ---------------------------------------------------------------------------------
def test_a_lora_student_trains_only_its_adapters(smollm2, tmp_path):
    from peft import LoraConfig

    model, tokenizer = smollm2
    trainer = SCASTrainer(
        model,
        config(tmp_path, learning_rate=1e-3),
        train_dataset=Dataset.from_list(pool_rows()),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(".q_proj." in name for name in trainable) and any(".v_proj." in name for name in trainable)
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed <= trainable  # the base weights, the tied embedding/head among them, did not move
    assert {name for name in trainable if "lora_B" in name} <= changed  # B starts at zero: one step moves it all
    assert math.isfinite(trainer.scas_callback.history[0]["metrics"]["scas/learning_cost"])


def test_save_and_resume_restores_the_selection(smollm2, smollm2_dir, tmp_path):
    """Two steps (one epoch: one answer per prompt, batch 1), a checkpoint after each; resumed from the first, the
    selection is read from the checkpoint (not scored again) and the second step trains the same answer."""
    model, tokenizer = smollm2
    rows = Dataset.from_list(pool_rows())
    settings = dict(per_device_train_batch_size=1, max_steps=2, save_strategy="steps", save_steps=1, optim="sgd")
    trainer = SCASTrainer(model, config(tmp_path, **settings), train_dataset=rows, processing_class=tokenizer)
    first = record_trained_batches(trainer)
    trainer.train()
    [selection] = trainer.scas_callback.history
    assert len(first) == 2

    resumed_model, tokenizer = load(smollm2_dir)
    resumed = SCASTrainer(resumed_model, config(tmp_path, **settings), train_dataset=rows, processing_class=tokenizer)
    second = record_trained_batches(resumed)
    calls = []
    score = resumed.scas_callback.score
    resumed.scas_callback.score = lambda model: calls.append(1) or score(model)
    resumed.train(resume_from_checkpoint=str(tmp_path / "SCASConfig" / "checkpoint-1"))
    assert calls == []  # restored, not recomputed
    assert resumed.scas_callback.history == [selection]
    assert resumed.scas_callback.selected_rows == trainer.scas_callback.selected_rows
    assert resumed.scas_callback.sampler.selection == trainer.scas_callback.sampler.selection
    assert len(second) == 1 and torch.equal(second[0]["input_ids"], first[1]["input_ids"])
    for name, p in resumed.model.named_parameters():
        assert torch.allclose(p, dict(trainer.model.named_parameters())[name], atol=1e-6), name


# --- Gemma-3-270M: BOS, <end_of_turn> != eos, 262k vocabulary --------------------------------------------------------
def model_nll(model, input_ids, labels):
    """`(Σ NLL, count)` of the trained tokens of one sequence, from the model's own full logits."""
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    trained = torch.tensor(labels[1:]) != -100
    return -logprobs[trained].sum().item(), int(trained.sum())


def test_gemma_scorers_score_the_sequence_sft_trains_with_one_bos(gemma, tmp_path, scored):
    """`scas_scores` and DMC's ranking on Gemma-3: the sequences SFT trains (one BOS, `<end_of_turn>` trained, not
    `<eos>`), finite scores independent of the padding side, and `L` equal to the NLL of the model's own logits over
    the 262k vocabulary (the scorers never build those logits)."""
    model, tokenizer = gemma
    rows = pool_rows("prompt_completion")
    reference = sft_rows(model, tokenizer, as_prompt_completion(rows), tmp_path)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    for ids, labels in reference:
        assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
        assert tokenizer.eos_token_id not in ids
        assert_end_of_turn_trained(tokenizer, ids, labels, end_of_turn)
    scores = scas_scores(model, tokenizer, Dataset.from_list(rows), batch_size=4)
    assert [f["input_ids"] for f in scored[0]] == [ids for ids, _ in reference]
    assert all(math.isfinite(s[k]) for s in scores for k in ("learning_cost", "d_A", "d_Q", "AA", "AQ"))
    left = scas_scores(model, tokenizer, Dataset.from_list(rows), batch_size=4, padding_side="left")
    assert [s["learning_cost"] for s in left] == pytest.approx([s["learning_cost"] for s in scores], rel=1e-4)

    datasets = candidate_datasets("pc")  # `worked` (pool rows 0, 2) and `terse` (rows 1, 3)
    table = rank_datasets(
        model, tokenizer, datasets, DEV, numeric_reward, probe_size=None, dev_size=1, max_new_tokens=8
    )
    assert [f["input_ids"] for call in scored[2:] for f in call] == [
        ids for ids, _ in reference[0::2] + reference[1::2]
    ]
    for row in table:
        part = reference[0::2] if row["dataset"] == "worked" else reference[1::2]
        total, count = map(sum, zip(*(model_nll(model, ids, labels) for ids, labels in part)))
        assert row["difficulty"] == pytest.approx(total / count, rel=1e-4)
        assert 0.0 <= row["capability"] <= 1.0
        assert 0 < row["dmc"] == pytest.approx(compatibility(1.0, row["difficulty"], row["capability"]))


def test_gemma_scas_trains_one_step_on_its_end_of_turn(gemma, tmp_path):
    model, tokenizer = gemma
    trainer = SCASTrainer(
        model,
        config(tmp_path, max_length=64, optim="sgd"),
        train_dataset=Dataset.from_list(pool_rows()),
        processing_class=tokenizer,
    )
    batches = record_trained_batches(trainer)
    trainer.train()
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    for ids, labels in trained_rows(batches):
        assert ids.count(tokenizer.bos_token_id) == 1
        assert_end_of_turn_trained(tokenizer, ids, labels, end_of_turn)
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
