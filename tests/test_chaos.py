"""The chaos run (scripts/chaos.sh, chaos/run.py) as part of the suite.

* the judging functions on hand-made histories (lost, lie, unknown, stale,
  torn scans): the checks must be able to fail;
* a short run without faults that tampers with etcd behind the FDW's back
  (--sabotage) must FAIL, naming the lost key and the wrong results;
* the 30-second chaos run must pass: nothing acknowledged lost, no wrong
  result, no crashed backend.

The runs start their own etcd cluster and PostgreSQL (not the suite's).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_driver():
    spec = importlib.util.spec_from_file_location("chaos_run", os.path.join(ROOT, "chaos", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


chaos = _load_driver()


def _w(kind, value, outcome, rowcount=1, sqlstate=None):
    return {"kind": kind, "value": value, "rowcount": rowcount,
            "op": {"outcome": outcome, "sqlstate": sqlstate}}


def test_judge_key():
    j = chaos.judge_key
    ins_ok = _w("insert", "a", "ok")
    assert j([ins_ok], "a")[0] == "ok"
    assert j([ins_ok], None) == ("lost", "acknowledged value 'a' is missing")
    upd_ok = _w("update", "b", "ok")
    assert j([ins_ok, upd_ok], "b")[0] == "ok"
    assert j([ins_ok, upd_ok], "a")[0] == "lost"  # acknowledged update replaced by older value
    # an update that found no row wrote nothing
    assert j([_w("insert", "a", "unknown"), _w("update", "b", "ok", rowcount=0)], None)[0] == "ok"
    # unknown: either state
    unk = _w("update", "c", "unknown", sqlstate="08007")
    assert j([ins_ok, unk], "a")[0] == "ok"
    assert j([ins_ok, unk], "c") == ("ok", "an unknown write was applied")
    # failed with a SQLSTATE that says "not applied", yet applied: a lie
    failed = _w("update", "d", "failed", sqlstate="08006")
    assert j([ins_ok, failed], "a")[0] == "ok"
    assert j([ins_ok, failed], "d")[0] == "lie"
    assert j([_w("insert", "a", "failed", sqlstate="08006")], "a")[0] == "lie"
    assert j([_w("insert", "a", "failed", sqlstate="08006")], None)[0] == "ok"
    # a value nobody wrote
    assert j([], "x")[0] == "wrong"
    assert j([ins_ok], "x")[0] == "lost"


def _rows(g, gen, att, rev=10, drop=None, other=None):
    rows = [(k, f"{gen}:{att}", rev) for k in chaos.gen_expected_keys(g, gen)]
    if drop is not None:
        rows.pop(drop)
    if other is not None:
        rows[0] = (rows[0][0], other, rev)
    return rows


def test_gen_checks():
    assert len(chaos.gen_expected_keys(1, 0)) == 8
    assert chaos.gen_state(1, _rows(1, 5, 7)) == (None, 5, 7)
    assert chaos.gen_state(1, [])[0] == "empty"
    assert "mixed values" in chaos.gen_state(1, _rows(1, 5, 7, other="4:6"))[0]
    assert "key set" in chaos.gen_state(1, _rows(1, 5, 7, drop=3))[0]
    torn = [(k, "5:7", 10 + i % 2) for i, k in enumerate(chaos.gen_expected_keys(1, 5))]
    assert "mixed mod_revisions" in chaos.gen_state(1, torn)[0]

    attempts = {
        0: {"attempt": 0, "gen": 0, "outcome": "ok", "sent": 0.0, "end": 0.0},
        1: {"attempt": 1, "gen": 1, "outcome": "ok", "sent": 10.0, "end": 11.0},
        2: {"attempt": 2, "gen": 2, "outcome": "failed", "sqlstate": "08006", "sent": 12.0, "end": 13.0},
        3: {"attempt": 3, "gen": 2, "outcome": "unknown", "sent": 14.0, "end": 15.0},
        4: {"attempt": 4, "gen": 3, "outcome": "ok", "sent": 16.0, "end": 17.0},
    }

    def scan(gen, att, start, end):
        return {"g": 1, "start": start, "end": end, "rows": _rows(1, gen, att)}

    c = chaos.check_gen_scan
    assert c(scan(1, 1, 11.5, 12), attempts) is None
    assert c(scan(0, 0, 10.5, 12), attempts) is None  # commit 1 not acknowledged yet
    assert c(scan(0, 0, 11.5, 12), attempts)[0] == "wrong"  # stale
    assert c(scan(2, 2, 13.5, 14), attempts)[0] == "lie"  # failed attempt's data
    assert c(scan(2, 3, 15.5, 16), attempts) is None  # unknown attempt applied
    assert c(scan(2, 3, 13.0, 13.5), attempts)[0] == "wrong"  # sent after the scan ended
    assert c(scan(3, 4, 18, 19), attempts) is None
    assert c(scan(4, 9, 18, 19), attempts)[0] == "wrong"  # never attempted


def _run(*args, timeout):
    p = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "chaos.sh"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        # the suite runs against the extension scripts/test.sh installed
        env={**os.environ, "ETCD_FDW_SKIP_INSTALL": "1", "ETCD_FDW_PG": str(harness.PG_MAJOR)},
    )
    return p, p.stdout + p.stderr


def test_chaos_sabotage_is_detected(tmp_path):
    """Without faults, but with etcd changed behind the FDW's back: FAIL."""
    p, out = _run("--duration", "6", "--no-faults", "--sabotage", "--out", str(tmp_path),
                  timeout=300)
    assert p.returncode == 1, out[-6000:]
    assert "RESULT: FAIL" in out, out[-6000:]
    lost = next(line for line in out.splitlines() if line.startswith("LOST (acknowledged"))
    wrong = next(line for line in out.splitlines() if line.startswith("WRONG results"))
    assert int(lost.split()[-4]) >= 1, lost
    assert int(wrong.split()[-4]) >= 3, wrong
    assert "in etcd, never written" in out
    assert "XCW01" in out  # the pgbench clients' own checks


def test_chaos_30s(tmp_path):
    p, out = _run("--duration", "30", "--out", str(tmp_path), timeout=900)
    sys.stdout.write(out[-8000:])
    assert p.returncode == 0, out[-8000:]
    assert "RESULT: PASS" in out


@pytest.mark.parametrize("fault,rounds", [("stop", 2), ("kill", 5)])
def test_scans_survive_their_member_going_down(fault, rounds):
    """chaos/repro_member_down_mid_scan.py: the member a session reads from
    is paused (SIGSTOP) or killed in the middle of multi-page scans; every
    scan must still succeed (retried on another member within
    request_timeout).  Failed before: a paused member used up the whole
    budget (timed out; HV000 then, 08006 now), a killed one cut the stream (Cancelled)."""
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "chaos", "repro_member_down_mid_scan.py"), fault, str(rounds)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "ETCD_FDW_PG": str(harness.PG_MAJOR)},
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
