"""Patroni's cluster in SQL, against real Patroni 4.1.5 nodes (tests/patronicluster.py).

First a single-node cluster of its own (scope "solo"), then one cluster per module and etcd version (scope "demo"): n1 bootstraps as
primary, n2 joins as a streaming replica.  The tests run in file order and
the later ones change the cluster: a config change from SQL that Patroni
applies (patronictl show-config, SHOW on the node), a concurrent patronictl
edit-config during a transaction-mode edit (40001), refused patches, IMPORT
FOREIGN SCHEMA with layout 'patroni', a paused replica (lag grows, its lease
TTL goes down), a switchover with patronictl, and last a killed Patroni
whose member key expires.
"""

import json
import os
import signal
import subprocess

import psycopg
import pytest

import patronicluster as pc
from harness import expect_error, sigstop_and_wait, wait_until

SCOPE = "demo"


@pytest.fixture(scope="module")
def cluster(etcd):
    bindir = pc.patroni_bindir()
    nodes = pc.start_cluster(SCOPE, etcd, ["n1", "n2"], bindir)
    try:
        yield {n.name: n for n in nodes}
    finally:
        for n in nodes:
            try:
                os.kill(n.proc.pid, signal.SIGCONT)
            except (ProcessLookupError, AttributeError):
                pass
            n.destroy()


@pytest.fixture
def pdb(db, etcd, cluster):
    db.create_server("s", etcd.endpoint)
    return db


def members(db, conn=None):
    cur = (conn or db.conn).execute(
        "SELECT * FROM etcd_patroni_members('s', %s) ORDER BY name", (SCOPE,)
    )
    cols = [d.name for d in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def cluster_row(db):
    cur = db.conn.execute("SELECT * FROM etcd_patroni_cluster('s', %s)", (SCOPE,))
    cols = [d.name for d in cur.description]
    return dict(zip(cols, cur.fetchone()))


def etcd_json(etcd, key):
    return json.loads(etcd.get(f"/service/{SCOPE}/{key}"))


def pg(node):
    return psycopg.connect(node.psql_conninfo(), autocommit=True)


def show_config(node):
    """patronictl show-config, as JSON (its YAML of this config is plain
    enough for the venv's PyYAML)."""
    out = node.ctl("show-config", SCOPE)
    code = "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"
    p = subprocess.run(
        [os.path.join(node.bindir, "python"), "-c", code], input=out, capture_output=True,
        text=True, check=True,
    )
    return json.loads(p.stdout)


def test_a_single_node_cluster(db, etcd):
    """Its own scope and node, stopped at the end: one member, the leader,
    no replica, no failover/sync/history yet."""
    nodes = pc.start_cluster("solo", etcd, ["only"], pc.patroni_bindir())
    try:
        db.create_server("s", etcd.endpoint)
        rows = wait_until(
            lambda: (lambda r: r if r and r[0][3] is not None else None)(db.rows(
                "SELECT name, role, is_leader, lsn, lag_bytes, port FROM etcd_patroni_members('s', 'solo')"
            )),
            "the single member with its LSN",
        )
        assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
            ("only", "primary", True, 0, nodes[0].pg_port)
        ]
        c = db.rows(
            "SELECT leader, members, failover, sync, history, config->>'loop_wait' "
            "FROM etcd_patroni_cluster('s', 'solo')"
        )
        assert c == [("only", 1, None, None, None, "2")]
    finally:
        for n in nodes:
            n.destroy()


def test_members_of_a_running_cluster(pdb, etcd, cluster):
    n1, n2 = cluster["n1"], cluster["n2"]
    m = wait_until(
        lambda: (lambda ms: ms if len(ms) == 2 and ms["n2"]["lsn"] is not None else None)(members(pdb)),
        "both members with their LSNs",
    )
    assert set(m) == {"n1", "n2"}
    p, r = m["n1"], m["n2"]
    assert (p["role"], p["state"], p["is_leader"]) == ("primary", "running", True)
    assert (r["role"], r["is_leader"]) == ("replica", False)
    assert (p["host"], p["port"]) == ("127.0.0.1", n1.pg_port)
    assert (r["host"], r["port"]) == ("127.0.0.1", n2.pg_port)
    assert p["api_url"] == f"http://127.0.0.1:{n1.api_port}/patroni"
    assert p["version"] == r["version"] == "4.1.5"
    assert p["timeline"] == 1
    assert p["lag_bytes"] == 0 and r["lag_bytes"] >= 0
    assert 0 < p["lease_ttl_left"] <= 20 and 0 < r["lease_ttl_left"] <= 20
    # lsn is the member's xlog_location as pg_lsn
    assert pdb.scalar("SELECT %s::pg_lsn > '0/0'", (p["lsn"],)) is True
    assert etcd_json(etcd, "members/n1")["xlog_location"] > 0
    # patronictl agrees on roles and timelines
    listed = {x["Member"]: x for x in json.loads(n1.ctl("list", "-f", "json", SCOPE))}
    assert listed["n1"]["Role"] == "Leader" and listed["n2"]["Role"] == "Replica"
    # everything from one read: no member changed after the revision read
    c = cluster_row(pdb)
    assert all(x["mod_revision"] <= c["revision"] for x in m.values())


