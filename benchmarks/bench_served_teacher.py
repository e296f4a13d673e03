"""A served teacher (`trl-distill serve-teacher` on loopback) against the same teacher in the training process: loss
step time, and bytes on the wire per completion token at several top-k, vLLM's JSON against the compact format.

    python benchmarks/bench_served_teacher.py [--shape qwen3-0.6b] [--vocab V] [--length 64] [--batch 4] [--rounds 3]

One loss step is what the trainer does per micro-batch once the completions exist: the teacher's signal (a forward
here, a `/v1/completions` request there), the student forward, the divergence and the backward. The in-process step
takes the chunked full-vocabulary divergence; the served one the top-`k` + tail divergence at `--k` (20). Steps run
in interleaved rounds, wall-clock (the server's forward runs in a thread of this process, so CPU time would count it
twice over); each side keeps its median. Bytes are the reply bodies the server sent, divided by the completion tokens
scored. vLLM's JSON reply also holds the prompt positions; the ratio is taken per *position* returned, so that this
does not count in the compact format's favour.

Target (issue 32): the compact format at least 5x smaller than JSON at k = 20 (TRL reports 5x for its payloads).
"""

import os
import statistics
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402


def main(argv=None):
    import torch

    from trl_distill.core.divergence import LMHead, generalized_jsd, topk_tail_generalized_jsd
    from trl_distill.core.served_teacher import ServedTeacher
    from trl_distill.scripts.serve_teacher import TeacherServer

    parser = common.make_parser(__doc__, length=64, batch=4, rounds=3)  # --batch: completions per step
    parser.add_argument("--prompt_length", type=int, default=16)
    parser.add_argument("--k", type=int, default=20, help="top-k of the served step")
    parser.add_argument("--wire_ks", type=int, nargs="+", default=[1, 20, 100], help="top-k of the byte counts")
    options = parser.parse_args(argv)
    common.setup_torch(options.threads)

    vocab = common.vocab_of(options)
    tokenizer = common.make_tokenizer(vocab)
    student = common.make_model(options.shape, vocab, tokenizer, "student")
    teacher = common.make_model(options.shape, vocab, tokenizer, "teacher", seed=1).eval()
    device = student.get_output_embeddings().weight.device
    generator = torch.Generator().manual_seed(0)
    shape_p, shape_c = (options.batch, options.prompt_length), (options.batch, options.length)
    prompt_ids = torch.randint(300, vocab, shape_p, generator=generator).to(device)
    completion_ids = torch.randint(300, vocab, shape_c, generator=generator).to(device)
    prompt_mask, completion_mask = torch.ones_like(prompt_ids), torch.ones_like(completion_ids)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    width = options.length

    def student_hidden():
        out = student.model(input_ids=input_ids).last_hidden_state
        return out[:, options.prompt_length - 1 : -1]

    server = TeacherServer(teacher, tokenizer).start()
    served = ServedTeacher(server.url, top_k=options.k, wire="compact")

    def local_step():
        with torch.no_grad():
            teacher_hidden = teacher.model(input_ids=input_ids).last_hidden_state[:, options.prompt_length - 1 : -1]
        divergence, _ = generalized_jsd(
            student_hidden(), LMHead.of(student), teacher_hidden, LMHead.of(teacher), completion_mask, 1.0
        )
        divergence.sum().backward()

    def served_step():
        scores = served.score_completions(prompt_ids, prompt_mask, completion_ids, completion_mask)
        divergence, _ = topk_tail_generalized_jsd(
            student_hidden(), LMHead.of(student), scores.topk_ids, scores.topk_logprobs, completion_mask, 1.0
        )
        divergence.sum().backward()

    try:
        served_step()  # warm-up: the first request fetches /v1/models
        times = common.interleaved({"local": local_step, "served": served_step}, options.rounds, time.perf_counter)
        sent = {}
        for k in options.wire_ks:
            for wire in ("json", "compact"):
                client = ServedTeacher(server.url, top_k=k, wire=wire)
                before = server.bytes_sent
                client.score_completions(prompt_ids, prompt_mask, completion_ids, completion_mask)
                sent[(k, wire)] = (server.bytes_sent - before) / (options.batch * width)
    finally:
        server.stop()

    ratio, ratio_spread = common.ratio_of(times["served"], times["local"])
    print(
        f"Served vs in-process teacher: {common.shape_label(options)}, batch {options.batch}, prompt "
        f"{options.prompt_length} tokens, served top-k {options.k} (compact, float16), loopback, wall-clock, median "
        f"of {options.rounds} interleaved rounds"
    )
    for name in ("local", "served"):
        print(f"  {name:<8} step {statistics.median(times[name]):.3f} s   rounds {' '.join(f'{t:.3f}' for t in times[name])}")  # fmt: skip
    # the JSON reply scores every position after the first, the compact one only the completion's
    per_position = width / (options.prompt_length + width - 1)
    ratios = {k: sent[(k, "json")] * per_position / sent[(k, "compact")] for k in options.wire_ks}
    print(f"{'k':>5}{'JSON bytes/token':>18}{'compact bytes/token':>21}{'JSON / compact (per position)':>31}")
    for k in options.wire_ks:
        print(f"{k:>5}{sent[(k, 'json')]:>18.0f}{sent[(k, 'compact')]:>21.1f}{ratios[k]:>31.1f}")
    rows = [common.measure("served_teacher", f"served (k={options.k}) / in-process step time", ratio, None, ratio_spread,
                           "loopback, wall-clock")]  # fmt: skip
    for k in options.wire_ks:
        target = ">= 5" if k == 20 else None
        rows.append(common.measure("served_teacher", f"JSON / compact bytes per position, k={k}", ratios[k], target, None,
                                   f"{sent[(k, 'compact')]:.1f} B/token compact"))  # fmt: skip
    bytes_per_token = {f"{k}/{w}": v for (k, w), v in sent.items()}
    return common.report(options, rows, {"times": times, "bytes_per_token": bytes_per_token})


if __name__ == "__main__":
    main()
