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
mod pgdump;
mod restore;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};

use crate::errors::{Error, Result};
use crate::pool::LazyPool;
use crate::schema::{self, InitOptions};
pub use format::Kind;
pub use pgdump::dump_database;

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
    pub compressed: bool,
    pub schema_version: Option<i32>,
    pub server_version: Option<String>,
    /// Why the file does not verify (only from `list_backups`).
    pub problem: Option<String>,
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

fn info(path: &Path, v: format::Verified, duration_s: Option<f64>) -> Result<BackupInfo> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| Error::Backup(format!("cannot stat {}: {e}", path.display())))?
        .len();
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
    Ok(BackupInfo {
        path: path.to_path_buf(),
        size_bytes,
        sha256: v.sha256,
        created_at,
        rows: v.rows,
        duration_s,
        kind: v.kind,
        compressed: v.compressed,
        schema_version: ours.then_some(v.header.schema_version),
        server_version: ours.then_some(v.header.server_version),
        problem: None,
    })
}

/// Reads a backup in full and checks it; `BackupCorrupt` when it does not verify.
pub fn verify_backup(path: &Path) -> Result<BackupInfo> {
    let v = format::verify(path)?;
    info(path, v, None)
}

/// Every file of `dir` named like a backup, newest first, with what verification found.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupInfo>> {
    files::backup_files(dir)?
        .into_iter()
        .map(|(path, stamp)| match verify_backup(&path) {
            Ok(i) => Ok(i),
            Err(Error::BackupCorrupt(problem)) => Ok(BackupInfo {
                size_bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                path,
                sha256: String::new(),
                created_at: Some(Utc.from_utc_datetime(&stamp)),
                rows: BTreeMap::new(),
                duration_s: None,
                kind: Kind::JobManager,
                compressed: false,
                schema_version: None,
                server_version: None,
                problem: Some(problem),
            }),
            Err(e) => Err(e),
        })
        .collect()
}

/// Keeps the newest `keep` backups that verify (counting `protect`, the backup just made,
/// without reading it again) and deletes the backups older than those. Files that do not
/// verify among the newest are left alone and reported; files not named like a backup are
/// never touched. Returns the deleted paths.
pub fn cleanup_old_backups(
    dir: &Path,
    keep: usize,
    protect: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    if keep == 0 {
        return Err(Error::invalid(
            "keep must be at least 1: rotation never deletes every backup",
        ));
    }
    let mut kept = 0;
    let mut deleted = Vec::new();
    for (path, _) in files::backup_files(dir)? {
        if kept >= keep {
            std::fs::remove_file(&path)
                .map_err(|e| Error::Backup(format!("cannot delete {}: {e}", path.display())))?;
            log::info!("deleted old backup {}", path.display());
            deleted.push(path);
        } else if protect == Some(path.as_path()) {
            kept += 1;
        } else {
            match format::verify(&path) {
                Ok(_) => kept += 1,
                Err(Error::BackupCorrupt(why)) => {
                    log::warn!(
                        "leaving {} alone: it does not verify ({why})",
                        path.display()
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
    if !deleted.is_empty() {
        files::sync_dir(dir)?;
    }
    Ok(deleted)
}

/// Backs up the owned tables into `dir`, then rotates to `keep` backups (`None`: no rotation).
pub fn backup_database(
    pool: &LazyPool,
    dir: &Path,
    keep: Option<usize>,
    compress: bool,
) -> Result<BackupInfo> {
    if keep == Some(0) {
        return Err(Error::invalid("keep must be at least 1"));
    }
    let started = Instant::now();
    files::ensure_dir(dir)?;
    let (path, header, sha256) = pool.run_long(|c| {
        let (tmp, file) = files::TempFile::create(dir)?;
        let mut out = format::HashingWriter::new(format::Sink::new(file, compress))
            .map_err(|e| Error::Backup(format!("cannot start the backup writer: {e}")))?;
        let header = dump::write_backup(c.client(), &mut out, Utc::now())?;
        let (sha256, sink) = out
            .finish()
            .map_err(|e| Error::Backup(format!("writing the backup failed: {e}")))?;
        let file = sink
            .finish()
            .map_err(|e| Error::Backup(format!("writing the backup failed: {e}")))?;
        let path = tmp.publish(file, dir, compress)?;
        Ok((path, header, sha256))
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
        cleanup_old_backups(dir, keep, Some(&path))?;
    }
    Ok(BackupInfo {
        path,
        size_bytes,
        sha256,
        created_at: header.created_at,
        rows,
        duration_s: Some(duration_s),
        kind: Kind::JobManager,
        compressed: compress,
        schema_version: Some(header.schema_version),
        server_version: Some(header.server_version),
        problem: None,
    })
}

/// Restores a job_manager backup or a plain pg_dump of the replaced system. Verifies the
/// whole file first, brings the schema current, takes a safety backup into `safety_dir`
/// (unless `None`), then replaces the owned tables in one transaction.
pub fn restore_database(
    pool: &LazyPool,
    path: &Path,
    safety_dir: Option<&Path>,
) -> Result<RestoreInfo> {
    let started = Instant::now();
    let verified = format::verify(path)?;
    pool.run_long(|c| schema::init_database(c.client(), InitOptions::default()))?;
    let safety_backup = match safety_dir {
        Some(dir) => Some(backup_database(pool, dir, None, false)?.path),
        None => None,
    };
    let rows = pool.run_long(|c| match verified.kind {
        Kind::JobManager => restore::restore_ours(c.client(), path, &verified),
        Kind::PgDump => restore::restore_pg_dump(c.client(), path, &verified),
    })?;
    // Every row is new: give the planner statistics now, not at autovacuum's next visit.
    pool.run_long(|c| {
        crate::maintenance::analyze_after_load(
            c.client(),
            &[
                "jobs (job_type, status, created_at, updated_at)",
                "download_queue (status, file_type, priority, created_at, completed_at)",
            ],
        )
    })?;
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
