"""Teachers with their own tokenizer (trl_distill/core/cross_tokenizer.py): span alignment against a brute-force
reference, the chain rule, the loss against an explicit per-span computation, exactness with one tokenizer (loss and
gradients, the bare loss and CaMOPD's), CaMOPD training with a teacher of another vocabulary, and the errors."""

import math
import string

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.core.cross_tokenizer import (
    TeacherTokenizerBridge,
    cross_tokenizer_divergence,
    span_gap,
    span_side,
    token_bytes,
)
from trl_distill.core.divergence import LMHead, generalized_jsd
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import _bytes_to_unicode, build_tokenizer


GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
TEXTS = [
    "the theater and the band",
    "hello world, all is well",
    "  in\nthing: 3.14 — naïve café",
    "ananas and bananas",
    "x",
]


def byte_level_with_merges() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE (SmolLM2's layout) with a few merges, ChatML, eos `<|im_end|>`."""
    specials = ["<|endoftext|>", "<|im_end|>", "<|im_start|>"]
    alphabet = [_bytes_to_unicode()[b] for b in range(256)]
    merges = [("t", "h"), ("th", "e"), ("Ġ", "a"), ("Ġa", "n"), ("Ġan", "d"), ("i", "n"), ("in", "g"), ("Ġ", "t")]
    merges += [("h", "e"), ("Ġt", "he"), ("e", "r"), ("a", "n"), ("an", "a")]
    vocab = {token: i for i, token in enumerate(specials + alphabet + ["".join(m) for m in merges])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=specials[0], eos_token=specials[1], additional_special_tokens=specials[2:]
    )
    tokenizer.chat_template = build_tokenizer().chat_template
    return tokenizer


def metaspace_with_fallback() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (Gemma's layout): `▁` for spaces, byte fallback `<0xNN>`, BOS added by the tokenizer
    and written by the template, end of turn `<end_of_turn>` that is not the eos."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    fallback = [f"<0x{b:02X}>" for b in range(256)]
    chars = list(string.ascii_letters + string.digits + string.punctuation) + ["▁", "\n"]
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("l", "l"), ("▁", "w"), ("o", "r"), ("a", "n"), ("▁", "a")]
    merges += [("▁a", "n"), ("▁an", "d"), ("n", "a"), ("an", "a"), ("e", "a"), ("ea", "t")]
    pieces = specials + fallback + chars + ["".join(m) for m in merges]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(pieces))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=True, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )  # fmt: skip
    tokenizer.chat_template = GEMMA_LIKE_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def student_tok():
    return byte_level_with_merges()


@pytest.fixture(scope="module")
def teacher_tok():
    return metaspace_with_fallback()


@pytest.fixture(scope="module")
def bridge(student_tok, teacher_tok):
    return TeacherTokenizerBridge(student_tok, teacher_tok, "gemma-like")


def rollouts(tokenizer, texts, end=True):
    """Student completions of `texts` (each closed by the end of turn when `end`), right-padded, with their mask."""
    rows = [
        tokenizer(t, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if end else []) for t in texts
    ]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return ids, mask


def brute_force_spans(student_widths, teacher_widths):
    """Spans as the connected components of "these two tokens cover a common byte", by a plain loop over bytes
    (zero-width tokens join the component of the byte before them)."""
    owner_s, owner_t = [], []
    for side, widths in ((owner_s, student_widths), (owner_t, teacher_widths)):
        for token, width in enumerate(widths):
            side.extend([token] * width)
    parent = {("s", i): ("s", i) for i in range(len(student_widths))}
    parent.update({("t", j): ("t", j) for j in range(len(teacher_widths))})

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(owner_s, owner_t):
        parent[find(("s", a))] = find(("t", b))
    labels, spans_s, spans_t = {}, [], []
    for side, out, widths in (("s", spans_s, student_widths), ("t", spans_t, teacher_widths)):
        for i, width in enumerate(widths):
            if width == 0:  # a zero-width token joins the span of the token before it (or the first span)
                out.append(out[-1] if out else 0)
                continue
            root = find((side, i))
            out.append(labels.setdefault(root, len(labels)) if side == "s" else labels[root])
    return spans_s, spans_t


