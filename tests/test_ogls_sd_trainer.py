"""OGLSSDTrainer on the tiny world: the loss against brute-force OPSD and OGLS-SD (v2 and v1 forms), its invariants,
and the errors bad inputs get."""

import copy
import math

import pytest
import torch
from datasets import Dataset
from trl import DistillationTrainer

from trl_distill.lab.world.models import SIZES, tiny_model
from trl_distill.ogls_sd.ogls_sd_config import OPSD_GUARD_TEACHER_PROMPT_TEMPLATE, OPSD_SETTINGS, OGLSSDConfig
from trl_distill.ogls_sd.ogls_sd_trainer import OGLSSDTrainer, teacher_prompt


TEMPLATE = "{prompt}\n\nHere is a reference solution to this problem:\n{privileged_context}"


def parity_reward(completions, **kwargs):
    """1.0 when the character codes of the completion sum to an even number: a random model passes about half the time."""
    return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]


@pytest.fixture(scope="module")
def toy(arithmetic):
    """Arithmetic rows whose privileged context is the reference solution (the row's completion text)."""
    return arithmetic["train"].map(lambda row: {"privileged_context": row["completion"][0]["content"]})


def make_trainer(
    tokenizer,
    dataset,
    tmp_path,
    model=None,
    reward=parity_reward,
    peft_config=None,
    opsd=False,
    trainer_class=OGLSSDTrainer,
    **overrides,
):
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=0,
    )
    settings.update(overrides)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    model = tiny_model(tokenizer, "xs", seed=0) if model is None else model
    return trainer_class(
        model,
        reward_funcs=reward,
        args=OGLSSDConfig.opsd(**settings) if opsd else OGLSSDConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def brute_force_loss(trainer, rows, output, alpha, beta=0.5, template=TEMPLATE, entry_clip=math.inf):
    """OPSD / pooled OGLS-SD with the privileged anchor on every rollout (v1 reading) from scratch, in float64, one
    unpadded sequence at a time, explicit vocabulary sums."""
    tok, student, teacher = trainer.processing_class, trainer.model, trainer.teacher_model
    G = trainer.args.num_generations
    completions, teacher_logits, student_logits = [], [], []
    for row, ids, mask in zip(rows, output["completion_ids"], output["completion_mask"]):
        completion = ids[mask.bool()].tolist()
        completions.append(tok.decode(completion, skip_special_tokens=True))
        question = row["prompt"][0]["content"]
        teacher_prompt = [
            {"role": "user", "content": template.format(prompt=question, privileged_context=row["privileged_context"])}
        ]
        for model, prompt, out in (
            (teacher, teacher_prompt, teacher_logits),
            (student, row["prompt"], student_logits),
        ):
            prompt_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
            full = torch.tensor([list(prompt_ids) + completion])
            with torch.no_grad():
                logits = model(input_ids=full).logits[0].double()
            out.append(logits[len(prompt_ids) - 1 : full.shape[1] - 1])  # the positions predicting the completion
    success = [r >= 1.0 for r in parity_reward([[{"content": c}] for c in completions])]
    total, count = 0.0, 0
    for g in range(len(rows) // G):
        members = range(g * G, (g + 1) * G)
        good = [teacher_logits[i].mean(0) for i in members if success[i]]
        bad = [teacher_logits[i].mean(0) for i in members if not success[i]]
        d = sum(good) / len(good) - sum(bad) / len(bad) if good and bad else 0.0
        for i in members:
            zt, zs = teacher_logits[i] + alpha * d, student_logits[i]
            pt, ps = zt.softmax(-1), zs.softmax(-1)
            m = beta * pt + (1 - beta) * ps
            terms = beta * pt * (pt / m).log() + (1 - beta) * ps * (ps / m).log()  # per vocabulary entry
            jsd = terms.clamp(max=entry_clip).sum(-1)
            total, count = total + jsd.sum().item(), count + jsd.numel()
    return total / count, success


def forward_logits(model, prompt, completion, tok):
    """float64 logits of `model` at the positions predicting `completion` after the chat-formatted `prompt`."""
    prompt_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = torch.tensor([list(prompt_ids) + completion])
    with torch.no_grad():
        logits = model(input_ids=full).logits[0].double()
    return logits[len(prompt_ids) - 1 : full.shape[1] - 1]


def brute_force_v2(trainer, rows, output, alpha, clip, max_tokens, tail_tokens, tail_weight, quantile=0.5):
    """OGLS-SD v2 from scratch (float64, explicit vocabulary): the unprivileged anchor steered by the contextual
    direction on incorrect rollouts, clipped forward KL on their first `max_tokens` tokens, and the NLL of the last
    `tail_tokens` tokens of correct rollouts no longer than the `quantile` of their group's correct lengths."""
    tok, student, teacher = trainer.processing_class, trainer.model, trainer.teacher_model
    G = trainer.args.num_generations
    completions, texts = [], []
    for ids, mask in zip(output["completion_ids"], output["completion_mask"]):
        completions.append(ids[mask.bool()].tolist())
        texts.append(tok.decode(completions[-1], skip_special_tokens=True))
    success = [r >= 1.0 for r in parity_reward([[{"content": c}] for c in texts])]
    div_total, nll_total, count, clipped, matched, tails = 0.0, 0.0, 0, 0, 0, 0
    for g in range(len(rows) // G):
        members = list(range(g * G, (g + 1) * G))
        correct_lengths = sorted(len(completions[i]) for i in members if success[i])
        mixed = 0 < len(correct_lengths) < G
        for i in members:
            row, y = rows[i], completions[i]
            student_logits = forward_logits(student, row["prompt"], y, tok)
            if success[i]:  # positive tail: NLL of the last tail_tokens tokens of a short correct rollout
                if len(y) <= torch.quantile(torch.tensor(correct_lengths, dtype=torch.float64), quantile):
                    log_p = student_logits.log_softmax(-1)[torch.arange(len(y)), torch.tensor(y)]
                    nll_total -= log_p[-tail_tokens:].sum().item()
                    count += min(tail_tokens, len(y))
                    tails += 1
                continue
            target = forward_logits(teacher, row["prompt"], y, tok)  # the anchor: the teacher shown x alone
            if mixed:
                question = row["prompt"][0]["content"]
                induced = {
                    j: forward_logits(
                        teacher,
                        [{"role": "user", "content": TEMPLATE.format(prompt=question, privileged_context=texts[j])}],
                        y,
                        tok,
                    )
                    for j in members
                }
                good = [induced[j] for j in members if success[j]]
                bad = [induced[j] for j in members if not success[j]]
                target = target + alpha * (sum(good) / len(good) - sum(bad) / len(bad))
            log_pt, log_ps = target.log_softmax(-1), student_logits.log_softmax(-1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)[:max_tokens]  # forward KL(teacher ‖ student)
            clipped += int((kl > clip).sum())
            div_total += kl.clamp(max=clip).sum().item()
            count, matched = count + kl.numel(), matched + kl.numel()
    return (div_total + tail_weight * nll_total) / count, success, (clipped, matched), tails


def perturbed(trainer, scale=0.05):
    with torch.no_grad():  # the student moves away from its initial copy, so student and teacher weights differ
        for p in trainer.model.parameters():
            p.add_(scale * torch.randn_like(p))
    return trainer


ROWS = (0, 0, 0, 0, 1, 1, 1, 1)


def test_opsd_named_configuration_equals_brute_force_opsd(tokenizer, toy, tmp_path):
    trainer = perturbed(make_trainer(tokenizer, toy, tmp_path, opsd=True, per_device_train_batch_size=8))
    for key, value in OPSD_SETTINGS.items():
        assert getattr(trainer.args, key) == value, key
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    expected, _ = brute_force_loss(trainer, rows, output, alpha=0.0)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["hidden-states", "explicit-logits"])
def test_opsd_as_released_equals_brute_force_with_its_clip_and_guard(tokenizer, toy, tmp_path, explicit):
    # OPSD's released loss: each vocabulary entry's JSD term clamped at 0.05 before the sum, the guard template
    trainer = make_trainer(
        tokenizer, toy, tmp_path, opsd=True, jsd_token_clip=0.05, jsd_clip_scope="vocabulary",
        teacher_prompt_template=OPSD_GUARD_TEACHER_PROMPT_TEMPLATE, per_device_train_batch_size=8,
    )  # fmt: skip
    trainer = perturbed(trainer, scale=0.3)  # far enough from the teacher that some entries pass the clip
    trainer.explicit_logits = explicit
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    expected, _ = brute_force_loss(
        trainer, rows, output, 0.0, template=OPSD_GUARD_TEACHER_PROMPT_TEMPLATE, entry_clip=0.05
    )
    unclipped, _ = brute_force_loss(trainer, rows, output, 0.0, template=OPSD_GUARD_TEACHER_PROMPT_TEMPLATE)
    assert expected < unclipped  # the clip bites
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_privileged_pooled_steering_on_all_rollouts_equals_brute_force(tokenizer, toy, tmp_path):
    # the v1 reading kept as options: OPSD's settings with a pooled direction of strength 0.7
    trainer = perturbed(
        make_trainer(tokenizer, toy, tmp_path, opsd=True, steering_alpha=0.7, per_device_train_batch_size=8)
    )
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    expected, success = brute_force_loss(trainer, rows, output, alpha=0.7)
    assert 0 < sum(success) < len(success)  # the parity verifier gives both outcomes, so alpha=0.7 really steers
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_v2_default_equals_brute_force(tokenizer, toy, tmp_path):
    settings = dict(jsd_token_clip=0.11, max_distill_tokens=5, positive_tail_tokens=3, positive_tail_weight=0.5)
    trainer = perturbed(
        make_trainer(tokenizer, toy, tmp_path, steering_alpha=0.7, per_device_train_batch_size=8, **settings)
    )
    args = trainer.args
    assert (args.steering, args.steering_anchor, args.steer_rollouts, args.beta) == (
        "contextual",
        "unprivileged",
        "incorrect",
        0.0,
    )
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    expected, success, clipped, tails = brute_force_v2(trainer, rows, output, 0.7, 0.11, 5, 3, 0.5)
    assert 0 < sum(success) < len(success) and tails > 0  # steering, distillation and the tail all take part
    assert 0 < clipped[0] < clipped[1]  # the clip bites on some distribution-matched tokens, not all
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_alpha_zero_with_the_unprivileged_anchor_is_not_opsd(tokenizer, toy, tmp_path):
    trainer = perturbed(
        make_trainer(
            tokenizer, toy, tmp_path, steering_alpha=0.0, steer_rollouts="all", positive_tail_weight=0.0,
            jsd_token_clip=None, max_distill_tokens=None, beta=0.5, per_device_train_batch_size=8,
        )
    )  # fmt: skip
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, output)
    opsd, _ = brute_force_loss(trainer, rows, output, alpha=0.0)
    # the teacher shown x alone is another target than the privileged one: off by far more than the 1e-4 to which
    # the OPSD configuration matches the brute force
    assert loss.item() != pytest.approx(opsd, rel=1e-3)


def scored(trainer, rows, seed=3):
    """The generation batch before scoring, so one set of rollouts can be scored and steered several ways."""
    torch.manual_seed(seed)
    return DistillationTrainer._generate_and_score_completions(trainer, rows)


def steer(trainer, rows, base):
    """Scores and steers a generation batch from `scored` (without touching it)."""
    return {**base, **trainer._score_and_steer(rows, dict(base))}


def loss_and_grads(trainer, output):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, output)
    loss.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in trainer.model.parameters()]
    return loss.detach(), grads


