//! Backup files on disk: names, atomic publication, listing and rotation.
//!
//! A backup is written to a hidden temporary file (mode 0600) in the backup directory (mode
//! 0700 when created), fsynced, then hard-linked under its final name, which fails rather than
//! overwrite, and the directory is fsynced. A reader never sees a partial file under a backup
//! name, even if the process is killed: at worst a hidden `.airflow_backup_*.tmp` is left.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::format::Compression;
use crate::errors::{Error, Result};

const PREFIX: &str = "airflow_backup_";
const TMP_PREFIX: &str = ".airflow_backup_";

/// `airflow_backup_YYYYMMDD_HHMMSS.sql[.zst|.gz]` (UTC).
pub fn backup_name(at: DateTime<Utc>, compression: Compression) -> String {
    format!(
        "{PREFIX}{}.sql{}",
        at.format("%Y%m%d_%H%M%S"),
        compression.suffix()
    )
}

/// The timestamp in a backup file name, if the name follows the pattern exactly.
pub fn parse_backup_name(name: &str) -> Option<NaiveDateTime> {
    let rest = name.strip_prefix(PREFIX)?;
    let stamp = rest
        .strip_suffix(".sql.gz")
        .or_else(|| rest.strip_suffix(".sql.zst"))
        .or_else(|| rest.strip_suffix(".sql"))?;
    if stamp.len() != 15 || !stamp.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok()
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> Error {
    Error::Backup(format!("{what} {}: {e}", path.display()))
}

/// Creates the backup directory (0700) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Backup(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("cannot create the backup directory", dir, &e)),
    }
}

/// A hidden temporary file that is removed unless published.
pub struct TempFile {
    path: PathBuf,
    published: bool,
}

impl TempFile {
    pub fn create(dir: &Path) -> Result<(TempFile, File)> {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let path = dir.join(format!("{TMP_PREFIX}{}_{nanos}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("cannot create a file in", dir, &e))?;
        Ok((
            TempFile {
                path,
                published: false,
            },
            file,
        ))
    }

    /// Syncs `file`, links it under its backup name (never overwriting: if the name of this
    /// second is taken, waits for the next), syncs the directory. Returns the final path.
    pub fn publish(mut self, file: File, dir: &Path, compression: Compression) -> Result<PathBuf> {
        file.sync_all()
            .map_err(|e| io_error("cannot sync", &self.path, &e))?;
        drop(file);
        for _ in 0..5 {
            let target = dir.join(backup_name(Utc::now(), compression));
            match fs::hard_link(&self.path, &target) {
                Ok(()) => {
                    fs::remove_file(&self.path)
                        .map_err(|e| io_error("cannot remove", &self.path, &e))?;
                    self.published = true;
                    sync_dir(dir)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let ms = 1000 - u64::from(Utc::now().timestamp_subsec_millis().min(999));
                    std::thread::sleep(Duration::from_millis(ms + 5));
                }
                Err(e) => return Err(io_error("cannot publish the backup as", &target, &e)),
            }
        }
        Err(Error::Backup(format!(
            "could not find a free backup name in {} (another process is writing backups \
             every second?)",
            dir.display()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync the directory", dir, &e))
}

/// Backup files in `dir` whose names follow the pattern, newest first.
pub fn backup_files(dir: &Path) -> Result<Vec<(PathBuf, NaiveDateTime)>> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, &e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, &e))?;
        let name = entry.file_name();
        let Some(stamp) = name.to_str().and_then(parse_backup_name) else {
            continue;
        };
        // Regular files only: a directory or a link under a backup name is not ours to judge.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            found.push((entry.path(), stamp));
        }
    }
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = DateTime::parse_from_rfc3339("2025-07-21T20:51:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            backup_name(t, Compression::None),
            "airflow_backup_20250721_205159.sql"
        );
        assert_eq!(
            backup_name(t, Compression::Gzip),
            "airflow_backup_20250721_205159.sql.gz"
        );
        assert_eq!(
            backup_name(t, Compression::Zstd),
            "airflow_backup_20250721_205159.sql.zst"
        );
        assert!(parse_backup_name("airflow_backup_20250721_205159.sql.zst").is_some());
        assert_eq!(
            parse_backup_name("airflow_backup_20250721_205159.sql"),
            Some(t.naive_utc())
        );
        assert!(parse_backup_name("airflow_backup_20250721_205159.sql.gz").is_some());
    }

    #[test]
    fn other_names_are_not_backups() {
        for name in [
            "airflow_backup_20250721_205159.sql.tmp",
            ".airflow_backup_20250721_205159.sql",
            "airflow_backup_2025072_205159.sql",
            "airflow_backup_20251321_205159.sql",
            "airflow_backup_20250721_205159.sql.bak",
            "airflow_backup_20250721-205159.sql",
            "notes.txt",
        ] {
            assert_eq!(parse_backup_name(name), None, "{name}");
        }
    }
}