# ------------------------------------------------------------------------------------------------ alignment
def test_token_bytes_read_both_layouts(student_tok, teacher_tok):
    for tokenizer in (student_tok, teacher_tok):
        table = token_bytes(tokenizer)
        for text in TEXTS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert b"".join(table[i] for i in ids) == text.encode()
        assert table[tokenizer.eos_token_id] == b""
    assert token_bytes(teacher_tok)[teacher_tok.convert_tokens_to_ids("<0xC3>")] == b"\xc3"


def test_spans_match_a_brute_force_byte_loop(bridge, student_tok, teacher_tok):
    ids, mask = rollouts(student_tok, TEXTS)
    aligned = bridge.align([[{"role": "user", "content": "q"}]] * len(TEXTS), ids, mask)
    assert not aligned.misaligned.any()
    multi = 0
    for b, text in enumerate(TEXTS):
        student_ids = student_tok(text, add_special_tokens=False)["input_ids"]
        teacher_ids = teacher_tok(text, add_special_tokens=False)["input_ids"]
        widths_s = [len(bridge.student_bytes[i]) for i in student_ids] + [1]  # the end of turn: one virtual byte
        widths_t = [len(bridge.teacher_bytes[i]) for i in teacher_ids] + [1]
        expected_s, expected_t = brute_force_spans(widths_s, widths_t)
        n_s, n_t = len(expected_s), len(expected_t)
        assert aligned.student_spans[b, :n_s].tolist() == expected_s
        assert (aligned.student_spans[b, n_s:] == -1).all()
        assert aligned.completion_ids[b, :n_t].tolist() == teacher_ids + [
            teacher_tok.convert_tokens_to_ids("<end_of_turn>")
        ]
        assert aligned.teacher_spans[b, :n_t].tolist() == expected_t
        assert int(aligned.num_spans[b]) == max(expected_s) + 1
        multi += len(expected_s) != max(expected_s) + 1 or len(expected_t) != max(expected_t) + 1
    assert multi >= 3  # the cases do exercise spans of several tokens


def test_teacher_prompt_uses_its_template_and_bos(bridge, teacher_tok):
    ids = bridge.teacher_prompt_ids([{"role": "user", "content": "hi"}])
    assert ids.count(teacher_tok.bos_token_id) == 1 and ids[0] == teacher_tok.bos_token_id
    assert teacher_tok.decode(ids) == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert bridge.teacher_end_of_turn == teacher_tok.convert_tokens_to_ids("<end_of_turn>")


def test_truncated_rollout_and_broken_utf8(bridge, student_tok):
    # no end of turn: the last span closes at the text's end; a rollout cut inside a UTF-8 character loses that tail
    ids, mask = rollouts(student_tok, ["café"], end=False)
    cut_ids, cut_mask = ids[:, :-1], mask[:, :-1]  # "caf" + the first byte of "é"
    aligned = bridge.align(["q"], cut_ids, cut_mask)
    assert not aligned.misaligned.any()
    assert aligned.student_spans[0].tolist()[-1] == -1  # the dangling byte is in no span
    assert int(aligned.num_spans[0]) == 3  # c, a, f


# -------------------------------------------------------------------------------------------- loss and exactness
def heads(student_vocab, teacher_vocab, seed=0, hidden=8):
    generator = torch.Generator().manual_seed(seed)
    student = torch.nn.Parameter(torch.randn(student_vocab, hidden, generator=generator))
    teacher = torch.randn(teacher_vocab, hidden + 4, generator=generator)
    return student, teacher


