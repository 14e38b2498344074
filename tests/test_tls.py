"""TLS against a real PostgreSQL that accepts TLS only (its own CA and server certificate made
with openssl at test time, `hostssl`-only pg_hba): every sslmode, verify-full with the right and
wrong CA and host name, client certificates, backups, restores and pg_dump over TLS."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pgcluster
import psycopg
import pytest
from conftest import counted
from job_manager import (
    ConfigurationError,
    DatabaseUnavailableError,
    JobManager,
)
from nethelpers import Certs, Proxy, make_certs, start_tls_cluster


@dataclass
class TlsServer:
    cluster: pgcluster.Cluster
    certs: Certs

    def url(
        self, host: str = "localhost", user: str = "postgres", db: str = "postgres", **params: str
    ) -> str:
        auth = f"{user}:{self.cluster.password}" if user == "postgres" else user
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{auth}@{host}:{self.cluster.port}/{db}" + (
            f"?{query}" if query else ""
        )

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.cluster.port} user=postgres "
            f"password={self.cluster.password} dbname=postgres sslmode=require",
            autocommit=True,
        )


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsServer]:
    base = Path(tempfile.mkdtemp(prefix="jm-tls-"))
    base.chmod(0o755)
    certs = make_certs(base / "certs")
    cluster = start_tls_cluster(base / "cluster", certs)
    server = TlsServer(cluster, certs)
    with server.admin() as c:
        c.execute("CREATE ROLE certuser LOGIN")
        c.execute("CREATE DATABASE jm_tls OWNER certuser")
    try:
        yield server
    finally:
        pgcluster.stop(Path(cluster.base))
        shutil.rmtree(base, ignore_errors=True)


def ssl_of(server: TlsServer, app: str) -> bool | None:
    with server.admin() as c:
        row = c.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = %s",
            (app,),
        ).fetchone()
    return None if row is None else row[0]


@pytest.mark.parametrize("mode", ["require", "prefer", "allow"])
def test_tls_without_verification(tls: TlsServer, mode: str) -> None:
    jm = JobManager(tls.url(sslmode=mode), application_name=f"tls-{mode}")
    jm.check_table_exists("jobs")
    assert ssl_of(tls, f"tls-{mode}") is True
    jm.close()


def test_disable_is_refused_by_a_tls_only_server(tls: TlsServer) -> None:
    jm = JobManager(tls.url(sslmode="disable"), connect_timeout=5)
    with pytest.raises(ConfigurationError, match="no encryption"):
        jm.get_job_stats()


def test_verify_full_with_the_right_ca_and_host(tls: TlsServer) -> None:
    jm = JobManager(
        tls.url(sslmode="verify-full", sslrootcert=str(tls.certs.ca)), application_name="vf"
    )
    jm.check_table_exists("jobs")
    assert ssl_of(tls, "vf") is True
    jm.close()


def test_verify_full_key_value_dsn(tls: TlsServer) -> None:
    dsn = (
        f"host=localhost port={tls.cluster.port} user=postgres password='{tls.cluster.password}' "
        f"dbname=postgres sslmode=verify-full sslrootcert='{tls.certs.ca}' application_name=kv"
    )
    jm = JobManager(dsn)
    jm.check_table_exists("jobs")
    assert ssl_of(tls, "kv") is True
    assert jm.sslmode == "verify-full"
    jm.close()


def test_verify_full_with_a_wrong_ca_is_a_configuration_error(tls: TlsServer) -> None:
    jm = JobManager(
        tls.url(sslmode="verify-full", sslrootcert=str(tls.certs.other_ca)), connect_timeout=5
    )
    with pytest.raises(ConfigurationError, match="certificate was not accepted") as info:
        jm.get_job_stats()
    assert tls.cluster.password not in str(info.value)


def test_verify_full_with_a_wrong_host_name_is_a_configuration_error(
    tls: TlsServer, faults: object
) -> None:
    """The server's certificate names `localhost` only: 127.0.0.1 is the same server under a
    name the certificate does not carry."""
    jm = JobManager(
        tls.url(host="127.0.0.1", sslmode="verify-full", sslrootcert=str(tls.certs.ca)),
        connect_timeout=5,
    )
    try:
        jm.get_job_stats()
        answered, refusal = 1, ""
    except ConfigurationError as e:
        answered, refusal = 0, str(e)
    faults.record(  # type: ignore[attr-defined]
        "TLS server whose certificate names another host (localhost, reached as 127.0.0.1)",
        "sslmode=verify-full with the right CA against a hostssl-only server: "
        "ConfigurationError before any query, naming sslrootcert and the host name",
        1,
        counted(calls_answered_over_the_wrong_certificate=answered),
    )
    assert re.search(r"certificate was not accepted.*host name", refusal), refusal


def test_verify_ca_checks_the_chain_not_the_name(tls: TlsServer) -> None:
    ok = JobManager(tls.url(host="127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls.certs.ca)))
    ok.check_table_exists("jobs")
    ok.close()
    wrong = JobManager(
        tls.url(host="127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls.certs.other_ca)),
        connect_timeout=5,
    )
    with pytest.raises(ConfigurationError, match="certificate"):
        wrong.get_job_stats()


def test_system_roots_do_not_trust_a_private_ca(tls: TlsServer) -> None:
    jm = JobManager(tls.url(sslrootcert="system"), connect_timeout=5)
    assert jm.sslmode == "verify-full"
    with pytest.raises(ConfigurationError, match="certificate"):
        jm.get_job_stats()


def test_client_certificate_login(tls: TlsServer) -> None:
    jm = JobManager(
        tls.url(
            user="certuser",
            db="jm_tls",
            sslmode="verify-full",
            sslrootcert=str(tls.certs.ca),
            sslcert=str(tls.certs.client_cert),
            sslkey=str(tls.certs.client_key),
        ),
        application_name="cert-login",
    )
    jm.init_database()
    assert jm.add_job("over tls", "IMAGE_TEST") > 0
    assert ssl_of(tls, "cert-login") is True
    jm.close()


def test_client_certificate_refused_without_the_certificate(tls: TlsServer) -> None:
    jm = JobManager(
        tls.url(user="certuser", db="jm_tls", sslmode="verify-full", sslrootcert=str(tls.certs.ca)),
        connect_timeout=5,
    )
    with pytest.raises(ConfigurationError):
        jm.get_job_stats()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"sslmode": "verify-full"}, "sslrootcert"),
        ({"sslmode": "sometimes"}, "sslmode"),
        ({"sslmode": "require", "sslrootcert": "system"}, "verify-full"),
        ({"sslmode": "require", "sslrootcert": "/nonexistent/ca.pem"}, "sslrootcert"),
        ({"sslmode": "require", "sslcert": "/nonexistent/c.pem"}, "sslcert and sslkey"),
    ],
)
def test_bad_tls_settings_are_configuration_errors(
    tls: TlsServer, params: dict, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        JobManager(tls.url(**params))


def test_a_key_others_can_read_is_refused(tls: TlsServer, tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    shutil.copy(tls.certs.client_key, key)
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by other users"):
        JobManager(
            tls.url(
                user="certuser",
                sslmode="require",
                sslcert=str(tls.certs.client_cert),
                sslkey=str(key),
            )
        )


def test_backup_restore_and_pg_dump_over_tls(tls: TlsServer, tmp_path: Path) -> None:
    with tls.admin() as c:
        c.execute("DROP DATABASE IF EXISTS jm_tls_backup")
        c.execute("CREATE DATABASE jm_tls_backup")
    jm = JobManager(
        tls.url(db="jm_tls_backup", sslmode="verify-full", sslrootcert=str(tls.certs.ca))
    )
    jm.init_database()
    jm.add_jobs([f"tls {i}" for i in range(50)], "IMAGE_TEST")
    info = jm.backup_database(tmp_path / "ours")
    jm.add_job("after backup", "IMAGE_TEST")
    restored = jm.restore_database(info.path, safety_backup=True, backup_dir=tmp_path / "safety")
    assert restored is not None
    assert sum(jm.get_job_stats()["IMAGE_TEST"].values()) == 50
    dumped = jm.dump_database(tmp_path / "dump")
    assert Path(dumped.path).stat().st_size > 0
    jm.close()


def test_a_silent_tls_connection_is_bounded_by_io_timeout(tls: TlsServer) -> None:
    """The deadline sits under TLS too: a blackholed TLS connection ends at io_timeout."""
    proxy = Proxy(tls.cluster.port)
    try:
        url = tls.url(sslmode="verify-full", sslrootcert=str(tls.certs.ca)).replace(
            f"localhost:{tls.cluster.port}", f"localhost:{proxy.port}"
        )
        jm = JobManager(url, connect_timeout=1, io_timeout=1, application_name="tls-silent")
        jm.check_table_exists("jobs")
        assert ssl_of(tls, "tls-silent") is True
        proxy.blackhole(new_connections=True)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            jm.check_table_exists("jobs")
        assert time.monotonic() - started < 1 + 1 + 1.5
    finally:
        proxy.close()


def test_get_connection_uses_the_same_tls_settings(tls: TlsServer) -> None:
    """#21: get_connection()'s psycopg2 connections verify the server as the pool does, and a
    wrong CA is the same typed error, without the password."""
    jm = JobManager(
        tls.url(sslmode="verify-full", sslrootcert=str(tls.certs.ca)), application_name="gc-vf"
    )
    with jm.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
        assert conn.get_dsn_parameters()["sslmode"] == "verify-full"
    jm.close()
    wrong = JobManager(
        tls.url(sslmode="verify-full", sslrootcert=str(tls.certs.other_ca)), connect_timeout=5
    )
    with pytest.raises(ConfigurationError, match="certificate verify failed") as info:
        wrong.get_connection().__enter__()
    assert tls.cluster.password not in str(info.value)


def test_require_with_a_root_certificate_is_verify_ca(tls: TlsServer) -> None:
    """As in libpq: `sslmode=require` plus `sslrootcert` checks the chain (a wrong CA fails),
    not the host name (127.0.0.1 is not in the certificate, and connects)."""
    ok = JobManager(tls.url(host="127.0.0.1", sslmode="require", sslrootcert=str(tls.certs.ca)))
    ok.check_table_exists("jobs")
    ok.close()
    wrong = JobManager(
        tls.url(host="127.0.0.1", sslmode="require", sslrootcert=str(tls.certs.other_ca)),
        connect_timeout=5,
    )
    with pytest.raises(ConfigurationError, match="certificate was not accepted"):
        wrong.get_job_stats()


def test_scram_channel_binding_over_tls(tls: TlsServer, dsn: str) -> None:
    """`channel_binding=require` logs in over TLS (SCRAM-SHA-256-PLUS, bound to the server's
    certificate), and is refused where no TLS channel exists to bind to."""
    jm = JobManager(tls.url(sslmode="require", channel_binding="require"), application_name="cb")
    jm.check_table_exists("jobs")
    assert ssl_of(tls, "cb") is True
    jm.close()
    plain = JobManager(f"{dsn}?sslmode=disable&channel_binding=require", connect_timeout=5)
    # Refused, never made unbound; and a refused login is the DSN's fault (ConfigurationError,
    # as the errors table says), not an unavailable server: nothing is retried or waited for.
    with pytest.raises(ConfigurationError, match="server did not use channel binding") as err:
        plain.get_job_stats()
    assert "channel_binding" in str(err.value)
    assert "sslmode" in str(err.value)
    plain.close()
