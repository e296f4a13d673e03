# Copyright 2026 The trl-distill authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# /// script
# dependencies = [
#     "trl-distill",
# ]
# ///

"""
Answer pool for SCAS and DMC: several teachers answer every prompt `n` times, each answer is verified, and the pool is
written in shards, so a killed run resumes where it stopped.

# Tiny world (CPU, a couple of minutes the first time): two `xs` teachers pre-trained on arithmetic written in two
# styles (cached locally), held-out arithmetic prompts, the tiny world's verifier
```bash
python examples/build_pool.py --config recipes/build_pool/toy.yaml
```

# Real scale (one teacher at a time through vLLM)
```bash
python examples/build_pool.py --config recipes/build_pool/deepmath-4teachers.yaml
```

The same as a command: `trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml` (or
`--config recipes/build_pool/toy.yaml`).
"""

import sys

from trl_distill.scripts.build_pool import main


if __name__ == "__main__":
    # the `trl-distill build-pool` job: same arguments and loaders; a rerun resumes a killed build
    sys.exit(main())
