"""TLS interoperability: every certificate set-up etcdctl accepts against an
etcd works through etcd_fdw too, and one that fails names the file and why.

The PKI is made with the openssl CLI the way people make theirs by hand:
`openssl x509 -req` without extensions gives X.509 v1 certificates (a v1
CA, v1 client certificates), keys in PKCS#8 (OpenSSL 3's default), PKCS#1
(`-traditional`) and SEC1 (`ecparam -genkey`), RSA and ECDSA, a CA bundle
with an unrelated CA first, and a client certificate issued by an
intermediate CA with the intermediate after it in the same file.  The
server certificate has SANs (etcdctl, Go, requires them).  Each set-up is
first checked with etcdctl against the same etcd: the ground truth.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from harness import (
    ETCD35,
    EtcdServer,
    assert_session_usable,
    err_text,
    expect_error,
    give_to_postgres,
    register_cleanup,
    rmtree_quiet,
    unregister_cleanup,
)

ETCD_VERSION = ETCD35


class InteropPKI:
    """Files in a temp dir; `server_cert`/`server_key`/`ca`/`client_cert`/
    `client_key` are what EtcdServer needs (ca = the bundle etcd trusts)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="etcdfdw-pki-")
        os.chmod(self.dir, 0o755)
        self._cleanup = register_cleanup(self.destroy)
        self._generate()

    def path(self, name):
        return os.path.join(self.dir, name)

    def sh(self, *args):
        p = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True, timeout=60)
        assert p.returncode == 0, f"openssl {' '.join(args)}: {p.stderr.decode(errors='replace')}"

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)

    def cat(self, out, *names):
        self.write(out, "".join(open(self.path(n)).read() for n in names))

    def rsa_key(self, name):
        self.sh("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", name)

    def ec_key_sec1(self, name):
        self.sh("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", name)

    def sign_v1(self, name, key, cn, ca):
        """A certificate without extensions: X.509 v1."""
        self.sh("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", f"{name}.csr")
        self.sh("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "3")

    def sign_v3(self, name, key, cn, ca, ext):
        self.write(f"{name}.ext", ext)
        self.sh("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", f"{name}.csr")
        self.sh("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext")

    def _generate(self):
        # a v1 CA: self-signed with x509 -req -signkey
        self.rsa_key("ca1.key")
        self.sh("req", "-new", "-key", "ca1.key", "-subj", "/CN=v1 test CA", "-out", "ca1.csr")
        self.sh("x509", "-req", "-in", "ca1.csr", "-signkey", "ca1.key", "-out", "ca1.crt", "-days", "3")
        # the server: v3 with SANs, signed by the v1 CA
        self.rsa_key("server.key")
        self.sign_v3("server", "server.key", "localhost", "ca1",
                     "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
        # a v3 root and an intermediate CA (ECDSA)
        ca_ext = "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        self.ec_key_sec1("root2.key")
        self.write("root2.ext", ca_ext)
        self.sh("req", "-x509", "-new", "-key", "root2.key", "-subj", "/CN=v3 root CA",
                "-out", "root2.crt", "-days", "3")
        self.ec_key_sec1("inter2.key")
        self.sign_v3("inter2", "inter2.key", "intermediate CA", "root2", ca_ext)
        # an unrelated CA, for a bundle
        self.ec_key_sec1("other.key")
        self.sh("req", "-x509", "-new", "-key", "other.key", "-subj", "/CN=unrelated CA",
                "-out", "other.crt", "-days", "3")
        # what etcd trusts for client certificates
        self.cat("etcd-trusted.crt", "ca1.crt", "root2.crt")
        self.cat("bundle.crt", "other.crt", "ca1.crt")

        # clients
        self.rsa_key("c_rsa.key")  # PKCS#8 ("BEGIN PRIVATE KEY")
        self.sign_v1("c_rsa_v1", "c_rsa.key", "rsa v1 client", "ca1")
        self.sh("rsa", "-in", "c_rsa.key", "-traditional", "-out", "c_rsa_pkcs1.key")
        self.ec_key_sec1("c_ec_sec1.key")  # "BEGIN EC PRIVATE KEY"
        self.sign_v1("c_ec_v1", "c_ec_sec1.key", "ec v1 client", "ca1")
        self.sh("pkcs8", "-topk8", "-nocrypt", "-in", "c_ec_sec1.key", "-out", "c_ec_pkcs8.key")
        self.sign_v3("c_rsa_v3", "c_rsa.key", "rsa v3 client", "ca1",
                     "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n")
        self.ec_key_sec1("c_chain.key")
        self.sign_v3("c_chain_leaf", "c_chain.key", "chained client", "inter2",
                     "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n")
        self.cat("c_chain.crt", "c_chain_leaf.crt", "inter2.crt")
        # broken material
        self.write("garbage.crt", "this is not a certificate\n")
        self.sh("pkey", "-in", "c_rsa.key", "-aes256", "-passout", "pass:secret", "-out", "c_rsa_enc.key")
        for fn in os.listdir(self.dir):
            give_to_postgres(self.path(fn), 0o600 if fn.endswith(".key") else 0o644)

    # EtcdServer's interface
    server_cert = property(lambda self: self.path("server.crt"))
    server_key = property(lambda self: self.path("server.key"))
    ca = property(lambda self: self.path("etcd-trusted.crt"))
    client_cert = property(lambda self: self.path("c_rsa_v1.crt"))
    client_key = property(lambda self: self.path("c_rsa.key"))

    def destroy(self):
        unregister_cleanup(self._cleanup)
        rmtree_quiet(self.dir)


@pytest.fixture(scope="module")
def pki():
    p = InteropPKI()
    try:
        yield p
    finally:
        p.destroy()


@pytest.fixture(scope="module")
def etcd_pki(pki):
    srv = EtcdServer(ETCD_VERSION, certs=pki, client_cert_auth=True)
    try:
        srv.start()
        srv.put("tls/a", "1")
        yield srv
    finally:
        srv.destroy()


def etcdctl_ok(srv, endpoint, ca, cert, key):
    p = subprocess.run(
        [srv.etcdctl_bin, "--endpoints", endpoint, "--cacert", ca, "--cert", cert, "--key", key,
         "--dial-timeout", "3s", "--command-timeout", "5s", "get", "tls/a", "--print-value-only"],
        capture_output=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
    )
    return p.returncode == 0 and p.stdout.strip() == b"1", p.stderr.decode(errors="replace")[-500:]


# (ssl_ca, ssl_cert, ssl_key) as file names in the PKI dir
ACCEPTED = {
    "v1 CA, v1 RSA client, PKCS#8 key": ("ca1.crt", "c_rsa_v1.crt", "c_rsa.key"),
    "v1 RSA client, PKCS#1 key": ("ca1.crt", "c_rsa_v1.crt", "c_rsa_pkcs1.key"),
    "v1 ECDSA client, SEC1 key": ("ca1.crt", "c_ec_v1.crt", "c_ec_sec1.key"),
    "v1 ECDSA client, PKCS#8 key": ("ca1.crt", "c_ec_v1.crt", "c_ec_pkcs8.key"),
    "v3 RSA client": ("ca1.crt", "c_rsa_v3.crt", "c_rsa.key"),
    "CA bundle, unrelated CA first": ("bundle.crt", "c_rsa_v1.crt", "c_rsa.key"),
    "client certificate with its intermediate": ("ca1.crt", "c_chain.crt", "c_chain.key"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_setups_etcdctl_accepts_work(db, pki, etcd_pki, case, host):
    ca, cert, key = (pki.path(f) for f in ACCEPTED[case])
    endpoint = f"https://{host}:{etcd_pki.port}"
    ok, why = etcdctl_ok(etcd_pki, endpoint, ca, cert, key)
    assert ok, f"etcdctl refuses {case}: {why}"
    db.create_server("s", endpoint, ssl_ca=ca, ssl_cert=cert, ssl_key=key,
                     connect_timeout="3", request_timeout="5")
    db.create_table("t", "s", prefix="tls/")
    assert db.rows("SELECT key, value FROM t") == [("tls/a", "1")], case
    db.execute("INSERT INTO t VALUES ('tls/w', %s)", (case,))
    assert etcd_pki.get("tls/w") == case.encode()
    etcd_pki.ctl("del", "tls/w")


def test_leaf_without_its_intermediate_fails_for_both(db, pki, etcd_pki):
    """etcd cannot build the chain: etcdctl fails, and so does etcd_fdw (not
    hanging, with a TLS error)."""
    ca, cert, key = pki.path("ca1.crt"), pki.path("c_chain_leaf.crt"), pki.path("c_chain.key")
    ok, _why = etcdctl_ok(etcd_pki, etcd_pki.url, ca, cert, key)
    assert not ok
    db.create_server("s", etcd_pki.url, ssl_ca=ca, ssl_cert=cert, ssl_key=key,
                     connect_timeout="3", request_timeout="5")
    db.create_table("t", "s", prefix="tls/")
    e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N")
    # TLS 1.3: etcd's refusal is an alert after our side of the handshake
    # is done; it is reported as the refusal of ssl_cert, not as the
    # failure ("etcd request failed: transport error") of the first request
    text = err_text(e)
    assert "refused the client certificate" in text and cert in text and "alert" in text, text
    assert "etcd request failed" not in text, text
    assert_session_usable(db.conn)


BROKEN = [
    # (ssl_ca, ssl_cert, ssl_key, option named, words in the reason)
    ("ca1.crt", "garbage.crt", "c_rsa.key", "ssl_cert", "no PEM certificate"),
    ("garbage.crt", "c_rsa_v1.crt", "c_rsa.key", "ssl_ca", "no PEM certificate"),
    ("ca1.crt", "c_rsa_v1.crt", "c_ec_sec1.key", "ssl_key", "does not match the certificate"),
    ("ca1.crt", "c_rsa_v1.crt", "c_rsa_enc.key", "ssl_key", "unencrypted PEM private key"),
    ("ca1.crt", "c_rsa_v1.crt", "garbage.crt", "ssl_key", "PEM private key"),
]


@pytest.mark.parametrize("ca,cert,key,option,why", BROKEN, ids=[b[3] + ": " + b[4] for b in BROKEN])
def test_broken_files_name_the_option_file_and_reason(db, pki, etcd_pki, ca, cert, key, option, why):
    files = {"ssl_ca": pki.path(ca), "ssl_cert": pki.path(cert), "ssl_key": pki.path(key)}
    db.create_server("s", etcd_pki.url, connect_timeout="3", request_timeout="5", **files)
    db.create_table("t", "s", prefix="tls/")
    e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N")
    text = err_text(e)
    assert option in text and files[option] in text and why in text, text
    assert "secret" not in text
    assert_session_usable(db.conn)


def test_server_certificate_from_another_ca_says_what_was_checked(db, pki, etcd_pki):
    db.create_server("s", etcd_pki.url, ssl_ca=pki.path("other.crt"),
                     ssl_cert=pki.path("c_rsa_v1.crt"), ssl_key=pki.path("c_rsa.key"),
                     connect_timeout="3", request_timeout="5")
    db.create_table("t", "s", prefix="tls/")
    e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N")
    text = err_text(e)
    assert "verify failed" in text and pki.path("other.crt") in text and '"127.0.0.1"' in text, text


def test_server_name_mismatch_says_which_name(db, pki, etcd_pki):
    db.create_server("s", etcd_pki.url, ssl_ca=pki.path("ca1.crt"),
                     ssl_cert=pki.path("c_rsa_v1.crt"), ssl_key=pki.path("c_rsa.key"),
                     ssl_servername="etcd.example.org", connect_timeout="3", request_timeout="5")
    db.create_table("t", "s", prefix="tls/")
    e = expect_error(db.conn, "SELECT * FROM t", sqlstate="HV00N")
    text = err_text(e)
    assert "verify failed" in text and "etcd.example.org" in text, text