def test_identity_equals_same_tokenizer_loss_and_gradients():
    tokenizer = build_tokenizer()
    bridge = TeacherTokenizerBridge(tokenizer, tokenizer, "self")
    assert bridge.identical
    ids, mask = rollouts(tokenizer, TEXTS)
    mask[1, 3] = 0  # a hole in the loss mask (a tool token) is honoured the same way
    aligned = bridge.align(["q"] * len(TEXTS), ids, (ids != tokenizer.pad_token_id).long())
    w_s, _ = heads(len(tokenizer), len(tokenizer))
    generator = torch.Generator().manual_seed(1)
    w_t = torch.randn(len(tokenizer), 8, generator=generator)
    hidden_s = torch.randn(*ids.shape, 8, generator=generator, requires_grad=True)
    hidden_t = torch.randn(*ids.shape, 8, generator=generator)
    for beta in (0.0, 0.3, 1.0):
        for temperature in (1.0, 0.7):
            ref, ref_entropy = generalized_jsd(hidden_s, LMHead(w_s), hidden_t, LMHead(w_t), mask, beta, temperature)
            ours, entropy = cross_tokenizer_divergence(
                hidden_s, LMHead(w_s), hidden_t, LMHead(w_t), ids, aligned, mask, bridge, beta, temperature
            )
            torch.testing.assert_close(ours, ref)
            torch.testing.assert_close(entropy, ref_entropy)
            grads_ref = torch.autograd.grad(ref.sum(), [hidden_s, w_s])
            grads = torch.autograd.grad(ours.sum(), [hidden_s, w_s])
            for g, r in zip(grads, grads_ref):  # summed over ~50 tokens in fp32: 1e-4 is float tolerance here
                torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def explicit_span_loss(bridge, logits_s, logits_t, ids_s, ids_t, spans_s, spans_t, beta, uld_weight, top_k):
    """The cross-tokenizer loss of one row from full logits, by plain loops over spans and vocabulary entries."""
    log_s, log_t = F.log_softmax(logits_s.double(), -1), F.log_softmax(logits_t.double(), -1)
    by_bytes_t = {}
    for j, piece in enumerate(bridge.teacher_bytes):
        if piece:
            by_bytes_t.setdefault(piece, j)
    pairs, seen = [], set()
    for i, piece in enumerate(bridge.student_bytes):
        if piece and piece in by_bytes_t and piece not in seen:
            seen.add(piece)
            pairs.append((i, by_bytes_t[piece]))
    total = 0.0
    for g in range(max(spans_s) + 1):
        pos_s = [k for k, s in enumerate(spans_s) if s == g]
        pos_t = [k for k, s in enumerate(spans_t) if s == g]
        span_s = sum(log_s[k, ids_s[k]] for k in pos_s)  # the chain rule
        span_t = sum(log_t[k, ids_t[k]] for k in pos_t)
        first_s, first_t = ids_s[pos_s[0]], ids_t[pos_t[0]]
        p, q = [], []
        for i, j in pairs:
            if i == first_s or j == first_t:
                continue
            p.append(log_s[pos_s[0], i].exp())
            q.append(log_t[pos_t[0], j].exp())
        p.append(span_s.exp())
        q.append(span_t.exp())
        p.append(max(1 - sum(p), 1 - math.exp(-1e-7)))
        q.append(max(1 - sum(q), 1 - math.exp(-1e-7)))
        p, q = torch.stack([torch.as_tensor(x) for x in p]), torch.stack([torch.as_tensor(x) for x in q])
        p, q = p / p.sum(), q / q.sum()
        if beta == 0.0:  # the endpoints are the two KLs (GKD's and TRL's convention)
            total += (q * (q / p).log()).sum()
        elif beta == 1.0:
            total += (p * (p / q).log()).sum()
        else:
            m = beta * q + (1 - beta) * p
            total += beta * (q * (q / m).log()).sum() + (1 - beta) * (p * (p / m).log()).sum()
        matched_s, matched_t = {i for i, _ in pairs}, {j for _, j in pairs}
        un_s = sorted(
            (log_s[pos_s[0], i].exp().item() for i in range(len(log_s[0])) if i not in matched_s and i != first_s),
            reverse=True,
        )
        un_t = sorted(
            (log_t[pos_t[0], j].exp().item() for j in range(len(log_t[0])) if j not in matched_t and j != first_t),
            reverse=True,
        )
        k = min(top_k, len(un_s), len(un_t))
        uld = sum(abs(a - b) for a, b in zip(un_s[:k], un_t[:k])) + abs(sum(un_s[k:]) - sum(un_t[k:]))
        total += uld_weight * uld
    return float(total)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_cross_loss_matches_explicit_per_span_computation(bridge, student_tok, teacher_tok, beta):
    texts = TEXTS[:3]
    ids, mask = rollouts(student_tok, texts)
    aligned = bridge.align(["q"] * len(texts), ids, mask)
    w_s, w_t = heads(len(student_tok), len(teacher_tok), seed=2)
    generator = torch.Generator().manual_seed(3)
    hidden_s = torch.randn(*ids.shape, w_s.size(1), generator=generator)
    hidden_t = torch.randn(*aligned.completion_ids.shape, w_t.size(1), generator=generator)
    ours, _ = cross_tokenizer_divergence(
        hidden_s, LMHead(w_s), hidden_t, LMHead(w_t), ids, aligned, mask, bridge, beta, uld_top_k=7
    )
    for b in range(len(texts)):
        n_s, n_t = int((aligned.student_spans[b] >= 0).sum()), int((aligned.teacher_spans[b] >= 0).sum())
        expected = explicit_span_loss(
            bridge, (hidden_s[b, :n_s] @ w_s.T).detach(), hidden_t[b, :n_t] @ w_t.T, ids[b, :n_s].tolist(),
            aligned.completion_ids[b, :n_t].tolist(), aligned.student_spans[b, :n_s].tolist(),
            aligned.teacher_spans[b, :n_t].tolist(), beta, 1.0, 7,
        )  # fmt: skip
        assert ours[b].sum().item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert (ours >= 0).all()