def test_cluster_row(pdb, etcd, cluster):
    c = cluster_row(pdb)
    assert c["leader"] == "n1"
    with pg(cluster["n1"]) as conn:
        sysid = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    assert c["system_identifier"] == str(sysid)
    assert c["config"] == etcd_json(etcd, "config")
    assert c["config"]["ttl"] == 20
    assert c["members"] == 2
    assert pdb.scalar("SELECT %s::pg_lsn > '0/0'", (c["optime"],)) is True
    assert etcd_json(etcd, "status")["optime"] > 0
    assert c["revision"] > 0
    # another namespace or scope: 42704 naming it
    expect_error(pdb.conn, "SELECT * FROM etcd_patroni_cluster('s', 'nosuch')", sqlstate="42704",
                 contains=["nosuch", "/service/nosuch/"])
    expect_error(pdb.conn, "SELECT * FROM etcd_patroni_members('s', 'demo', '/other/')",
                 sqlstate="42704", contains=["/other/demo/"])


def test_edit_config_from_sql_reaches_patroni(pdb, cluster):
    n1 = cluster["n1"]
    pdb.execute("SET etcd_fdw.commit_mode = 'statement'")
    new = pdb.scalar(
        "SELECT etcd_patroni_edit_config('s', %s, %s::jsonb)",
        (SCOPE, json.dumps({"postgresql": {"parameters": {"work_mem": "8MB"}}})),
    )
    assert new["postgresql"]["parameters"]["work_mem"] == "8MB"
    assert new["postgresql"]["parameters"]["max_connections"] == 30  # merged, not replaced
    assert show_config(n1)["postgresql"]["parameters"]["work_mem"] == "8MB"

    def applied():
        with pg(n1) as conn:
            return conn.execute("SHOW work_mem").fetchone()[0] == "8MB"

    wait_until(applied, "Patroni to apply work_mem = 8MB on n1")


def test_transaction_mode_writes_at_commit(pdb, cluster):
    n1 = cluster["n1"]
    c = pdb.connect()
    c.execute("BEGIN")
    c.execute(
        "SELECT etcd_patroni_edit_config('s', %s, %s::jsonb)",
        (SCOPE, json.dumps({"maximum_lag_on_failover": 2097152, "postgresql": {"parameters": {"work_mem": None}}})),
    )
    # the transaction reads its own edit; Patroni does not see it yet
    assert members(pdb, conn=c)  # reads still work inside the transaction
    assert show_config(n1)["maximum_lag_on_failover"] == 1048576
    c.execute("COMMIT")
    cfg = show_config(n1)
    assert cfg["maximum_lag_on_failover"] == 2097152
    assert "work_mem" not in cfg["postgresql"]["parameters"]
    # a second edit in one transaction builds on the first
    c.execute("BEGIN")
    c.execute("SELECT etcd_patroni_edit_config('s', %s, '{\"maximum_lag_on_failover\": 1048576}')", (SCOPE,))
    both = c.execute("SELECT etcd_patroni_edit_config('s', %s, '{\"check_timeline\": true}')", (SCOPE,)).fetchone()[0]
    assert both["maximum_lag_on_failover"] == 1048576 and both["check_timeline"] is True
    c.execute("ROLLBACK")
    assert show_config(n1)["maximum_lag_on_failover"] == 2097152


def test_concurrent_patronictl_edit_is_a_serialization_failure(pdb, etcd, cluster):
    n1 = cluster["n1"]
    c = pdb.connect()
    c.execute("BEGIN")
    c.execute("SELECT etcd_patroni_edit_config('s', %s, '{\"maximum_lag_on_failover\": 4194304}')", (SCOPE,))
    n1.ctl("edit-config", "--force", "--quiet", "-s", "maximum_lag_on_failover=3145728", SCOPE)
    expect_error(c, "COMMIT", sqlstate="40001", contains=[f"/service/{SCOPE}/config"])
    assert show_config(n1)["maximum_lag_on_failover"] == 3145728


