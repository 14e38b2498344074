//! `dump_database`: a whole-database `pg_dump` for operators who want the old behaviour, with
//! the same atomic write, naming, exit-status check, completeness check and rotation.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::files::{self, TempFile};
use super::reader::{Auth, BackupFile};
use crate::config::Settings;
use crate::errors::{Error, Result};
use crate::pool::{Context, LazyPool};

/// Finds `pg_dump`: the given path, else the first on `PATH`.
fn find_pg_dump(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("pg_dump"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            Error::Backup(
                "pg_dump was not found on PATH; install the PostgreSQL client of the server's \
                 version (Debian: postgresql-client-NN) or pass its path"
                    .into(),
            )
        })
}

/// The major version in `pg_dump --version` ("pg_dump (PostgreSQL) 15.20 (Debian ...)").
fn major_of(version_text: &str) -> Option<u32> {
    version_text
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
}

fn run_version(exe: &Path) -> Result<u32> {
    let out = Command::new(exe)
        .arg("--version")
        .output()
        .map_err(|e| Error::Backup(format!("cannot run {}: {e}", exe.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    major_of(&text).ok_or_else(|| {
        Error::Backup(format!(
            "{} --version printed no version: {text:?}",
            exe.display()
        ))
    })
}

/// Dumps the whole database with pg_dump into `dir`; rotates to `keep` (None: no rotation).
pub fn dump_database(
    pool: &LazyPool,
    dir: &Path,
    keep: Option<usize>,
    pg_dump: Option<&Path>,
) -> Result<super::BackupInfo> {
    if keep == Some(0) {
        return Err(Error::invalid("keep must be at least 1"));
    }
    let started = std::time::Instant::now();
    let exe = find_pg_dump(pg_dump)?;
    let client_major = run_version(&exe)?;
    let server_num: i32 = pool.run(|c| {
        let v: String = c
            .query_one("SHOW server_version_num", &[])
            .context("reading the server version")?
            .get(0);
        Ok(v.parse().unwrap_or(0))
    })?;
    let server_major = u32::try_from(server_num / 10_000).unwrap_or(0);
    if client_major < server_major {
        return Err(Error::Backup(format!(
            "pg_dump {client_major} ({}) is older than the server ({server_major}) and cannot \
             dump it; install postgresql-client-{server_major}",
            exe.display()
        )));
    }
    files::ensure_dir(dir)?;
    let settings = pool.settings();
    let mut cmd = Command::new(&exe);
    cmd.args(["--format=plain", "--no-password"]);
    connect_as_we_do(&mut cmd, settings);
    let (tmp, file) = TempFile::create(dir)?;
    let out_file = file
        .try_clone()
        .map_err(|e| Error::Backup(format!("cannot prepare the dump file: {e}")))?;
    let mut child = cmd
        .stdout(Stdio::from(out_file))
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Backup(format!("cannot run {}: {e}", exe.display())))?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(64 * 1024).read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| Error::Backup(format!("waiting for pg_dump failed: {e}")))?;
    if !status.success() {
        return Err(Error::Backup(format!(
            "pg_dump failed ({status}): {}; no backup was written",
            stderr.trim()
        ))
        .scrub(settings.password()));
    }
    let path = tmp.publish(file, dir, super::format::Compression::None)?;
    let checked = BackupFile::open(&path).and_then(|f| {
        let v = f.verify(&Auth::default())?;
        Ok((f, v))
    });
    let (dumped, verified) = checked.inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
    })?;
    if let Some(keep) = keep {
        super::cleanup_old_backups(dir, keep, Some(&path), &Auth::from_env()?, false)?;
    }
    let mut info = super::info(&dumped, verified, Some(started.elapsed().as_secs_f64()));
    info.server_version = Some(server_num.to_string());
    log::info!("pg_dump backup {} written", path.display());
    Ok(info)
}

/// pg_dump's connection as the pool's: the libpq keywords psycopg2 connections get
/// ([`Settings::dbapi_params`]: every host and port, database, user, TLS, channel binding,
/// options, target_session_attrs, application_name, connect_timeout, keepalives) as one
/// connection string in `--dbname`, each value quoted as libpq reads it (a database name
/// holding `=` stays a name). The password travels in the environment, never on the command
/// line.
fn connect_as_we_do(cmd: &mut Command, settings: &Settings) {
    let conninfo: Vec<String> = settings
        .dbapi_params()
        .into_iter()
        .filter(|(key, _)| *key != "password")
        .map(|(key, value)| format!("{key}={}", conninfo_value(&value)))
        .collect();
    cmd.arg("--dbname").arg(conninfo.join(" "));
    if let Some(pw) = settings.password() {
        cmd.env("PGPASSWORD", pw);
    }
}

/// A value of a libpq connection string: bare when it is a plain word, otherwise in single
/// quotes with `\` and `'` escaped.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            major_of("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(major_of("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(major_of("nothing here"), None);
    }
}
