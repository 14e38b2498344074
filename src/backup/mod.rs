//! Backup, verify, restore and retention of the tables job_manager owns.
//!
//! * `backup_database` writes one plain SQL file from one consistent snapshot (COPY, streamed),
//!   atomically: temporary file, fsync, link under its final name, fsync the directory.
//! * `verify_backup` reads a file in full: header, structure, row counts, SHA-256.
//! * `restore_database` verifies first, runs the migrations, takes a safety backup, then
//!   replaces the owned tables in ONE transaction; nothing else is touched.
//! * `cleanup_old_backups` keeps the newest `keep` backups that verify, never the others'
//!   files, never a file whose name is not a backup name.

mod dump;
mod files;
pub mod format;
pub mod grammar;
mod import;
pub mod key;
pub mod parallel;
mod pgdump;
pub mod reader;
mod restore;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};

use crate::errors::{Error, Result};
use crate::pool::LazyPool;
use crate::schema::{self, InitOptions};
pub use format::Kind;
pub use import::{import_jobs, ImportInfo, Mode};
pub use key::Key;
pub use pgdump::dump_database;
pub use reader::{Auth, BackupFile};

/// What a backup file is and holds.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Rows per data table.
    pub rows: BTreeMap<String, u64>,
    /// How long writing it took (only for a backup just made).
    pub duration_s: Option<f64>,
    pub kind: Kind,
    pub compression: format::Compression,
    pub schema_version: Option<i32>,
    pub server_version: Option<String>,
    /// Why the file does not verify (only from `list_backups`).
    pub problem: Option<String>,
    /// The file carries an HMAC line.
    pub signed: bool,
    /// Its HMAC was checked against the configured backup key and matched.
    pub authenticated: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreInfo {
    pub path: PathBuf,
    pub rows: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub safety_backup: Option<PathBuf>,
    pub kind: Kind,
}

fn info(file: &BackupFile, v: reader::Verified, duration_s: Option<f64>) -> BackupInfo {
    let path = file.path();
    let created_at = v.header.created_at.or_else(|| {
        // pg_dump files: the time in the name, else the file's modification time.
        let name = path.file_name()?.to_str()?;
        files::parse_backup_name(name)
            .map(|t| Utc.from_utc_datetime(&t))
            .or_else(|| {
                let modified = std::fs::metadata(path).ok()?.modified().ok()?;
                Some(DateTime::<Utc>::from(modified))
            })
    });
    let ours = v.kind == Kind::JobManager;
    BackupInfo {
        path: path.to_path_buf(),
        size_bytes: file.size,
        sha256: v.sha256,
        created_at,
        rows: v.rows,
        duration_s,
        kind: v.kind,
        compression: v.compression,
        schema_version: ours.then_some(v.header.schema_version),
        server_version: ours.then_some(v.header.server_version),
        problem: None,
        signed: v.signed,
        authenticated: v.authenticated,
    }
}

/// Reads a backup in full and checks every line of it; `BackupCorrupt` when it does not
/// verify (or, with a backup key configured, is not signed with it).
pub fn verify_backup(path: &Path, auth: &Auth) -> Result<BackupInfo> {
    let file = BackupFile::open(path)?;
    let v = file.verify(auth)?;
    Ok(info(&file, v, None))
}

/// Every file of `dir` named like a backup, newest first, with what verification found.
pub fn list_backups(dir: &Path, auth: &Auth) -> Result<Vec<BackupInfo>> {
    Ok(files::backup_files(dir)?
        .into_iter()
        .map(|(path, stamp)| match verify_backup(&path, auth) {
            Ok(i) => i,
            Err(e) => BackupInfo {
                size_bytes: std::fs::symlink_metadata(&path).map_or(0, |m| m.len()),
                path,
                sha256: String::new(),
                created_at: Some(Utc.from_utc_datetime(&stamp)),
                rows: BTreeMap::new(),
                duration_s: None,
                kind: Kind::JobManager,
                compression: format::Compression::None,
                schema_version: None,
                server_version: None,
                problem: Some(e.to_string()),
                signed: false,
                authenticated: false,
            },
        })
        .collect())
}