def test_correct_rollouts_get_no_distribution_matching(tokenizer, toy, tmp_path):
    trainer = perturbed(make_trainer(tokenizer, toy, tmp_path, per_device_train_batch_size=8))
    rows = [toy[i] for i in ROWS]
    base = scored(trainer, rows)
    output = steer(trainer, rows, base)
    correct = torch.tensor(parity_reward([[{"content": t}] for t in trainer.processing_class.batch_decode(
        [i[m.bool()].tolist() for i, m in zip(base["completion_ids"], base["completion_mask"])],
        skip_special_tokens=True)]))  # fmt: skip
    correct = correct == 1.0
    assert correct.any() and (~correct).any()
    assert output["distill_mask"][correct].sum() == 0 and output["distill_mask"][~correct].sum() > 0
    loss, _ = loss_and_grads(trainer, output)
    changed = dict(output, teacher_hidden=output["teacher_hidden"].clone())
    changed["teacher_hidden"][correct] += torch.randn_like(changed["teacher_hidden"][correct])
    assert torch.equal(loss_and_grads(trainer, changed)[0], loss)  # the correct rows' teacher is never read
    changed["teacher_hidden"][~correct] += torch.randn_like(changed["teacher_hidden"][~correct])
    assert not torch.equal(loss_and_grads(trainer, changed)[0], loss)
    trainer.args.steer_rollouts = "all"  # the option: every rollout is matched
    assert torch.equal(steer(trainer, rows, base)["distill_mask"], base["completion_mask"])


