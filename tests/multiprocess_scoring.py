"""Scores a tiny pool with SCAS and ranks two tiny datasets with DMC in every launched process; each rank writes
what it scored and what it got back to `OUTPUT_DIR/rank<k>.json`.

    CUDA_VISIBLE_DEVICES= python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/multiprocess_scoring.py OUTPUT_DIR

Used by `tests/test_multiprocess_cpu.py`, which also runs `run()` in its own (single) process and compares.
"""

import json
import os
import sys


def data():
    from datasets import Dataset

    from trl_distill.lab.world.tasks import make_task_splits

    splits = make_task_splits(("arithmetic",), train_size=10, dev_size=6, test_size=1, seed=0)
    train = splits["train"]
    pool = Dataset.from_dict(
        {
            "prompt_id": list(range(len(train))),
            "prompt": train["prompt"],
            "completion": train["completion"],
            "teacher": ["t"] * len(train),
            "correct": [True] * len(train),
        }
    )
    wrong = train.add_column("correct", [i % 2 == 0 for i in range(len(train))])
    return pool, {"good": train, "half": wrong}, splits["dev"]


def run() -> dict:
    import torch

    torch.set_num_threads(1)
    from trl_distill.core import engine
    from trl_distill.dmc.compatibility import rank_datasets
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.lab.world.tasks import task_reward
    from trl_distill.lab.world.tokenizer import build_tokenizer
    from trl_distill.scas import scoring

    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    pool, candidates, dev = data()
    scored: list[list[int]] = []  # token ids of every row this process ran a forward pass on
    original = scoring.learning_cost_batch

    def recording(model, batch, *args, **kwargs):
        for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist()):
            scored.append([i for i, m in zip(ids, mask) if m])
        return original(model, batch, *args, **kwargs)

    scoring.learning_cost_batch = recording
    scas = scoring.scas_scores(model, tokenizer, pool, batch_size=3)
    scoring.learning_cost_batch = original
    table = rank_datasets(model, tokenizer, candidates, dev, task_reward, probe_size=None, dev_size=None,
                          max_new_tokens=4, scoring_batch_size=3, generation_batch_size=2)  # fmt: skip
    state = engine.distributed_state()
    features = scoring.encode_pool(tokenizer, scoring.to_long_pool(pool, require_correct=False))
    index = {tuple(f["input_ids"]): i for i, f in enumerate(features)}
    return {
        "rank": state.process_index,
        "num_processes": state.num_processes,
        "distributed_type": state.distributed_type.value,
        "scored": sorted({index[tuple(ids)] for ids in scored}),
        "scas": scas,
        "dmc": table,
    }


if __name__ == "__main__":
    result = run()
    with open(os.path.join(sys.argv[1], f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)
    from trl_distill.core.engine import distributed_state

    distributed_state().destroy_process_group()  # a gloo group left to interpreter teardown can abort the process