/// When a job_manager backup's header says it was written (only the header is read).
fn header_created_at(path: &Path) -> Option<chrono::NaiveDateTime> {
    let file = BackupFile::open(path).ok()?;
    let reader = file.reader(&Auth::default()).ok()?;
    Some(reader.header()?.created_at?.naive_utc())
}

/// A verified file counts as a kept backup only if it is what its name says: written when its
/// name is dated (a job_manager backup's header records when; with a backup key that record is
/// authenticated), and not a copy of a backup already counted.
fn genuine(
    info: &BackupInfo,
    stamp: chrono::NaiveDateTime,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    if let (Kind::JobManager, Some(created)) = (info.kind, info.created_at) {
        let created = created.naive_utc();
        let late = stamp - created;
        if late < chrono::TimeDelta::seconds(-1) || late > chrono::TimeDelta::days(1) {
            return Err(Error::BackupCorrupt(format!(
                "its name is dated {stamp} but it was written at {created}: a renamed or copied \
                 backup"
            )));
        }
    }
    if !seen.insert(info.sha256.clone()) {
        return Err(Error::BackupCorrupt(
            "it is a copy of a backup already counted".into(),
        ));
    }
    Ok(())
}

/// How far ahead of this machine's clock a backup's name may be before it counts as "from
/// the future" (a clock that was ahead, a copied or planted file).
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Keeps the newest `keep` backups that verify and deletes the backups older than those.
///
/// * `protect`, the backup just made, always counts first and is never deleted.
/// * A file whose name is dated in the future is neither counted nor deleted: its name cannot
///   be trusted to order it. It is reported.
/// * A file that does not verify (with a key configured: is not signed with it) never counts
///   as a kept backup; among the newest it is left alone and reported.
/// * Files not named like a backup are never touched.
///
/// Returns the deleted paths (with `dry_run`: the paths it would delete, deleting nothing). A file that cannot be deleted is reported and the others are
/// still tried; the error then says which.
pub fn cleanup_old_backups(
    dir: &Path,
    keep: usize,
    protect: Option<&Path>,
    auth: &Auth,
    dry_run: bool,
) -> Result<Vec<PathBuf>> {
    if keep == 0 {
        return Err(Error::invalid(
            "keep must be at least 1: rotation never deletes every backup",
        ));
    }
    let horizon = Utc::now().naive_utc() + CLOCK_SKEW;
    let mut kept = usize::from(protect.is_some());
    let mut seen = std::collections::BTreeSet::new();
    if let Some(p) = protect {
        if let Ok(info) = verify_backup(p, auth) {
            seen.insert(info.sha256);
        }
    }
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    // Newest first by when each backup says it was written (its header, authenticated with a
    // key), not by its name alone: a renamed copy of an old backup sorts where it belongs.
    let mut candidates: Vec<_> = files::backup_files(dir)?
        .into_iter()
        .map(|(path, stamp)| {
            let written = header_created_at(&path).unwrap_or(stamp);
            (path, stamp, written)
        })
        .collect();
    candidates.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.1.cmp(&a.1)));
    for (path, stamp, _) in candidates {
        if protect == Some(path.as_path()) {
            continue;
        }
        if stamp > horizon {
            log::warn!(
                "leaving {} alone: its name is dated {stamp}, in the future (a clock that was \
                 ahead, or a copied file); it is not counted as a kept backup",
                path.display()
            );
            continue;
        }
        if kept >= keep {
            if dry_run {
                log::info!("would delete old backup {}", path.display());
                deleted.push(path);
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    log::info!("deleted old backup {}", path.display());
                    deleted.push(path);
                }
                Err(e) => {
                    log::warn!("cannot delete old backup {}: {e}", path.display());
                    failed.push(format!("{}: {e}", path.display()));
                }
            }
            continue;
        }
        match verify_backup(&path, auth).and_then(|info| genuine(&info, stamp, &mut seen)) {
            Ok(()) => kept += 1,
            Err(why) => log::warn!(
                "leaving {} alone and not counting it as a kept backup: {why}",
                path.display()
            ),
        }
    }
    if !deleted.is_empty() {
        files::sync_dir(dir)?;
    }
    if !failed.is_empty() {
        return Err(Error::Backup(format!(
            "rotation deleted {} old backup(s) but could not delete {}: {}",
            deleted.len(),
            failed.len(),
            failed.join("; ")
        )));
    }
    Ok(deleted)
}

