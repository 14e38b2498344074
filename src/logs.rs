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
//! through directory descriptors, with one `fstatat` per matching file.

use std::ffi::{CStr, OsStr};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use glob::Pattern;
use rustix::fs::{openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
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
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    let age_ns = Duration::from_secs_f64(options.max_age_days * 86_400.0).as_nanos();
    let cutoff_ns = now_ns - i128::try_from(age_ns).unwrap_or(i128::MAX);
    let root = openat(CWD, log_dir, DIR_FLAGS, Mode::empty()).map_err(|e| {
        Error::invalid(format!(
            "log_dir {} cannot be opened: {}",
            log_dir.display(),
            io(e)
        ))
    })?;
    let mut report = CleanupReport {
        dry_run: options.dry_run,
        ..CleanupReport::default()
    };
    let mut sweep = Sweep {
        patterns: &patterns,
        cutoff_ns,
        options,
        report: &mut report,
    };
    sweep.directory(&root, log_dir);
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
    /// Files modified before this instant (nanoseconds since the epoch) are old.
    cutoff_ns: i128,
    options: &'a LogCleanup,
    report: &'a mut CleanupReport,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl Sweep<'_> {
    /// Sweeps the directory open at `fd` (shown as `path`); returns whether it is empty
    /// afterwards (with `dry_run`: would be).
    ///
    /// Everything below is reached through directory descriptors: a child directory is opened
    /// with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to its parent, files are examined with
    /// `fstatat(AT_SYMLINK_NOFOLLOW)` and removed with `unlinkat`. A directory swapped for a
    /// symlink during the sweep cannot lead it out of the tree.
    fn directory(&mut self, fd: &OwnedFd, path: &Path) -> bool {
        let entries = match Dir::read_from(fd) {
            Ok(d) => d,
            Err(e) => {
                self.error(path, &io(e));
                return false;
            }
        };
        let mut empty = true;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.error(path, &io(e));
                    empty = false;
                    break;
                }
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                kind = match statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => FileType::Unknown,
                };
            }
            let gone = match kind {
                FileType::Directory => self.subdirectory(fd, name, &child),
                FileType::RegularFile => self.file(fd, name, &child),
                _ => false, // symlinks, sockets, ...: never followed, never deleted
            };
            empty &= gone;
        }
        empty
    }

    fn subdirectory(&mut self, parent: &OwnedFd, name: &CStr, path: &Path) -> bool {
        let fd = match openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // ELOOP/ENOTDIR: it became a symlink or a file since it was listed.
            Err(e) => {
                self.error(path, &io(e));
                return false;
            }
        };
        let empty = self.directory(&fd, path);
        drop(fd);
        if !empty || !self.options.remove_empty_dirs {
            return false;
        }
        if self.options.dry_run {
            return true;
        }
        // rmdir refuses a directory that is not empty (or no longer a directory).
        if unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok() {
            self.report.dirs_removed += 1;
            true
        } else {
            false
        }
    }

    /// Handles one regular file; returns whether it is gone (or would be).
    fn file(&mut self, dir: &OwnedFd, name: &CStr, path: &Path) -> bool {
        let Ok(text) = name.to_str() else {
            return false;
        };
        if !self.patterns.iter().any(|p| p.matches(text)) {
            return false;
        }
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                self.error(path, &io(e));
                return false;
            }
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return false;
        }
        let mtime_ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
        if mtime_ns >= self.cutoff_ns {
            return false;
        }
        if !self.options.dry_run {
            if let Err(e) = unlinkat(dir, name, AtFlags::empty()) {
                self.error(path, &io(e));
                return false;
            }
        }
        self.report.files += 1;
        self.report.bytes += u64::try_from(st.st_size).unwrap_or(0);
        self.report.paths.push(path.to_path_buf());
        true
    }

    fn error(&mut self, path: &Path, e: &std::io::Error) {
        self.report.errors.push(format!("{}: {e}", path.display()));
    }
}
