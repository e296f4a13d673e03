"""Every example row of docs/datasets.md is accepted by the trainer or function it is listed under."""

import json
import os
import re

import pytest
from datasets import Dataset

from trl_distill.camopd.routing import named_sources
from trl_distill.core.pool import is_candidate_pool, to_long_pool
from trl_distill.ogls_sd.ogls_sd_config import OGLSSDConfig
from trl_distill.ogls_sd.ogls_sd_trainer import OGLSSDTrainer


DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "datasets.md")


def examples() -> list[tuple[str, dict]]:
    """(section title, row) for every ```json block of the page."""
    text = open(DOC, encoding="utf-8").read()
    found, section = [], None
    for line_block in re.split(r"(^## .*$)", text, flags=re.M):
        if line_block.startswith("## "):
            section = line_block[3:].strip()
            continue
        for block in re.findall(r"```json\n(.*?)\n```", line_block, flags=re.S):
            found.append((section, json.loads(block)))
    return found


def test_the_page_has_an_example_for_every_trainer():
    sections = {section for section, _ in examples()}
    assert {"`SCASTrainer`", "`DMCCallback` (on `SFTTrainer` or `SCASTrainer`)", "`OGLSSDTrainer`"} <= sections
    assert {"`CaMOPDTrainer`", "`build_pool` / `trl-distill build-pool`"} <= sections


@pytest.mark.parametrize("section,row", examples())
def test_each_example_row_is_accepted(section, row, tokenizer):
    data = Dataset.from_list([row])
    if section == "`SCASTrainer`":
        if is_candidate_pool(data):
            long = to_long_pool(data)
            assert {"prompt", "completion", "teacher", "correct"} <= set(long.column_names)
        else:  # plain SFT: what SFTTrainer tokenizes
            assert "messages" in row or "text" in row or {"prompt", "completion"} <= set(row)
    elif section.startswith("`DMCCallback`"):
        assert not is_candidate_pool(data) and to_long_pool(data.remove_columns("correct")).num_rows == 1
    elif section == "`OGLSSDTrainer`":
        for args in (
            OGLSSDConfig(output_dir="unused", use_cpu=True),
            OGLSSDConfig.opsd(output_dir="unused", use_cpu=True),
        ):
            OGLSSDTrainer._check_dataset(data, "train_dataset", args)
    elif section == "`CaMOPDTrainer`":
        domain = data.map(lambda row: {"prompt": row["prompt"] + [{"role": "user", "content": "and once more?"}]})
        assert list(named_sources({"general": data, "domain": domain})) == ["general", "domain"]
    else:  # the builder's own checks before any teacher loads: the prompt column and a dry call of the verifier
        from trl_distill.pool.build_pool_config import BuildPoolConfig
        from trl_distill.pool.builder import PoolBuilder

        config = BuildPoolConfig(teachers=["some/teacher"], output_dir="unused", verifier="numeric", n=2)
        assert PoolBuilder(config, data, show_progress=False).extra_columns == ["answer"]
