"""Runs TRL's pinned tests twice (TRL's classes, then ours swapped in) and prints the pass/fail table.

    python tests/peer/get_trl_tests.py --git-dir /path/to/trl/.git        # once: the pinned copy
    OMP_NUM_THREADS=1 python tests/peer/run_peer.py [FILES...] [-k EXPR]   # default: both files

Per file: collected, passed / failed / skipped for the baseline and for the swap, and the tests that pass for
TRL's class but not for ours (each is a bug or a deliberate difference documented in tests/peer/README.md).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


HERE = Path(__file__).parent
FILES = ("trl_tests/test_sft_trainer.py", "trl_tests/test_distillation_trainer.py")


def run(files: list[str], swap: bool, extra: list[str]) -> dict[str, str]:
    """{test id: passed | failed | skipped} from one pytest run."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {
            **os.environ,
            "PEER_SWAP": "1" if swap else "0",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        cmd = [sys.executable, "-m", "pytest", "-m", "peer", "-p", "no:randomly", "-q", "--timeout", "120"]
        subprocess.run([*cmd, f"--junitxml={report}", *extra, *files], env=env, cwd=HERE.parent.parent)
        outcomes = {}
        for case in ET.parse(report).iter("testcase"):
            test_id = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag for child in case}
            outcomes[test_id] = (
                "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
            )
        return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", default=[str(HERE / f) for f in FILES])
    parser.add_argument("-k", default=None, help="pytest -k expression (a subset)")
    args = parser.parse_args()
    extra = ["-k", args.k] if args.k else []
    baseline, swap = run(args.files, False, extra), run(args.files, True, extra)
    print(f"\n{'file':40} {'collected':>9} | {'baseline pass/fail/skip':>23} | {'swap pass/fail/skip':>19}")
    for module in sorted({t.split("::")[0] for t in baseline}):
        ids = [t for t in baseline if t.split("::")[0] == module]
        b = Counter(baseline[t] for t in ids)
        s = Counter(swap.get(t, "missing") for t in ids)
        print(
            f"{module.rsplit('.', 1)[-1]:40} {len(ids):9} | {b['passed']:>9}/{b['failed']}/{b['skipped']:<9} |"
            f" {s['passed']:>7}/{s['failed']}/{s['skipped']}"
        )
    regressions = sorted(t for t in baseline if baseline[t] == "passed" and swap.get(t) != "passed")
    print(f"\npass for TRL's class, not for ours ({len(regressions)}):")
    for test_id in regressions:
        print(f"  {test_id}  [{swap.get(test_id)}]")


if __name__ == "__main__":
    main()