def test_span_logprobs_follow_the_chain_rule_and_gap(bridge, student_tok, teacher_tok):
    ids, mask = rollouts(student_tok, TEXTS[:2])
    aligned = bridge.align(["q", "q"], ids, mask)
    w_s, w_t = heads(len(student_tok), len(teacher_tok), seed=4)
    hidden_s = torch.randn(*ids.shape, w_s.size(1))
    hidden_t = torch.randn(*aligned.completion_ids.shape, w_t.size(1))
    with torch.no_grad():
        student = span_side(hidden_s, LMHead(w_s), ids, aligned.student_spans, aligned.num_spans)
        teacher = span_side(hidden_t, LMHead(w_t), aligned.completion_ids, aligned.teacher_spans, aligned.num_spans)
        gaps = span_gap(student, teacher, aligned.num_spans)
        log_s = F.log_softmax(hidden_s @ w_s.T, -1)
        log_t = F.log_softmax(hidden_t @ w_t.T, -1)
    offset = 0
    for b in range(2):
        diffs = []
        for g in range(int(aligned.num_spans[b])):
            s = sum(log_s[b, k, ids[b, k]] for k in range(ids.size(1)) if aligned.student_spans[b, k] == g)
            t = sum(
                log_t[b, k, aligned.completion_ids[b, k]]
                for k in range(aligned.completion_ids.size(1))
                if aligned.teacher_spans[b, k] == g
            )
            assert student.span_logprobs[offset + g].item() == pytest.approx(float(s), abs=1e-5)
            assert teacher.span_logprobs[offset + g].item() == pytest.approx(float(t), abs=1e-5)
            diffs.append(abs(float(t - s)))
        offset += int(aligned.num_spans[b])
        assert gaps[b].item() == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)


