"""Runs each training command for a couple of tiny steps in one process, as `accelerate launch` starts it.

    DS_ACCELERATOR=cpu accelerate launch --config_file recipes/accelerate/zero3_cpu.yaml \
        tests/distributed_smoke.py OUTPUT_DIR [scas dmc ogls-sd camopd] [-- FLAGS FOR EVERY JOB]

Used by `tests/test_distributed.py`. Every job goes through `trl_distill.cli.main`, the `trl-distill` entry point, with
its toy recipe and overrides that keep it to two optimizer steps; after each job the script prints one line
`SMOKE <job> <distributed type> <zero stage> <trainer class> <model class>` that the test reads.
"""

import os
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# overrides that shrink each toy recipe to two optimizer steps on tiny models
OVERRIDES = {
    "scas": "--dataset_name lab:scas_pool?prompts=8 --model_name_or_path lab:scas_student?size=xs "
    "--per_device_train_batch_size 4",
    "dmc": "--per_device_train_batch_size 4 --probe_size 8 --dev_size 4 --max_new_tokens 4",
    "ogls-sd": "--model_name_or_path lab:ogls_sd_student?pretrain_steps=2 --per_device_train_batch_size 4 --max_completion_length 4",
    "camopd": "--model_name_or_path lab:camopd_student?pretrain_steps=2 "
    "--general_teacher lab:camopd_general_teacher?pretrain_steps=2 --per_device_train_batch_size 2 --max_completion_length 4 "
    "--gradient_coherence_every 0",
}


def job_args(job: str, output_dir: str) -> list[str]:
    recipe = os.path.join(ROOT, "recipes", job.replace("-", "_"), "toy.yaml")
    common = ["--config", recipe, "--output_dir", output_dir, "--max_steps", "2", "--logging_steps", "1"]
    return common + ["--save_strategy", "no", "--report_to", "none", *OVERRIDES[job].split()]


def main(argv: list[str]) -> int:
    import deepspeed.comm.torch
    from accelerate import PartialState
    from transformers import Trainer

    # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce kernel on first use (minutes, once per machine);
    # one process never uses it, so the smoke run skips the build. Multi-process runs keep it.
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        deepspeed.comm.torch.build_shm_op = lambda: None

    from trl_distill.cli import main as cli_main

    split = argv.index("--") if "--" in argv else len(argv)
    (output_root, *jobs), extra = argv[:split], argv[split + 1 :]
    trainers = []
    original_train = Trainer.train

    def recording_train(self, *args, **kwargs):  # remember which trainer each command built
        trainers.append(self)
        return original_train(self, *args, **kwargs)

    Trainer.train = recording_train
    for job in jobs:
        status = cli_main([job, *job_args(job, os.path.join(output_root, job)), *extra])
        trainer = trainers[-1]
        plugin = trainer.accelerator.state.deepspeed_plugin
        stage = plugin.zero_stage if plugin is not None else None
        model = trainer.accelerator.unwrap_model(trainer.model)
        if PartialState().is_main_process:
            print(
                f"SMOKE {job} {trainer.accelerator.distributed_type.value} {stage} {type(trainer).__name__} "
                f"{type(model).__name__} status={status} steps={trainer.state.global_step}",
                flush=True,
            )
    # Tear the process group down while the interpreter is fully alive. Left to interpreter shutdown, gloo's worker
    # threads can still hold finished async work (ZeRO-3 all-gathers) whose tensors reference Python objects, and
    # freeing them during finalization aborts the process ("terminate called without an active exception"; see
    # pytorch/pytorch#179291 and #190489). The `trl-distill` entry point does the same (`run` -> `end_processes`);
    # this script calls `main` for each job, so it ends the group itself. Every rank gets here: the barrier cannot hang.
    from trl_distill.scripts.utils import end_processes

    PartialState().wait_for_everyone()
    end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