@pytest.mark.parametrize(
    "patch, sqlstate, words",
    [
        ({"loop_wait": 15}, "23514", ["loop_wait + 2*retry_timeout <= ttl"]),
        ({"ttl": 10}, "23514", ["ttl >= 20"]),
        ({"retry_timeout": 2}, "23514", ["retry_timeout >= 3"]),
        ({"ttl": "soon"}, "22023", ["ttl is an integer"]),
        ({"maximum_lag_on_failover": -5}, "23514", ["maximum_lag_on_failover >= 0"]),
        ({"postgresql": {"parameters": {"max_connections": 10}}}, "23514", ["max_connections >= 25"]),
        ({"postgresql": {"parameters": {"wal_level": "minimal"}}}, "23514", ["wal_level"]),
        ({"postgresql": {"parameters": {"port": 5999}}}, "23514", ["port is not dynamic"]),
        ({"postgresql": {"data_dir": "/elsewhere"}}, "23514", ["local settings"]),
        ({"synchronous_mode": "sometimes"}, "22023", ["synchronous_mode"]),
        ([1, 2], "22023", ["patch", "JSON object"]),
    ],
)
def test_refused_patches(pdb, etcd, cluster, patch, sqlstate, words):
    before = etcd.get_kv(f"/service/{SCOPE}/config")
    for mode in ("statement", "transaction"):
        pdb.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
        expect_error(
            pdb.conn,
            "SELECT etcd_patroni_edit_config('s', 'demo', %s::jsonb)",
            (json.dumps(patch),),
            sqlstate=sqlstate,
            contains=words,
        )
    assert etcd.get_kv(f"/service/{SCOPE}/config")["mod_revision"] == before["mod_revision"]


def test_a_patch_that_changes_nothing_writes_nothing(pdb, etcd, cluster):
    before = etcd.get_kv(f"/service/{SCOPE}/config")
    current = json.loads(before["value"])
    for mode in ("statement", "transaction"):
        pdb.execute(f"SET etcd_fdw.commit_mode = '{mode}'")
        same = pdb.scalar(
            "SELECT etcd_patroni_edit_config('s', 'demo', %s::jsonb)",
            (json.dumps({"ttl": current["ttl"], "no_such_key": None}),),
        )
        assert same == current
    assert etcd.get_kv(f"/service/{SCOPE}/config")["mod_revision"] == before["mod_revision"]


def test_edit_config_arguments(pdb, cluster):
    expect_error(pdb.conn, "SELECT etcd_patroni_edit_config('s', 'demo', NULL)", sqlstate="22004",
                 contains=["patch"])
    expect_error(pdb.conn, "SELECT etcd_patroni_edit_config('s', 'nosuch', '{}')", sqlstate="P0002",
                 contains=["/service/nosuch/config"])
    expect_error(pdb.conn, "SELECT etcd_patroni_edit_config('s', '', '{}')", sqlstate="22023",
                 contains=["scope"])


