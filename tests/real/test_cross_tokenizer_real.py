"""Cross-tokenizer distillation on real pairs: SmolLM2-135M-Instruct (49k byte-level BPE, ChatML, no BOS) against
Gemma-3-270M (262k SentencePiece, its own template, `<bos>`, `<end_of_turn>`), and the tiny world's byte-level
tokenizer against SmolLM2's; CaMOPD with one teacher of each family trains on a fixed batch and its loss falls."""

import copy

import torch
from datasets import Dataset
from test_cross_tokenizer import rollouts  # tests/ is on sys.path (pytest's rootdir conftest)

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.core.cross_tokenizer import TeacherTokenizerBridge
from trl_distill.lab.world.tokenizer import build_tokenizer


TEXTS = ["The capital of France is Paris.", "  def f(x):\n    return x ** 2  # naïve — ok", "Zürich, 東京 and 3.14"]
PROMPT = [{"role": "user", "content": "Say something."}]


def check_spans(bridge, aligned, texts):
    """Each span covers the same bytes on both sides (decoded independently of the alignment code)."""
    student, teacher = bridge.student_tokenizer, bridge.teacher_tokenizer
    for b, text in enumerate(texts):
        s_ids = student(text, add_special_tokens=False)["input_ids"]
        t_ids = teacher(text, add_special_tokens=False)["input_ids"]
        for g in range(int(aligned.num_spans[b]) - 1):  # the last span is the two ends of turn
            s_tok = [s_ids[k] for k in range(len(s_ids)) if aligned.student_spans[b, k] == g]
            t_tok = [t_ids[k] for k in range(len(t_ids)) if aligned.teacher_spans[b, k] == g]
            assert s_tok and t_tok
            assert student.convert_tokens_to_string(student.convert_ids_to_tokens(s_tok)) == teacher.decode(t_tok)


def test_smollm2_student_gemma_teacher_alignment(smollm2_dir, gemma_dir):
    from transformers import AutoTokenizer

    smol, gemma = AutoTokenizer.from_pretrained(smollm2_dir), AutoTokenizer.from_pretrained(gemma_dir)
    bridge = TeacherTokenizerBridge(smol, gemma, "gemma")
    assert 20_000 < len(bridge.student_matched) < len(smol)  # most SmolLM2 pieces have a Gemma twin
    assert gemma.convert_ids_to_tokens(bridge.teacher_end_of_turn) == "<end_of_turn>"
    ids, mask = rollouts(smol, TEXTS)
    aligned = bridge.align([PROMPT] * len(TEXTS), ids, mask)
    assert not aligned.misaligned.any()
    check_spans(bridge, aligned, TEXTS)
    prompt = gemma.decode(aligned.input_ids[0][aligned.attention_mask[0] != 0])
    assert prompt.startswith("<bos><start_of_turn>user\nSay something.<end_of_turn>\n<start_of_turn>model\n")
    assert prompt.count("<bos>") == 1 and prompt.endswith("<end_of_turn>")


def test_world_byte_level_against_smollm2(smollm2_dir):
    from transformers import AutoTokenizer

    smol, world = AutoTokenizer.from_pretrained(smollm2_dir), build_tokenizer()
    bridge = TeacherTokenizerBridge(smol, world, "world")
    ids, mask = rollouts(smol, TEXTS)
    aligned = bridge.align([PROMPT] * len(TEXTS), ids, mask)
    assert not aligned.misaligned.any()
    check_spans(bridge, aligned, TEXTS)
    # one byte per world token: every student token is one span (the world side splits it into its bytes)
    for b, text in enumerate(TEXTS):
        n = len(smol(text, add_special_tokens=False)["input_ids"]) + 1
        assert aligned.student_spans[b, :n].tolist() == list(range(n))


def test_camopd_one_teacher_of_each_family_loss_falls(smollm2_dir, gemma_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    smol_tok = AutoTokenizer.from_pretrained(smollm2_dir, padding_side="left")
    student = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    domain = copy.deepcopy(student).requires_grad_(False)  # same tokenizer: today's path
    general = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32)  # its own tokenizer
    general_prompts = Dataset.from_dict({"prompt": [PROMPT] * 2})
    domain_prompts = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Name a city."}]] * 2})
    args = CaMOPDConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=2,
        schedule="mixed", rho=1.0, max_completion_length=16, learning_rate=2e-4,
    )  # fmt: skip
    trainer = CaMOPDTrainer(
        student, {"general": general, "domain": domain}, args, {"general": general_prompts, "domain": domain_prompts},
        processing_class=smol_tok, teacher_tokenizers={"general": "auto"},
    )  # fmt: skip
    assert list(trainer.bridges) == ["general"]
    prompt_ids = smol_tok.apply_chat_template(PROMPT, add_generation_prompt=True)
    if not isinstance(prompt_ids, list):
        prompt_ids = prompt_ids["input_ids"]
    ids, mask = rollouts(smol_tok, ["Paris is the capital of France.", "Hello there!"])
    batch = {
        "prompt_ids": torch.tensor([prompt_ids] * 2),
        "prompt_mask": torch.ones(2, len(prompt_ids), dtype=torch.long),
        "completion_ids": ids,
        "completion_mask": mask,
        "prompts": [PROMPT] * 2,
        "sources": ["general", "domain"],
    }
    optimizer = torch.optim.Adam([p for p in trainer.model.parameters() if p.requires_grad], lr=2e-4)
    trainer.model.train()
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses
    divergences = trainer._metrics["train"]
    assert divergences["divergence/general"] and divergences["divergence/domain"]
