"""`trl-distill build-pool` in every launched process, recording which shards each rank generated.

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 tests/multiprocess_pool.py RECORD_DIR \
        --teachers ... --output_dir ...

Used by `tests/test_pool_builder_cli.py`: `RECORD_DIR/rank<k>.json` lists `[teacher_index, shard]` pairs.
"""

import json
import os
import sys


def main(record_dir: str, argv: list[str]) -> int:
    from trl_distill.core.engine import distributed_state
    from trl_distill.pool import builder
    from trl_distill.scripts.build_pool import main as cli_main

    generated = []
    original = builder.PoolBuilder._generate_teacher

    def recording(self, teacher_index, spec, shards):
        generated.extend([teacher_index, shard] for shard in shards)
        return original(self, teacher_index, spec, shards)

    builder.PoolBuilder._generate_teacher = recording
    status = cli_main(argv)
    state = distributed_state()
    record = {"rank": state.process_index, "num_processes": state.num_processes, "generated": generated}
    with open(os.path.join(record_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump(record, f)
    state.destroy_process_group()  # a gloo group left to interpreter teardown can abort the process
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
