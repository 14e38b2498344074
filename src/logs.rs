//! `cleanup_old_logs`: the old `find /opt/airflow/logs -name "*.log" -mtime +7 -delete`, safely.
//!
//! * Symlinks are never followed (a link to a directory outside the tree is not walked) and
//!   never deleted: only regular files whose name matches a pattern.
//! * A file goes when it is strictly older than `max_age_days` (by modification time).
//! * A directory goes only when it is empty after the sweep (`rmdir` refuses otherwise, so one
//!   that gained a file meanwhile stays); `log_dir` itself always stays.
//! * `dry_run` deletes nothing and reports what would go.
//! * What cannot be read or deleted is reported in `errors`, and the sweep goes on.
//!
//! Airflow 3's tree (`dag_id=.../run_id=.../task_id=.../attempt=N.log`) is walked depth-first
//! with one `lstat` per matching file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use glob::Pattern;
use serde::Serialize;

use crate::errors::{Error, Result};

/// What a sweep deleted (or, with `dry_run`, would delete).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub files: u64,
    pub bytes: u64,
    pub paths: Vec<PathBuf>,
    pub dirs_removed: u64,
    pub dry_run: bool,
    pub errors: Vec<String>,
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct LogCleanup {
    pub max_age_days: f64,
    pub patterns: Vec<String>,
    pub dry_run: bool,
    pub remove_empty_dirs: bool,
}

pub fn cleanup_old_logs(log_dir: &Path, options: &LogCleanup) -> Result<CleanupReport> {
    let meta = fs::symlink_metadata(log_dir).map_err(|e| {
        Error::invalid(format!(
            "log_dir {} cannot be read ({e}); pass Airflow's base log folder",
            log_dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!(
            "log_dir {} is not a directory (a symlink is not followed)",
            log_dir.display()
        )));
    }
    if !(options.max_age_days.is_finite() && options.max_age_days >= 0.0) {
        return Err(Error::invalid(format!(
            "max_age_days must be zero or more, got {}",
            options.max_age_days
        )));
    }
    if options.patterns.is_empty() {
        return Err(Error::invalid(
            "patterns is empty: nothing would ever match",
        ));
    }
    let patterns = options
        .patterns
        .iter()
        .map(|p| Pattern::new(p).map_err(|e| Error::invalid(format!("invalid pattern {p:?}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_secs_f64(options.max_age_days * 86_400.0))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CleanupReport {
        dry_run: options.dry_run,
        ..CleanupReport::default()
    };
    let mut sweep = Sweep {
        patterns: &patterns,
        cutoff,
        options,
        report: &mut report,
    };
    sweep.directory(log_dir, true);
    log::info!(
        "{} {} log files ({} bytes) older than {} days under {}, {} empty directories",
        if options.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.files,
        report.bytes,
        options.max_age_days,
        log_dir.display(),
        report.dirs_removed
    );
    Ok(report)
}

struct Sweep<'a> {
    patterns: &'a [Pattern],
    cutoff: SystemTime,
    options: &'a LogCleanup,
    report: &'a mut CleanupReport,
}

impl Sweep<'_> {
    /// Sweeps `dir`; returns whether it is empty afterwards (ignoring what dry_run kept).
    fn directory(&mut self, dir: &Path, is_root: bool) -> bool {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.error(dir, &e);
                return false;
            }
        };
        let mut empty = true;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.error(dir, &e);
                    empty = false;
                    continue;
                }
            };
            let path = entry.path();
            // The entry's own type: a symlink is reported as a symlink, never followed.
            let Ok(kind) = entry.file_type() else {
                empty = false;
                continue;
            };
            let gone = if kind.is_dir() {
                self.directory(&path, false)
            } else if kind.is_file() {
                self.file(&path, &entry.file_name())
            } else {
                false
            };
            empty &= gone;
        }
        if is_root || !empty || !self.options.remove_empty_dirs {
            return false;
        }
        if self.options.dry_run {
            return true;
        }
        // rmdir refuses a directory that is not empty: one that gained a file stays.
        match fs::remove_dir(dir) {
            Ok(()) => {
                self.report.dirs_removed += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Handles one regular file; returns whether it is gone (or would be).
    fn file(&mut self, path: &Path, name: &std::ffi::OsStr) -> bool {
        let Some(name) = name.to_str() else {
            return false;
        };
        if !self.patterns.iter().any(|p| p.matches(name)) {
            return false;
        }
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.error(path, &e);
                return false;
            }
        };
        let old = meta.modified().is_ok_and(|m| m < self.cutoff);
        if !old || !meta.is_file() {
            return false;
        }
        if !self.options.dry_run {
            if let Err(e) = fs::remove_file(path) {
                self.error(path, &e);
                return false;
            }
        }
        self.report.files += 1;
        self.report.bytes += meta.len();
        self.report.paths.push(path.to_path_buf());
        true
    }

    fn error(&mut self, path: &Path, e: &std::io::Error) {
        self.report.errors.push(format!("{}: {e}", path.display()));
    }
}
