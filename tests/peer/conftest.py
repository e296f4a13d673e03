"""The TRL peer harness: TRL's own trainer tests run against trl-distill's trainers (opt-in, `-m peer`).

Needs the pinned copy of TRL's tests under tests/peer/trl_tests/ (write it with tests/peer/get_trl_tests.py);
without it every peer test is skipped with a message. Nothing is downloaded at test time.
"""

from pathlib import Path

import pytest


COPY = Path(__file__).parent / "trl_tests"


def pytest_configure(config):
    config.addinivalue_line("markers", "peer: TRL's own tests against our trainers (opt-in: -m peer)")


def pytest_collection_modifyitems(config, items):
    selected = "peer" in (config.getoption("-m") or "")
    for item in items:
        if Path(str(item.fspath)).parent.name != "peer" and COPY not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.peer)
        if not selected:
            item.add_marker(pytest.mark.skip(reason="peer harness: opt-in, run with -m peer"))
        elif not (COPY / "test_sft_trainer.py").exists():
            item.add_marker(
                pytest.mark.skip(reason=f"no pinned copy of TRL's tests in {COPY}; run tests/peer/get_trl_tests.py")
            )