def test_tokens_past_the_limit_get_no_gradient_from_the_divergence(tokenizer, toy, tmp_path):
    trainer = perturbed(
        make_trainer(
            tokenizer, toy, tmp_path, max_distill_tokens=3, positive_tail_weight=0.0, steer_rollouts="all",
            per_device_train_batch_size=8,
        )
    )  # fmt: skip
    rows = [toy[i] for i in ROWS]
    output = steer(trainer, rows, scored(trainer, rows))
    assert output["completion_mask"][:, 3:].sum() > 0  # there are tokens past the limit
    loss, grads = loss_and_grads(trainer, output)
    changed = dict(output, teacher_hidden=output["teacher_hidden"].clone())
    changed["teacher_hidden"][:, 3:] += 10 * torch.randn_like(changed["teacher_hidden"][:, 3:])
    loss2, grads2 = loss_and_grads(trainer, changed)
    assert torch.equal(loss, loss2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
    changed["teacher_hidden"][:, :3] += torch.randn_like(changed["teacher_hidden"][:, :3])
    assert not torch.equal(loss_and_grads(trainer, changed)[0], loss)


def test_the_clip_bounds_each_token_and_stops_its_gradient(tokenizer, toy, tmp_path):
    clip = 1e-6  # below every token's divergence here, so every distribution-matched token is clipped
    trainer = perturbed(
        make_trainer(
            tokenizer, toy, tmp_path, jsd_token_clip=clip, positive_tail_weight=0.0, steer_rollouts="all",
            per_device_train_batch_size=8,
        )
    )  # fmt: skip
    rows = [toy[i] for i in ROWS]
    output = steer(trainer, rows, scored(trainer, rows))
    loss, grads = loss_and_grads(trainer, output)
    assert loss.item() == pytest.approx(clip, rel=1e-5)  # the mean of terms each equal to the clip
    assert all(g.abs().max() == 0 for g in grads)
    trainer.args.jsd_token_clip = None  # unclipped, the same rollouts do move the student
    assert loss_and_grads(trainer, output)[0] > 1e3 * clip


def test_context_slots_share_batched_teacher_forwards_equal_to_one_forward_per_pair(tokenizer, toy, tmp_path):
    """The contextual direction's teacher reads every (context slot, rollout) pair in left-padded batches of
    `per_device_train_batch_size`; its steered target equals one unpadded forward per pair, slot after slot (fp32)."""
    trainer = perturbed(make_trainer(tokenizer, toy, tmp_path, steering_alpha=0.7, per_device_train_batch_size=8))
    rows = [toy[i] for i in ROWS]
    base = scored(trainer, rows)
    teacher, tok, G = trainer.teacher_model, trainer.processing_class, trainer.args.num_generations
    batch_sizes = []
    hook = teacher.base_model.register_forward_hook(lambda module, args, kwargs, out: batch_sizes.append(
        kwargs["input_ids"].size(0)), with_kwargs=True)  # fmt: skip
    try:
        target = trainer._teacher_head().logits(steer(trainer, rows, base)["teacher_hidden"])
    finally:
        hook.remove()
    completions = [ids[mask.bool()].tolist() for ids, mask in zip(base["completion_ids"], base["completion_mask"])]
    texts = tok.batch_decode(completions, skip_special_tokens=True)
    success = [r == 1.0 for r in parity_reward([[{"content": t}] for t in texts])]
    steered, context_lengths = [], set()
    for i, (row, y) in enumerate(zip(rows, completions)):
        members = range(i // G * G, i // G * G + G)
        if success[i] or all(success[j] for j in members):  # a correct rollout, or a group without both outcomes
            continue
        steered.append(i)
        induced = {}
        for j in members:  # the sequential computation: slot j's teacher on rollout i, alone, unpadded
            context = TEMPLATE.format(prompt=row["prompt"][0]["content"], privileged_context=texts[j])
            prompt = [{"role": "user", "content": context}]
            context_lengths.add(len(tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)))
            induced[j] = forward_logits(teacher, prompt, y, tok)
        good = [induced[j] for j in members if success[j]]
        bad = [induced[j] for j in members if not success[j]]
        expected = forward_logits(teacher, row["prompt"], y, tok) + 0.7 * (sum(good) / len(good) - sum(bad) / len(bad))
        torch.testing.assert_close(target[i, : len(y)].double(), expected, atol=1e-5, rtol=1e-5)
    assert len(steered) >= 2 and len(context_lengths) > 1  # several slots of different lengths share a padded batch
    # the anchor's forward, then the G·R pairs in ⌈G·R / 8⌉ forwards (slot by slot it would be G·⌈R / 8⌉)
    pairs = G * len(steered)
    assert batch_sizes == [8] + [min(8, pairs - start) for start in range(0, pairs, 8)]


@pytest.mark.parametrize("steering", ["contextual", "pooled"])
def test_hidden_state_and_explicit_logit_paths_agree(tokenizer, toy, tmp_path, steering):
    trainer = perturbed(
        make_trainer(
            tokenizer, toy, tmp_path, steering=steering, normalize_direction=True, jsd_token_clip=0.3,
            positive_tail_tokens=3, per_device_train_batch_size=8,
        )
    )  # fmt: skip
    rows = [toy[i] for i in ROWS]
    base = scored(trainer, rows)
    via_hidden = steer(trainer, rows, base)
    loss_hidden, grads_hidden = loss_and_grads(trainer, via_hidden)
    trainer.explicit_logits = True  # the softcapping fallback, forced on a linear head
    via_logits = steer(trainer, rows, base)
    assert "teacher_logits" in via_logits and "teacher_hidden" not in via_logits
    loss_logits, grads_logits = loss_and_grads(trainer, via_logits)
    assert loss_hidden.item() == pytest.approx(loss_logits.item(), rel=1e-4, abs=1e-6)
    for a, b in zip(grads_hidden, grads_logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize(
    "reward, error, message",
    [
        (lambda completions, **kw: [1.0], ValueError, r"returned 1 values for 8 completions"),
        (lambda completions, **kw: [math.nan] * len(completions), ValueError, r"returned nan for completion 0"),
        (lambda completions, **kw: [math.inf] * len(completions), ValueError, r"returned inf for completion 0"),
        (lambda completions, **kw: [None] * len(completions), ValueError, r"returned None for all 8 completions"),
        (lambda completions, **kw: ["1.0"] * len(completions), TypeError, r"'<lambda>' returned str '1.0'"),
    ],
    ids=["wrong-count", "nan", "inf", "all-none", "strings"],
)
def test_bad_reward_functions_get_clear_errors(tokenizer, toy, tmp_path, reward, error, message):
    trainer = make_trainer(tokenizer, toy, tmp_path, reward=reward, per_device_train_batch_size=8)
    rows = [toy[i] for i in ROWS]
    with pytest.raises(error, match=message):
        trainer._generate_and_score_completions(rows)


def test_string_rewards_name_the_function(tokenizer, toy, tmp_path):
    def judge_by_text(completions, **kwargs):
        return ["correct" for _ in completions]

    trainer = make_trainer(tokenizer, toy, tmp_path, reward=judge_by_text, per_device_train_batch_size=8)
    with pytest.raises(TypeError, match=r"'judge_by_text' returned str 'correct' for completion 0"):
        trainer._generate_and_score_completions([toy[i] for i in ROWS])


def test_missing_privileged_context_is_rejected_before_training(tokenizer, arithmetic, tmp_path):
    with pytest.raises(ValueError, match=r"no `privileged_context` column"):
        make_trainer(tokenizer, arithmetic["train"], tmp_path, opsd=True)
    # the v2 anchor never reads it, so a dataset without the column trains
    assert make_trainer(tokenizer, arithmetic["train"], tmp_path).args.steering_anchor == "unprivileged"


def test_none_privileged_context_is_rejected_not_shown_as_text(tokenizer, toy, tmp_path):
    rows = toy.map(
        lambda row, i: {"privileged_context": None if i == 5 else row["privileged_context"]}, with_indices=True
    )
    with pytest.raises(ValueError, match=r"1 rows whose `privileged_context` is None \(first: row 5\)"):
        make_trainer(tokenizer, rows, tmp_path, opsd=True)
    with pytest.raises(ValueError, match=r"shown the text 'None'"):
        teacher_prompt("Compute 1+2.", None)


def test_empty_train_dataset_is_rejected(tokenizer, tmp_path):
    empty = Dataset.from_dict({"prompt": [], "privileged_context": []})
    with pytest.raises(ValueError, match=r"train_dataset is empty"):
        make_trainer(tokenizer, empty, tmp_path, opsd=True)


def test_config_rejects_groups_split_across_micro_batches_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of num_generations=3"):
        OGLSSDConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=3, use_cpu=True)
    with pytest.raises(ValueError, match=r"\{privileged_context\}"):
        OGLSSDConfig(output_dir=str(tmp_path), teacher_prompt_template="{prompt}", use_cpu=True)
    for field, value in (
        ("steering_anchor", "teacher"),
        ("steer_rollouts", "correct"),
        ("jsd_token_clip", 0.0),
        ("max_distill_tokens", 0),
        ("short_rollout_quantile", 1.5),
    ):
        with pytest.raises(ValueError, match=field):
            OGLSSDConfig(output_dir=str(tmp_path), use_cpu=True, **{field: value})


def test_softcapped_model_falls_back_to_explicit_logits(tokenizer, toy, tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    # the lab's xs sizes; softcapping small enough that tanh bends the logits: hidden-space steering is not exact
    tokens = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    config = Gemma2Config(**SIZES["xs"], **tokens, eos_token_id=tokenizer.eos_token_id, num_key_value_heads=2,
                          head_dim=16, final_logit_softcapping=0.3, tie_word_embeddings=False)  # fmt: skip
    with pytest.warns(UserWarning, match="softcapping"):
        trainer = make_trainer(
            tokenizer,
            toy,
            tmp_path,
            model=Gemma2ForCausalLM(config),
            opsd=True,
            steering_alpha=0.7,
            per_device_train_batch_size=8,
        )
    rows = [toy[i] for i in ROWS]
    torch.manual_seed(3)
    output = trainer._generate_and_score_completions(rows)
    assert "teacher_logits" in output and "teacher_hidden" not in output
    loss = trainer.compute_loss(trainer.model, output)
    expected, success = brute_force_loss(trainer, rows, output, alpha=0.7)
    assert 0 < sum(success) < len(success)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_dataset_smaller_than_one_generation_batch_is_rejected(tokenizer, toy, tmp_path):
    # 8 rollouts per device × 2 accumulation steps / 4 generations = 4 prompts per generation batch; 3 give zero steps
    with pytest.raises(ValueError, match=r"train_dataset has 3 prompts, but one generation batch needs 4 distinct"):
        make_trainer(
            tokenizer, toy.select(range(3)), tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2
        )
    assert make_trainer(tokenizer, toy.select(range(4)), tmp_path, per_device_train_batch_size=8,
                        gradient_accumulation_steps=2).args.num_generations == 4  # fmt: skip


def test_rollouts_that_all_fail_warn_once_that_training_is_a_no_op(tokenizer, toy, tmp_path, caplog):
    def always_wrong(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = make_trainer(tokenizer, toy, tmp_path, reward=always_wrong, max_steps=2)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with caplog.at_level("WARNING", logger="trl_distill.ogls_sd.ogls_sd_trainer"):
        trainer.train()
    # no mixed group: the target is the initial model, which is the student, so nothing moves
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    warnings = [r.getMessage() for r in caplog.records if "training is a no-op" in r.getMessage()]
    assert len(warnings) == 1
    assert "num_generations=4" in warnings[0] and "easier dataset" in warnings[0] and "softer reward" in warnings[0]


def test_a_verifier_name_is_a_reward_function_and_an_unknown_one_is_refused(tokenizer, toy, tmp_path):
    trainer = make_trainer(tokenizer, toy, tmp_path, reward=["numeric", "exact_match"])
    assert trainer.reward_func_names == ["numeric_reward", "exact_match_reward"]  # as TRL logs them
    assert trainer.reward_funcs[0](completions=["Answer: 2.0"], answer=["2"]) == [1.0]  # the numeric verifier
    with pytest.raises(ValueError, match=r"Unknown verifier 'numerik'"):
        make_trainer(tokenizer, toy, tmp_path, reward="numerik")
    with pytest.raises(TypeError, match=r"must be callables or verifier names, got int 3"):
        make_trainer(tokenizer, toy, tmp_path, reward=3)


def test_trl_rewards_judge_rollouts_unchanged(tokenizer, toy, tmp_path):
    from trl.rewards import think_format_reward

    def mentions_answer(completions, answer, **kwargs):  # a user's GRPO reward reading the `answer` column
        return [float(a in c[0]["content"]) for c, a in zip(completions, answer)]

    trainer = make_trainer(tokenizer, toy, tmp_path, reward=[think_format_reward, mentions_answer])
    rows = [{**toy[0], "answer": "14"}] * 3
    prompts = [row["prompt"] for row in rows]
    texts = ["<think>\nhm\n</think>\nAnswer: 14", "Answer: 14", "Answer: 15"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    rewards, per_func = trainer._compute_rewards(rows, prompts, completions, [[1]] * 3)
    assert per_func.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    assert rewards.tolist() == [2.0, 1.0, 0.0]  # summed with weight 1 each, as GRPOTrainer sums them
    # through a generation batch: each function's mean is logged under its name, from the returned rewards
    trainer._generate_and_score_completions([toy[i] for i in ROWS])
    logged = trainer._metrics["train"]
    assert logged["rewards/think_format_reward/mean"] == [0.0]  # the tiny random student never writes <think>
    assert set(logged) >= {"rewards/mentions_answer/mean", "reward", "steering/success_rate"}


def test_a_subclass_overrides_the_rewards_step_alone(tokenizer, toy, tmp_path):
    class FirstRolloutWins(OGLSSDTrainer):
        """Replaces the scoring step only: rollout 0 of each group succeeds, the others fail."""

        def _compute_rewards(self, inputs, prompts, completions, completion_ids):
            per_func = torch.tensor([[1.0] if i % self.num_generations == 0 else [0.0] for i in range(len(prompts))])
            return per_func[:, 0], per_func

    trainer = make_trainer(tokenizer, toy, tmp_path, trainer_class=FirstRolloutWins, per_device_train_batch_size=8)
    trainer._generate_and_score_completions([toy[i] for i in ROWS])
    logged = trainer._metrics["train"]
    # the logging step reads what the override returned: 2 of 8 rollouts succeed, every group is mixed
    assert logged["reward"] == [0.25] and logged["rewards/parity_reward/mean"] == [0.25]
    assert logged["steering/success_rate"] == [0.25] and logged["steering/frac_mixed_groups"] == [1.0]
