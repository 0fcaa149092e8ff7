#!/usr/bin/env python3
"""Run the same tests many times and count each one's outcomes: the check
for a timing-dependent test (run it under load: another suite, a cargo
build).  Not part of the test command; each run is a fresh pytest process
with its own PostgreSQL cluster.

    python3 tests/repeat.py 20 tests/test_writes.py::test_x tests/test_watch.py -- -k etcd34

prints, per test id, how many runs passed, failed, errored or skipped, and
the failures' first lines; exits 1 if any run of any test failed.
ETCD_FDW_PG selects the major as for pytest.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)(?: - (.*))?$")


def main(argv):
    if len(argv) < 2 or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    runs = int(argv[0])
    rest = argv[1:]
    extra = []
    if "--" in rest:
        i = rest.index("--")
        rest, extra = rest[:i], rest[i + 1:]
    counts: dict = collections.defaultdict(collections.Counter)
    reasons: dict = collections.defaultdict(list)
    started = time.monotonic()
    for n in range(1, runs + 1):
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *rest, *extra],
            cwd=REPO, capture_output=True, text=True,
        )
        seen = 0
        for line in p.stdout.splitlines():
            m = LINE.match(line)
            if m:
                seen += 1
                counts[m.group(2)][m.group(1)] += 1
                if m.group(1) in ("FAILED", "ERROR"):
                    reasons[m.group(2)].append(f"run {n}: {(m.group(3) or '')[:300]}")
        if seen == 0:
            print(f"run {n}: pytest reported no test (rc {p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
            return 1
        bad = sum(c["FAILED"] + c["ERROR"] for c in counts.values())
        print(f"run {n}/{runs} done ({time.monotonic() - started:.0f} s, failures so far: {bad})", flush=True)
    failed = False
    width = max(len(t) for t in counts)
    for test in sorted(counts):
        c = counts[test]
        print(f"{test:<{width}}  passed {c['PASSED']:>3}  failed {c['FAILED']:>3}  "
              f"errors {c['ERROR']:>3}  skipped {c['SKIPPED']:>3}")
        for r in reasons[test]:
            print(f"    {r}")
        failed |= bool(c["FAILED"] or c["ERROR"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