/// Backs up the owned tables into `dir`, then rotates to `keep` backups (`None`: no rotation).
///
/// `streams`: the connections reading the tables in parallel, all in the backup's one
/// snapshot (`None`: decided from this machine and the server, see [`parallel::decide`]).
///
/// With a backup key in `auth`, the file is signed, and rotation counts only signed backups.
/// A rotation that fails after the backup was published does not fail the backup: it is
/// logged as a warning, and the backup's path is returned.
pub fn backup_database(
    pool: &LazyPool,
    dir: &Path,
    keep: Option<usize>,
    compression: format::Compression,
    auth: &Auth,
    streams: Option<usize>,
) -> Result<BackupInfo> {
    if keep == Some(0) {
        return Err(Error::invalid("keep must be at least 1"));
    }
    if let Some(n) = streams {
        parallel::check_streams(i64::try_from(n).unwrap_or(i64::MAX))?;
    }
    let started = Instant::now();
    files::ensure_dir(dir)?;
    check_free_space(pool, dir, compression)?;
    let (path, header, sha256) = pool.run_long(|c| {
        let n = parallel::decide(c.client(), pool.settings(), streams)?;
        let mut tx = dump::begin_snapshot(c.client())?;
        let written = if n > 1 {
            std::thread::scope(|scope| {
                let mut streams = parallel::start(scope, pool, &mut tx, n)?;
                write_backup_file(&mut tx, dir, compression, auth, streams.as_mut())
            })?
        } else {
            write_backup_file(&mut tx, dir, compression, auth, None)?
        };
        tx.commit()
            .map_err(|e| Error::from_postgres("ending the backup snapshot", &e))?;
        Ok(written)
    })?;
    let duration_s = started.elapsed().as_secs_f64();
    let rows: BTreeMap<String, u64> = format::DATA_TABLES
        .iter()
        .map(|t| ((*t).to_owned(), header.rows.get(*t).copied().unwrap_or(0)))
        .collect();
    log::info!(
        "backup {} written: {} in {duration_s:.1}s",
        path.display(),
        rows.iter()
            .map(|(t, n)| format!("{t} {n} rows"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let size_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    if let Some(keep) = keep {
        if let Err(e) = cleanup_old_backups(dir, keep, Some(&path), auth, false) {
            log::warn!(
                "backup {} written, but rotation failed: {e}",
                path.display()
            );
        }
    }
    Ok(BackupInfo {
        path,
        size_bytes,
        sha256,
        created_at: header.created_at,
        rows,
        duration_s: Some(duration_s),
        kind: Kind::JobManager,
        compression,
        schema_version: Some(header.schema_version),
        server_version: Some(header.server_version),
        problem: None,
        signed: auth.key.is_some(),
        authenticated: auth.key.is_some(),
    })
}

/// After a restore or an import, many rows are new: give the planner statistics now, not at
/// autovacuum's next visit.
fn analyze_loaded(pool: &LazyPool) -> Result<()> {
    pool.run_long(|c| {
        crate::planner::analyze_after_load(
            c.client(),
            &[
                "jobs (job_type, status, created_at, updated_at)",
                "download_queue (status, file_type, priority, created_at, completed_at)",
            ],
        )
    })
}

/// Whether `jobs` and `download_queue` exist (a fresh database has neither).
fn owned_tables_exist(client: &mut postgres::Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regclass('jobs') IS NOT NULL AND to_regclass('download_queue') IS NOT NULL",
            &[],
        )
        .map_err(|e| Error::from_postgres("checking the owned tables", &e))?
        .get(0))
}

/// Writes one backup file of what `tx` sees into `dir`: a temporary file, published under its
/// backup name once complete and synced. Returns its path, header and SHA-256.
pub(crate) fn write_backup_file(
    tx: &mut postgres::Transaction<'_>,
    dir: &Path,
    compression: format::Compression,
    auth: &Auth,
    streams: Option<&mut parallel::Streams<'_>>,
) -> Result<(PathBuf, format::Header, String)> {
    let (tmp, file) = files::TempFile::create(dir)?;
    let writer_error =
        |e: std::io::Error| Error::Backup(format!("cannot start the backup writer: {e}"));
    let sink = format::Sink::new(file, compression).map_err(writer_error)?;
    let mut out = format::HashingWriter::new(sink, auth.key.as_ref()).map_err(writer_error)?;
    let header = dump::write_snapshot(tx, &mut out, Utc::now(), streams)?;
    let write_error = |e: std::io::Error| Error::Backup(format!("writing the backup failed: {e}"));
    let (sha256, sink) = out.finish().map_err(write_error)?;
    let file = sink.finish().map_err(write_error)?;
    let path = tmp.publish(file, dir, compression)?;
    Ok((path, header, sha256))
}

/// Refuses a backup that certainly cannot fit, before writing anything: the file takes at
/// least half the tables' on-disk size uncompressed (COPY text is rarely smaller than the
/// heap), an eighth compressed. A backup that passes this and still fills the disk stops at
/// the failed write and leaves nothing behind.
fn check_free_space(pool: &LazyPool, dir: &Path, compression: format::Compression) -> Result<()> {
    let tables: i64 = pool.run(|c| {
        Ok(c.client()
            .query_one(
                "SELECT coalesce(sum(pg_relation_size(c.oid)
                                    + coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0)),
                                 0)::bigint
                 FROM pg_class c
                 WHERE c.oid IN (to_regclass('jobs'), to_regclass('download_queue'))",
                &[],
            )
            .map_err(|e| Error::from_postgres("measuring the tables", &e))?
            .get(0))
    })?;
    let tables = u64::try_from(tables).unwrap_or(0);
    let needed = if compression == format::Compression::None {
        tables / 2
    } else {
        tables / 8
    };
    let Ok(fs) = rustix::fs::statvfs(dir) else {
        return Ok(()); // unknown: the write itself will tell
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if free < needed {
        return Err(Error::Backup(format!(
            "not enough space for the backup in {}: it needs at least about {} MiB (the tables \
             take {} MiB) and {} MiB are free; free some space or choose another directory. \
             Nothing was written",
            dir.display(),
            needed.div_ceil(1 << 20),
            tables.div_ceil(1 << 20),
            free >> 20
        )));
    }
    Ok(())
}

