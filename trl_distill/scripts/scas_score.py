"""`trl-distill scas-score` (or `python -m trl_distill.scripts.scas_score`): score a pool for a student, write the scores and the
selected SFT dataset, for users who train elsewhere.

```bash
trl-distill scas-score --model Qwen/Qwen2.5-1.5B-Instruct --pool pool.jsonl --output_dir scas-out
accelerate launch -m trl_distill.scripts.scas_score --model ... --pool pool.parquet --output_dir scas-out --format parquet
```

Writes `scores.<format>` (one row per candidate: `prompt_id`, `teacher`, `correct`, `learning_cost`, `d_A`, `d_Q`,
`AA`, `AQ`, token counts, rank `group`, `selected`) and `selected.<format>` (one `prompt`/`completion` row per prompt,
with the pool's other per-prompt columns and the chosen `teacher`).
"""

import argparse
import json
import os

from ..core.data import check_local_path, load_data
from ..core.engine import distributed_state
from ..core.pool import to_long_pool
from ..core.tokenizers import ensure_pad_token
from ..scas.scoring import Q_NLL_SCOPES, SCORE_KEYS, encode_pool, score_features
from ..scas.selection import STRATEGIES, scas_select
from .utils import parse_args_with_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-distill scas-score", description="Score a candidate pool with SCAS and write the selected dataset."
    )
    parser.add_argument("--model", required=True, help="Student model name or path.")
    parser.add_argument(
        "--pool", required=True, help="Pool: .jsonl/.json/.parquet/.csv file, a directory or a hub id."
    )
    parser.add_argument("--output_dir", required=True, help="Where scores and the selected dataset are written.")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="Output format.")
    parser.add_argument("--lmbda", type=float, default=0.5, help="λ of the learning cost.")
    parser.add_argument("--strategy", choices=STRATEGIES, default="scas", help="Selection rule.")
    parser.add_argument(
        "--score_key", choices=SCORE_KEYS, default="learning_cost", help="Score the scas strategy ranks by."
    )
    parser.add_argument(
        "--q_nll_scope", choices=Q_NLL_SCOPES, default="prompt_with_gen", help="Whether d_Q includes the header."
    )
    parser.add_argument("--group", type=int, default=1, help="Rank group to draw from (1 = lowest cost).")
    parser.add_argument("--num_groups", type=int, default=5, help="Number of rank groups G.")
    parser.add_argument("--all_candidates", action="store_true", help="Let incorrect candidates compete too.")
    parser.add_argument("--strict", action="store_true", help="Error on prompts without a correct candidate.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draws inside a group.")
    parser.add_argument("--batch_size", type=int, default=16, help="Sequences per forward pass.")
    parser.add_argument("--feature_module", default=None, help="Module name of the feature layer (default: auto).")
    parser.add_argument("--system", default=None, help="System message rendered before each prompt.")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"), help="Model dtype."
    )
    return parser


def _write(dataset, path: str, fmt: str) -> None:
    if fmt == "parquet":
        dataset.to_parquet(path)
    else:
        dataset.to_json(path, lines=True, force_ascii=False)


make_parser = build_parser  # the name every command module exports (as `trl/scripts/`)


def main(argv=None) -> dict:
    """Runs the scoring command; returns a summary (also written to `summary.json`)."""
    args = parse_args_with_config(build_parser(), argv)  # also reads `--config scoring.yaml`
    check_local_path(args.model, "student (--model)")
    state = distributed_state()
    model, tokenizer = _load_student(args.model, args.dtype, state.device)
    long = to_long_pool(load_data(args.pool), require_correct=not args.all_candidates)
    scores = score_features(
        model,
        encode_pool(tokenizer, long, system=args.system),
        ensure_pad_token(tokenizer),
        lmbda=args.lmbda,
        batch_size=args.batch_size,
        feature_module=args.feature_module,
        q_nll_scope=args.q_nll_scope,
    )
    selection = scas_select(
        long,
        scores,
        strategy=args.strategy,
        group=args.group,
        num_groups=args.num_groups,
        only_correct=not args.all_candidates,
        seed=args.seed,
        strict=args.strict,
        score_key=args.score_key,
    )
    summary = {
        "prompts": len(selection.indices) + len(selection.skipped),
        "selected": len(selection.indices),
        "skipped": len(selection.skipped),
        "teacher_share": selection.teacher_shares([str(t) for t in long["teacher"]]),
        "mean_learning_cost": sum(scores[i]["learning_cost"] for i in selection.indices) / len(selection.indices),
    }
    if state.is_main_process:
        _write_outputs(args.output_dir, args.format, long, scores, selection, summary)
    state.wait_for_everyone()
    return summary


def _load_student(model_path: str, dtype: str, device):
    """The student and its tokenizer, from a local path, Hub id or source, on this process's device."""
    from .utils import load_pretrained

    model, tokenizer = load_pretrained(model_path, "student (--model_name_or_path)", dtype)
    return model.to(device), tokenizer


def _write_outputs(output_dir: str, fmt: str, long, scores: list[dict], selection, summary: dict) -> None:
    """`scores.<fmt>` (every candidate's scores, group and whether it was selected), `selected.<fmt>` (the chosen
    rows, ready for SFT) and `summary.json`, which is also printed."""
    from datasets import Dataset

    os.makedirs(output_dir, exist_ok=True)
    chosen = set(selection.indices)
    keep = [c for c in ("prompt_id", "teacher", "correct") if c in long.column_names]
    rows = [
        {**{c: long[c][i] for c in keep}, **score, "group": selection.groups[i], "selected": i in chosen}
        for i, score in enumerate(scores)
    ]
    _write(Dataset.from_list(rows), os.path.join(output_dir, f"scores.{fmt}"), fmt)
    drop = [c for c in ("prompt_id", "correct") if c in long.column_names]
    _write(long.select(selection.indices).remove_columns(drop), os.path.join(output_dir, f"selected.{fmt}"), fmt)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