# --------------------------------------------------------------------------------------------------- errors
def test_unalignable_teachers_fail_at_construction(student_tok, teacher_tok):
    no_template = metaspace_with_fallback()
    no_template.chat_template = None
    with pytest.raises(ValueError, match=r"Teacher 'med'.*no chat template"):
        TeacherTokenizerBridge(student_tok, no_template, "med")
    lowercase = byte_level_with_merges()
    lowercase.backend_tokenizer.normalizer = normalizers.Lowercase()
    with pytest.raises(ValueError, match=r"Teacher 'lower'.*does not decode back"):
        TeacherTokenizerBridge(student_tok, lowercase, "lower")

    class Slow:  # no backend tokenizer: pieces cannot be read as bytes
        chat_template = "x"
        name_or_path = "slow"

        def get_vocab(self):
            return {}

    with pytest.raises(ValueError, match=r"Teacher 'slow'.*not a fast tokenizer"):
        TeacherTokenizerBridge(student_tok, Slow(), "slow")


# ----------------------------------------------------------------------------------------------------- CaMOPD
COMMON = {
    "bf16": False, "use_cpu": True, "gradient_checkpointing": False, "report_to": [], "save_strategy": "no",
    "logging_steps": 1, "max_completion_length": 6, "learning_rate": 1e-3, "per_device_train_batch_size": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def prompts():
    return make_task_splits(("reverse", "sort"), 16, 4, 4, seed=0)["train"]


def generated_batch(tokenizer, dataset, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for p in dataset["prompt"][: len(lengths)]
    ]
    width_p, width_c = max(map(len, rows)), max(lengths)
    batch = {
        "prompt_ids": torch.full((len(rows), width_p), tokenizer.pad_token_id),
        "prompt_mask": torch.zeros(len(rows), width_p, dtype=torch.long),
        "completion_ids": torch.full((len(rows), width_c), tokenizer.pad_token_id),
        "completion_mask": torch.zeros(len(rows), width_c, dtype=torch.long),
    }
    for i, (ids, n) in enumerate(zip(rows, lengths)):
        batch["prompt_ids"][i, width_p - len(ids) :], batch["prompt_mask"][i, width_p - len(ids) :] = (
            torch.tensor(ids),
            1,
        )
        batch["completion_ids"][i, :n] = torch.randint(3 + 32, 3 + 127, (n,), generator=generator)  # ASCII bytes
        batch["completion_mask"][i, :n] = 1
    batch["completion_ids"][0, lengths[0] - 1] = tokenizer.eos_token_id
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    batch["prompts"] = list(dataset["prompt"][: len(lengths)])
    batch["sources"] = ["default"] * len(lengths)
    return batch


def test_camopd_identity_teacher_tokenizer_is_exact(tmp_path, prompts):
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    student, teacher = tiny_model(tokenizer, "xs", "qwen2", seed=0), tiny_model(tokenizer, "xs", "llama", seed=1)
    args = CaMOPDConfig(output_dir=str(tmp_path), rho=1.0, beta=0.5, **COMMON)
    same = CaMOPDTrainer(student, teacher, args, prompts, processing_class=tokenizer)
    cross = CaMOPDTrainer(student, teacher, args, prompts, processing_class=tokenizer,
                          teacher_tokenizers={"default": build_tokenizer()})  # fmt: skip
    assert list(cross.bridges) == ["default"] and not same.bridges
    batch = generated_batch(tokenizer, prompts, [5, 2, 6, 3])
    losses, grads = [], []
    for trainer in (same, cross):
        trainer.model.train()
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
    torch.testing.assert_close(losses[1], losses[0])
    for g_cross, g_same in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_cross, g_same)
    # gap selection: the same gaps, so the same kept rows
    kept = [t._select_by_gap(dict(batch), 2)["completion_ids"] for t in (same, cross)]
    torch.testing.assert_close(kept[1], kept[0])


