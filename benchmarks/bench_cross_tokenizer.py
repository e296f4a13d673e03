"""Cross-tokenizer distillation against TRL's GOLD (`trl.experimental.gold.ULDLoss`) on the same pair and batch.

    python benchmarks/bench_cross_tokenizer.py [--quick] [--rows 4] [--words 40] [--rounds 3] [--threads 1]

Pair: SmolLM2-135M-Instruct student, Gemma-3-270M teacher (49k vs 262k vocabularies, different templates and BOS),
the real checkpoints (`trl-distill fetch-model smollm2-135m-instruct gemma-3-270m`). `--quick` uses the tiny world's
byte-level tokenizer as the teacher's (a random `xs` Llama teacher), a smaller config, and says so.

One step, both sides: the student forward with gradients, the teacher forward without, the alignment, the loss and
the backward. Ours: `TeacherTokenizerBridge.align` + `cross_tokenizer_divergence` on final hidden states (chunked
logits). GOLD: `build_teacher_inputs_from_texts` for both sides + `ULDLoss` (hybrid loss: matched pieces by JSD, the rest by
sorted probabilities) on full logits: extended ULD (its byte offsets) where both tokenizers are byte-level BPE
(`--quick`), positional ULD for Gemma's SentencePiece tokenizer, which its alignment refuses. Times are interleaved rounds (process
CPU time on CPU, median); peak memory is measured in a fresh subprocess per side (`ru_maxrss` above the resident set
after loading on CPU, `max_memory_allocated` on CUDA). Alignment throughput: student tokens per second of `align`,
and its share of our step. Targets: step time and memory within 1.2x of GOLD's, alignment under 10% of a step.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_common as common  # noqa: E402  (also sets the offline environment)
import torch  # noqa: E402
from trl.trainer.utils import pad  # noqa: E402


WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches near Zürich, "
    "counting 3.14 apples — naïve café owners compute f(x) = x ** 2 and print results in 東京 every morning"
).split()


def texts(rows: int, words: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)).capitalize() + "." for i in range(rows)]


def load_pair(quick: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_distill.core.checkpoints import fetch_checkpoint

    student_dir = fetch_checkpoint("smollm2-135m-instruct", show_progress=False)
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    student_tok = AutoTokenizer.from_pretrained(student_dir)
    if quick:
        from trl_distill.lab.world.models import tiny_model
        from trl_distill.lab.world.tokenizer import build_tokenizer

        teacher_tok = build_tokenizer()
        teacher = tiny_model(teacher_tok, "xs", "llama", seed=1)
    else:
        teacher_dir = fetch_checkpoint("gemma-3-270m", show_progress=False)
        teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
        teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    device = "cuda" if common.cuda() else "cpu"
    return student.to(device), student_tok, teacher.to(device).requires_grad_(False), teacher_tok


def student_batch(tokenizer, prompt, completions, device):
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in completions]
    rows = [torch.tensor(row) for row in rows]
    ids = pad(rows, padding_value=tokenizer.pad_token_id)
    mask = pad([torch.ones_like(row) for row in rows])
    prompts = torch.tensor([prompt_ids] * len(rows))
    return prompts.to(device), ids.to(device), mask.to(device)


def last_hidden(model, input_ids, attention_mask, keep):
    out = model.model(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state[:, -keep - 1 : -1]


class Ours:
    def __init__(self, student, student_tok, teacher, teacher_tok, prompt, completions):
        from trl_distill.core.cross_tokenizer import TeacherTokenizerBridge

        self.student, self.teacher = student, teacher
        self.bridge = TeacherTokenizerBridge(student_tok, teacher_tok, "teacher")
        self.device = next(student.parameters()).device
        self.prompt = prompt
        self.prompt_ids, self.ids, self.mask = student_batch(student_tok, prompt, completions, self.device)
        self.align_seconds = []

    def step(self):
        from trl_distill.core.cross_tokenizer import cross_tokenizer_divergence
        from trl_distill.core.divergence import LMHead

        start = time.perf_counter()
        aligned = self.bridge.align([self.prompt] * self.ids.size(0), self.ids, self.mask)
        self.align_seconds.append(time.perf_counter() - start)
        input_ids = torch.cat([self.prompt_ids, self.ids], 1)
        attention = torch.cat([torch.ones_like(self.prompt_ids), self.mask], 1)
        hidden_s = last_hidden(self.student, input_ids, attention, self.ids.size(1))
        with torch.no_grad():
            hidden_t = last_hidden(
                self.teacher, aligned.input_ids.to(self.device), aligned.attention_mask.to(self.device),
                aligned.logits_to_keep,
            )  # fmt: skip
        divergence, _ = cross_tokenizer_divergence(
            hidden_s, LMHead.of(self.student), hidden_t, LMHead.of(self.teacher), self.ids, aligned, self.mask,
            self.bridge, beta=1.0,
        )  # fmt: skip
        loss = divergence.sum() / self.mask.sum()
        loss.backward()
        self.student.zero_grad(set_to_none=True)
        return loss.item()


class Gold:
    def __init__(self, student, student_tok, teacher, teacher_tok, prompt, completions):
        from trl.experimental.gold.gold_config import GOLDConfig
        from trl.experimental.gold.gold_trainer import ULDLoss

        from trl_distill.core.cross_tokenizer import _decoder_kind

        self.student, self.teacher = student, teacher
        self.student_tok, self.teacher_tok = student_tok, teacher_tok
        self.device = next(student.parameters()).device
        # GOLD's byte-offset alignment (extended ULD) takes ByteLevel BPE tokenizers only: with Gemma's SentencePiece
        # tokenizer it raises NotImplementedError, so GOLD runs its positional ULD there (no alignment), as it can
        self.extended = all(_decoder_kind(tok) == "byte_level" for tok in (student_tok, teacher_tok))
        config = GOLDConfig(
            output_dir=tempfile.mkdtemp(), use_cpu=self.device.type == "cpu", bf16=False, use_uld_loss=True,
            use_extended_uld=self.extended, uld_use_hybrid_loss=True, beta=1.0, report_to=[],
        )  # fmt: skip
        self.loss = ULDLoss(config, student_tok, teacher_tok, device=self.device)
        self.prompt_texts = {
            which: [tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)] * len(completions)
            for which, tok in (("student", student_tok), ("teacher", teacher_tok))
        }
        self.completions = completions

    def step(self):
        from trl.experimental.gold.gold_trainer import build_teacher_inputs_from_texts

        sides = {
            which: [t.to(self.device) for t in build_teacher_inputs_from_texts(tok, self.prompt_texts[which], self.completions, self.extended)]
            for which, tok in (("student", self.student_tok), ("teacher", self.teacher_tok))
        }  # fmt: skip
        s_ids, s_labels, s_mask, s_offsets = sides["student"]
        t_ids, t_labels, t_mask, t_offsets = sides["teacher"]
        student_logits = self.student(input_ids=s_ids, attention_mask=s_mask).logits
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=t_ids, attention_mask=t_mask).logits
        loss = self.loss(student_logits, teacher_logits, s_labels, t_labels, s_ids, t_ids, s_offsets, t_offsets)
        loss.backward()
        self.student.zero_grad(set_to_none=True)
        return float(loss)


def setup(args):
    common.setup_torch(args.threads)
    torch.manual_seed(0)
    student, student_tok, teacher, teacher_tok = load_pair(args.quick)
    prompt = [{"role": "user", "content": "Write one sentence."}]
    completions = texts(args.rows, args.words)
    return {
        name: cls(student, student_tok, teacher, teacher_tok, prompt, completions)
        for name, cls in (("ours", Ours), ("gold", Gold))
    }


def peak_memory(args, side: str) -> float:
    """MiB above the state after loading and one warm-up step, in this process (run it fresh)."""
    runner = setup(args)[side]
    runner.step()
    memory = common.PeakMemory().start()
    runner.step()
    return memory.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory_of", choices=("ours", "gold"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.words, args.rounds = 2, 12, 1
    if args.memory_of:
        common.emit({"peak_mib": peak_memory(args, args.memory_of)})
        return
    runners = setup(args)
    for runner in runners.values():
        runner.step()  # warm-up
    times = common.interleaved({name: runner.step for name, runner in runners.items()}, args.rounds)
    ours, gold = statistics.median(times["ours"]), statistics.median(times["gold"])
    align = statistics.median(runners["ours"].align_seconds)
    tokens = int(runners["ours"].mask.sum())
    sizes = ["--rows", str(args.rows), "--words", str(args.words), "--threads", str(args.threads)]
    sizes += ["--quick"] if args.quick else []
    memory = {side: common.fresh(__file__, ["--memory_of", side, *sizes])["peak_mib"] for side in ("ours", "gold")}
    pair = "SmolLM2-135M student / tiny-world byte-level xs teacher (--quick: NOT the Gemma pair)" if args.quick else (
        "SmolLM2-135M-Instruct student / Gemma-3-270M teacher")  # fmt: skip
    result = {
        "pair": pair,
        "batch": f"{args.rows} rows x {tokens // max(args.rows, 1)} student tokens",
        "step_seconds": {"ours": ours, "gold": gold},
        "step_time_ratio": ours / gold,
        "peak_mib": memory,
        "peak_memory_ratio": memory["ours"] / max(memory["gold"], 1e-9),
        "align_tokens_per_second": tokens / align,
        "align_share_of_step": align / ours,
    }
    result["gold_mode"] = "extended ULD (byte-offset alignment)" if runners["gold"].extended else (
        "positional ULD: GOLD's byte-offset alignment supports ByteLevel BPE only, not this teacher's tokenizer")  # fmt: skip
    print(f"pair: {pair}; batch: {result['batch']}; device: {'cuda' if common.cuda() else 'cpu'}")
    print(f"GOLD mode: {result['gold_mode']}")
    print(f"step time   ours {ours:.3f}s  GOLD {gold:.3f}s  ratio {result['step_time_ratio']:.2f} (target <= 1.2)")
    print(f"peak memory ours {memory['ours']:.0f} MiB  GOLD {memory['gold']:.0f} MiB  ratio "
          f"{result['peak_memory_ratio']:.2f} (target <= 1.2)")  # fmt: skip
    print(f"alignment   {result['align_tokens_per_second']:.0f} tokens/s, {result['align_share_of_step']:.1%} of a step "
          "(target < 10%)")  # fmt: skip
    spread = common.ratio_of(times["ours"], times["gold"])[1] if args.rounds > 1 else None
    note = "--quick: tiny teacher, not the Gemma pair" if args.quick else "SmolLM2 / Gemma-3"
    rows = [
        common.measure("cross_tokenizer", "step time vs GOLD (x)", result["step_time_ratio"], "<= 1.2", spread, note),
        common.measure(
            "cross_tokenizer", "peak memory vs GOLD (x)", result["peak_memory_ratio"], "<= 1.2", None, note
        ),
        common.measure("cross_tokenizer", "alignment share of a step", result["align_share_of_step"], "<= 0.1"),
        common.measure("cross_tokenizer", "alignment tokens/s", result["align_tokens_per_second"]),
    ]
    return common.report(args, rows, result)


if __name__ == "__main__":
    main()