def test_import_foreign_schema_layout_patroni(pdb, cluster):
    pdb.execute("CREATE SCHEMA p")
    pdb.execute(
        "IMPORT FOREIGN SCHEMA \"/service/demo/\" FROM SERVER s INTO p OPTIONS (layout 'patroni', metadata 'true')"
    )
    tables = [r[0] for r in pdb.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'p' ORDER BY 1"
    )]
    assert tables == ["config", "failover", "history", "initialize", "leader", "members", "status", "sync"]
    assert pdb.rows("SELECT key, value->>'role' FROM p.members ORDER BY key") == [
        ("/service/demo/members/n1", "primary"),
        ("/service/demo/members/n2", "replica"),
    ]
    assert pdb.rows("SELECT value FROM p.leader") == [("n1",)]
    assert pdb.scalar("SELECT (value->>'ttl')::int FROM p.config") == 20
    assert pdb.scalar("SELECT lease <> 0 FROM p.leader") is True
    assert pdb.scalar("SELECT value->'optime' IS NOT NULL FROM p.status") is True
    assert pdb.scalar("SELECT count(*) FROM p.failover") == 0
    types = dict(pdb.rows(
        "SELECT c.relname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'p' AND a.attname = 'value'"
    ))
    assert types == {"config": "jsonb", "failover": "jsonb", "history": "jsonb", "initialize": "text",
                     "leader": "text", "members": "jsonb", "status": "jsonb", "sync": "jsonb"}
    # option checks: a bad layout, and options the layout decides
    pdb.execute("CREATE SCHEMA q")
    expect_error(pdb.conn, "IMPORT FOREIGN SCHEMA \"/service/demo/\" FROM SERVER s INTO q OPTIONS (layout 'zookeeper')",
                 sqlstate="HV024", contains=["layout", "zookeeper"])
    expect_error(pdb.conn,
                 "IMPORT FOREIGN SCHEMA \"/service/demo/\" FROM SERVER s INTO q OPTIONS (layout 'patroni', value_type 'text')",
                 sqlstate="HV024", contains=["value_type", "layout"])
    expect_error(pdb.conn, "IMPORT FOREIGN SCHEMA \"/service/none/\" FROM SERVER s INTO q OPTIONS (layout 'patroni')",
                 sqlstate="HV00Q", contains=["/service/none/"])
    # without the layout the single keys are skipped (the old behaviour)
    pdb.execute("IMPORT FOREIGN SCHEMA \"/service/demo/\" FROM SERVER s INTO q")
    assert [r[0] for r in pdb.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'q'"
    )] == ["members"]


def test_paused_replica_lags_and_its_lease_runs_down(pdb, cluster):
    """SIGSTOP n2's Patroni: its member key keeps its last xlog_location
    while the leader's optime moves on, and its lease is not refreshed."""
    n1, n2 = cluster["n1"], cluster["n2"]
    start = members(pdb)["n2"]
    sigstop_and_wait(n2.proc.pid)
    try:
        with pg(n1) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS lag_filler AS SELECT g FROM generate_series(1, 50000) g")
            conn.execute("SELECT pg_switch_wal()")
        m = wait_until(
            lambda: (lambda x: x if x["lag_bytes"] and x["lag_bytes"] > 0 else None)(members(pdb)["n2"]),
            "the paused replica to lag behind the leader's optime",
            timeout=30,
        )
        opt = pdb.scalar("SELECT optime FROM etcd_patroni_cluster('s', 'demo')")
        assert m["lag_bytes"] == pdb.scalar("SELECT %s::pg_lsn - %s::pg_lsn", (opt, m["lsn"]))
        wait_until(lambda: members(pdb)["n2"]["lease_ttl_left"] < start["lease_ttl_left"],
                   "n2's lease TTL to go down", timeout=30)
    finally:
        os.kill(n2.proc.pid, signal.SIGCONT)
    wait_until(lambda: members(pdb)["n2"]["lease_ttl_left"] >= 15,
               "n2's lease refreshed again after SIGCONT", timeout=60)


@pytest.mark.last_in_module  # n2 becomes the leader for good
def test_switchover_shows_up(pdb, cluster):
    n1 = cluster["n1"]
    n1.ctl("switchover", "--leader", "n1", "--candidate", "n2", "--force", SCOPE)

    def switched():
        m = members(pdb)
        return (
            m.get("n2", {}).get("is_leader") and m["n2"]["role"] == "primary"
            and m.get("n1", {}).get("role") == "replica" and m["n1"]["state"] == "running"
            and m["n2"]["timeline"] == 2
        ) and m

    m = wait_until(switched, "n2 primary and n1 a running replica after the switchover", timeout=120)
    assert m["n1"]["is_leader"] is False
    c = cluster_row(pdb)
    assert c["leader"] == "n2"
    assert c["history"] is not None and c["history"][0][0] == 1


@pytest.mark.last_in_module  # kills n1 of the shared cluster
def test_killed_patroni_member_key_expires(pdb, cluster):
    """Kill n1's Patroni (and its PostgreSQL) outright: nothing deletes its
    member key, whose lease (ttl 20 s) runs out."""
    n1 = cluster["n1"]
    before = members(pdb)["n1"]
    os.kill(n1.proc.pid, signal.SIGKILL)
    n1.proc.wait(timeout=30)
    n1.stop()  # the postmaster, by its pid
    wait_until(lambda: members(pdb).get("n1", {}).get("lease_ttl_left", 99) < before["lease_ttl_left"],
               "n1's lease to run down", timeout=30)
    wait_until(lambda: "n1" not in members(pdb), "n1's member key to expire", timeout=60)
    assert cluster_row(pdb)["members"] == 1