def test_camopd_trains_with_a_teacher_of_another_vocabulary(tmp_path, prompts):
    student_tokenizer = build_tokenizer()
    student_tokenizer.padding_side = "left"
    teacher_tokenizer = metaspace_with_fallback()
    student = tiny_model(student_tokenizer, "xs", "qwen2", seed=0)
    teacher = tiny_model(teacher_tokenizer, "xs", "llama", seed=1)
    args = CaMOPDConfig(output_dir=str(tmp_path), rho=0.5, max_steps=2, **COMMON)
    trainer = CaMOPDTrainer(student, {"default": teacher}, args, prompts, processing_class=student_tokenizer,
                            teacher_tokenizers={"default": teacher_tokenizer})  # fmt: skip
    result = trainer.train()
    assert math.isfinite(result.training_loss) and result.training_loss > 0
    logged = [entry for entry in trainer.state.log_history if "gap/kept" in entry]
    assert logged and all(math.isfinite(entry["gap/kept"]) for entry in logged)


def test_camopd_refuses_bad_teacher_tokenizer_specs(tmp_path, prompts):
    tokenizer = build_tokenizer()
    student, teacher = tiny_model(tokenizer, "xs", "qwen2", seed=0), tiny_model(tokenizer, "xs", "llama", seed=1)
    args = CaMOPDConfig(output_dir=str(tmp_path), rho=1.0, **COMMON)
    with pytest.raises(ValueError, match=r"names teachers \['medical'\]"):
        CaMOPDTrainer(student, teacher, args, prompts, processing_class=tokenizer,
                      teacher_tokenizers={"medical": tokenizer})  # fmt: skip
    with pytest.raises(ValueError, match="served and has its own tokenizer"):
        CaMOPDTrainer(student, {"default": "http://127.0.0.1:9/v1"}, args, prompts, processing_class=tokenizer,
                      teacher_tokenizers={"default": tokenizer})  # fmt: skip
    no_template = metaspace_with_fallback()
    no_template.chat_template = None
    other = tiny_model(no_template, "xs", "llama", seed=1)
    with pytest.raises(ValueError, match=r"Teacher 'default'.*no chat template"):
        CaMOPDTrainer(student, other, args, prompts, processing_class=tokenizer,
                      teacher_tokenizers={"default": no_template})  # fmt: skip


# ------------------------------------------------------------------------------------------------ diagnostics
def test_span_diagnostics_identity_equals_token_diagnostics_and_cross_pair_runs(teacher_tok):
    from trl_distill.core.cross_tokenizer import span_diagnostics
    from trl_distill.evaluation.diagnostics import token_diagnostics

    tokenizer = build_tokenizer()
    student, teacher = tiny_model(tokenizer, "xs", "qwen2", seed=0), tiny_model(tokenizer, "xs", "llama", seed=1)
    prompts = ["Say something: "] * 3  # plain prompts: token_diagnostics scores the completion and the eos
    texts = TEXTS[:3]
    ours = span_diagnostics(student, teacher, TeacherTokenizerBridge(tokenizer, tokenizer, "self"), texts, prompts)
    theirs = token_diagnostics(student, teacher, tokenizer, texts, prompts=prompts, check_tokenizer=False)
    assert ours["num_spans"] == theirs["num_tokens"]
    for key in ("forward_kl", "reverse_kl", "js", "top1_agreement"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
    other = tiny_model(teacher_tok, "xs", "llama", seed=1)
    cross = span_diagnostics(student, other, TeacherTokenizerBridge(tokenizer, teacher_tok, "t"), texts, prompts)
    assert all(math.isfinite(cross[k]) and cross[k] >= 0 for k in ("forward_kl", "reverse_kl", "js", "gap"))
    assert 0 < cross["multi_token_spans"] < 1 and cross["num_spans"] < ours["num_spans"]