/// Restores a job_manager backup or a plain pg_dump of the replaced system.
///
/// The path is opened once; everything reads that descriptor. The whole file is verified
/// first, then what would stop the restore or make it touch a table it does not own is
/// checked, all before anything changes; then the schema is brought current, a safety backup
/// is taken into `safety_dir` (unless `None`), and the owned tables are replaced in one
/// transaction that loads exactly the bytes verified.
pub fn restore_database(
    pool: &LazyPool,
    path: &Path,
    safety_dir: Option<&Path>,
    auth: &Auth,
) -> Result<RestoreInfo> {
    let started = Instant::now();
    let file = BackupFile::open(path)?;
    let verified = file.verify(auth)?;
    pool.run_long(|c| {
        if owned_tables_exist(c.client())? {
            restore::check_no_outside_effects(c.client(), true)?;
        }
        Ok(())
    })?;
    pool.run_long(|c| schema::init_database(c.client(), InitOptions::default()))?;
    let (rows, safety_backup) = pool.run_long(|c| match verified.kind {
        Kind::JobManager => restore::restore_ours(c.client(), &file, auth, &verified, safety_dir),
        Kind::PgDump | Kind::Csv => {
            restore::restore_staged(c.client(), &file, auth, &verified, safety_dir)
        }
    })?;
    analyze_loaded(pool)?;
    let duration_s = started.elapsed().as_secs_f64();
    log::info!(
        "restored {} ({}) in {duration_s:.1}s",
        path.display(),
        rows.iter()
            .map(|(t, n)| format!("{t} {n} rows"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(RestoreInfo {
        path: path.to_path_buf(),
        rows,
        duration_s,
        safety_backup,
        kind: verified.kind,
    })
}
