//! `cleanup_old_logs`: the old `find /opt/airflow/logs -name "*.log" -mtime +7 -delete`, safely.
//!
//! * Only a log folder is swept: never `/`, and only a directory named by the operator
//!   (`$AIRFLOW__LOGGING__BASE_LOG_FOLDER`, `$JOB_MANAGER_LOG_DIRS`) or one that holds Airflow's
//!   log layout (a `dag_id=*`, `dag_processor` or `scheduler` directory at its top).
//! * Symlinks are never followed (a link to a directory outside the tree is not walked) and
//!   never deleted: only regular files whose name matches a pattern.
//! * A file goes when it is strictly older than `max_age_days` (by modification time).
//! * A directory goes only when it is empty after the sweep and was itself older than
//!   `max_age_days` and than a day before the sweep touched it (by modification time: a
//!   directory Airflow just created, or just added a file to, is young); `rmdir` refuses one
//!   that gained a file meanwhile; `log_dir` itself always stays.
//! * `dry_run` deletes nothing and reports exactly what the real run would delete.
//! * What cannot be read or deleted is counted in `error_count` (the first
//!   [`SAMPLE_LIMIT`] in `errors`), and the sweep goes on; `paths` is a sample of the same size.
//!
//! The walk keeps an explicit work list on the heap (no recursion: any depth runs on a small
//! stack) and holds at most [`MAX_OPEN_DIRS`] directory descriptors. Every directory is opened
//! with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to its parent's descriptor; one whose
//! descriptor was closed to stay under the bound is opened again name by name from the nearest
//! open ancestor, and must be the same directory (device and inode) it was when first listed.
//! A directory swapped for a symlink or another directory during the sweep is reported, never
//! entered, so the sweep cannot leave the tree.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use glob::Pattern;
use rustix::fs::{fstat, openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use serde::Serialize;

use crate::errors::{Error, Result};

/// At most this many paths and errors are listed in a report (the counts are complete).
pub const SAMPLE_LIMIT: usize = 100;
/// At most this many directory descriptors are open at once, however deep the tree.
pub const MAX_OPEN_DIRS: usize = 32;
/// The deepest directories on the work list keep their descriptors (the rest of the bound
/// goes to the root and to checkpoints, see [`Sweep::ensure_open`]).
const WINDOW: usize = 16;
/// The largest `max_age_days` accepted (100 years).
pub const MAX_AGE_DAYS: f64 = 36_500.0;
/// A directory younger than this is never removed, whatever `max_age_days` says.
pub const MIN_DIR_AGE_S: i128 = 86_400;
/// At most this many patterns, each at most [`MAX_PATTERN_LEN`] bytes.
pub const MAX_PATTERNS: usize = 64;
pub const MAX_PATTERN_LEN: usize = 256;

const NS: i128 = 1_000_000_000;

/// What a sweep deleted (or, with `dry_run`, would delete).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub files: u64,
    pub bytes: u64,
    /// The first [`SAMPLE_LIMIT`] files deleted; `files` counts them all.
    pub paths: Vec<PathBuf>,
    pub dirs_removed: u64,
    pub dry_run: bool,
    /// The first [`SAMPLE_LIMIT`] problems; `error_count` counts them all.
    pub errors: Vec<String>,
    pub error_count: u64,
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct LogCleanup {
    pub max_age_days: f64,
    pub patterns: Vec<String>,
    pub dry_run: bool,
    pub remove_empty_dirs: bool,
}

/// A number for a message: plain when short, in exponent form when huge (never 300 digits).
pub(crate) fn shown_number(v: f64) -> String {
    if v.is_finite() && v.abs() < 1e15 {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// Checks every argument before anything is touched.
fn validate(options: &LogCleanup) -> Result<Vec<Pattern>> {
    if !(options.max_age_days.is_finite() && (0.0..=MAX_AGE_DAYS).contains(&options.max_age_days)) {
        return Err(Error::invalid(format!(
            "max_age_days must be a number from 0 to {MAX_AGE_DAYS}, got {}",
            shown_number(options.max_age_days)
        )));
    }
    if options.patterns.is_empty() {
        return Err(Error::invalid(
            "patterns is empty: nothing would ever match",
        ));
    }
    if options.patterns.len() > MAX_PATTERNS {
        return Err(Error::invalid(format!(
            "at most {MAX_PATTERNS} patterns, got {}",
            options.patterns.len()
        )));
    }
    options
        .patterns
        .iter()
        .map(|p| {
            if p.len() > MAX_PATTERN_LEN || p.contains('/') || p.contains('\0') {
                return Err(Error::invalid(format!(
                    "invalid pattern {:?}: a file name pattern of at most {MAX_PATTERN_LEN} \
                     bytes, without '/'",
                    p.chars().take(64).collect::<String>()
                )));
            }
            Pattern::new(p).map_err(|e| Error::invalid(format!("invalid pattern {p:?}: {e}")))
        })
        .collect()
}

/// The directories the operator named as log folders: `$AIRFLOW__LOGGING__BASE_LOG_FOLDER` and
/// each entry of `$JOB_MANAGER_LOG_DIRS` (separated by `:`), resolved.
fn operator_log_dirs() -> Vec<PathBuf> {
    let mut named = Vec::new();
    if let Some(v) = std::env::var_os("AIRFLOW__LOGGING__BASE_LOG_FOLDER") {
        named.push(PathBuf::from(v));
    }
    if let Some(v) = std::env::var_os("JOB_MANAGER_LOG_DIRS") {
        named.extend(std::env::split_paths(&v));
    }
    named
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect()
}

/// Whether the directory open at `fd` holds Airflow's log layout at its top.
fn has_airflow_layout(fd: &OwnedFd) -> bool {
    let Ok(dir) = Dir::read_from(fd) else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name().to_bytes();
        let named =
            name.starts_with(b"dag_id=") || name == b"dag_processor" || name == b"scheduler";
        named
            && matches!(
                statat(fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode)),
                Ok(FileType::Directory)
            )
    })
}

pub fn cleanup_old_logs(log_dir: &Path, options: &LogCleanup) -> Result<CleanupReport> {
    let patterns = validate(options)?;
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
    let canonical = fs::canonicalize(log_dir).map_err(|e| {
        Error::invalid(format!(
            "log_dir {} cannot be resolved ({e})",
            log_dir.display()
        ))
    })?;
    if canonical.parent().is_none() {
        return Err(Error::invalid(format!(
            "log_dir {} is the root directory: refusing to sweep it; pass Airflow's base log \
             folder",
            log_dir.display()
        )));
    }
    let root = openat(CWD, log_dir, DIR_FLAGS, Mode::empty()).map_err(|e| {
        Error::invalid(format!(
            "log_dir {} cannot be opened: {}",
            log_dir.display(),
            io(e)
        ))
    })?;
    if !operator_log_dirs().contains(&canonical) && !has_airflow_layout(&root) {
        return Err(Error::invalid(format!(
            "log_dir {} does not look like an Airflow log folder (no dag_id=*, dag_processor \
             or scheduler directory in it) and is not named in $AIRFLOW__LOGGING__BASE_LOG_FOLDER \
             or $JOB_MANAGER_LOG_DIRS: refusing to sweep it",
            log_dir.display()
        )));
    }
    let root_stat = fstat(&root).map_err(|e| {
        Error::invalid(format!(
            "log_dir {} cannot be read: {}",
            log_dir.display(),
            io(e)
        ))
    })?;
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    // Bounded by validate(): at most 36,500 days, far inside i128 (and f64's exact range).
    #[allow(clippy::cast_possible_truncation)]
    let age_ns = (options.max_age_days * 86_400.0 * 1e9) as i128;
    let cutoff_ns = now_ns - age_ns;
    let dir_cutoff_ns = cutoff_ns.min(now_ns - MIN_DIR_AGE_S * NS);
    let mut report = CleanupReport {
        dry_run: options.dry_run,
        ..CleanupReport::default()
    };
    let mut sweep = Sweep {
        patterns: &patterns,
        cutoff_ns,
        dir_cutoff_ns,
        options,
        report: &mut report,
        root_path: log_dir,
        stack: Vec::new(),
        held: BTreeSet::new(),
    };
    sweep.run(root, &root_stat);
    log::info!(
        "{} {} log files ({} bytes) older than {} days under {}, {} empty directories, {} errors",
        if options.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.files,
        report.bytes,
        options.max_age_days,
        log_dir.display(),
        report.dirs_removed,
        report.error_count
    );
    Ok(report)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

fn mtime_ns(st: &rustix::fs::Stat) -> i128 {
    i128::from(st.st_mtime) * NS + i128::from(st.st_mtime_nsec)
}

/// One directory on the work list.
struct Frame {
    /// Its name in its parent (empty for the root).
    name: CString,
    dev: u64,
    ino: u64,
    /// Open while it is among the deepest [`WINDOW`] or a checkpoint (the root's always is).
    fd: Option<OwnedFd>,
    /// A checkpoint: its descriptor is kept so that deeper ones are reopened from here.
    keep: bool,
    /// Old enough to be removed once empty (by its modification time before the sweep).
    old: bool,
    /// Entries not handled yet.
    entries: Vec<(CString, FileType)>,
    /// Every entry handled so far is gone (or would be).
    empty: bool,
}

struct Sweep<'a> {
    patterns: &'a [Pattern],
    /// Files modified before this instant (nanoseconds since the epoch) are old.
    cutoff_ns: i128,
    /// Directories modified before this instant may be removed once empty.
    dir_cutoff_ns: i128,
    options: &'a LogCleanup,
    report: &'a mut CleanupReport,
    root_path: &'a Path,
    stack: Vec<Frame>,
    /// Indices of the frames below the root that hold a descriptor.
    held: BTreeSet<usize>,
}

impl Sweep<'_> {
    fn run(&mut self, root: OwnedFd, st: &rustix::fs::Stat) {
        let entries = self.list(&root, &[]);
        self.stack.push(Frame {
            name: CString::default(),
            dev: st.st_dev,
            ino: st.st_ino,
            fd: Some(root),
            keep: true,
            old: false,
            empty: entries.is_some(),
            entries: entries.unwrap_or_default(),
        });
        while let Some(top) = self.stack.last_mut() {
            if let Some((name, kind)) = top.entries.pop() {
                if !self.ensure_open() {
                    continue;
                }
                let gone = match kind {
                    FileType::Directory => {
                        self.enter(name);
                        continue;
                    }
                    FileType::RegularFile => self.file(&name),
                    _ => false, // symlinks, sockets, ...: never followed, never deleted
                };
                if let Some(top) = self.stack.last_mut() {
                    top.empty &= gone;
                }
            } else {
                self.leave();
            }
        }
    }

    /// The path of the top frame's entry `name` (or of the top frame itself), for messages.
    fn path(&self, name: Option<&CStr>) -> PathBuf {
        let mut p = self.root_path.to_path_buf();
        for f in self.stack.iter().skip(1) {
            p.push(OsStr::from_bytes(f.name.to_bytes()));
        }
        if let Some(n) = name {
            p.push(OsStr::from_bytes(n.to_bytes()));
        }
        p
    }

    fn error(&mut self, name: Option<&CStr>, e: &dyn std::fmt::Display) {
        self.report.error_count += 1;
        if self.report.errors.len() < SAMPLE_LIMIT {
            let text = format!("{}: {e}", self.path(name).display());
            self.report.errors.push(text);
        }
    }

    /// Every entry of the directory open at `fd` (reads it in full, then closes its own
    /// descriptor); None when it cannot be read. `at` names it in messages.
    fn list(&mut self, fd: &OwnedFd, at: &[u8]) -> Option<Vec<(CString, FileType)>> {
        let name = (!at.is_empty()).then(|| CString::new(at).unwrap_or_default());
        let dir = match Dir::read_from(fd) {
            Ok(d) => d,
            Err(e) => {
                self.error(name.as_deref(), &io(e));
                return None;
            }
        };
        let mut entries = Vec::new();
        for entry in dir {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.error(name.as_deref(), &io(e));
                    return None;
                }
            };
            let n = entry.file_name();
            if n.to_bytes() == b"." || n.to_bytes() == b".." {
                continue;
            }
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                kind = statat(fd, n, AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode));
            }
            entries.push((n.to_owned(), kind));
        }
        Some(entries)
    }

    /// Makes sure the top frame's descriptor is open, opening it again from the nearest open
    /// ancestor when it was closed; a directory that is no longer the one listed is reported
    /// and its remaining entries are skipped. Returns whether the descriptor is open.
    ///
    /// Reopening walks down from that ancestor and keeps the descriptor of the directory
    /// halfway down as a checkpoint, so the next reopenings start from there: going back up a
    /// chain of depth d costs O(d log d) `openat` calls, not O(d^2).
    fn ensure_open(&mut self) -> bool {
        let top = self.stack.len() - 1;
        if self.stack[top].fd.is_some() {
            return true;
        }
        let start = self.held.range(..top).next_back().copied().unwrap_or(0);
        let gap = top - start;
        let checkpoint = (gap > 2 * WINDOW).then(|| start + gap / 2);
        for k in start + 1..=top {
            let (parent, rest) = self.stack.split_at_mut(k);
            let parent_fd = parent[k - 1].fd.as_ref().expect("opened in order");
            let frame = &mut rest[0];
            let opened = openat(parent_fd, frame.name.as_c_str(), DIR_FLAGS, Mode::empty())
                .and_then(|fd| fstat(&fd).map(|st| (fd, st)));
            match opened {
                Ok((fd, st)) if st.st_dev == frame.dev && st.st_ino == frame.ino => {
                    frame.fd = Some(fd);
                    frame.keep = checkpoint == Some(k);
                    self.held.insert(k);
                }
                other => {
                    let why = match other {
                        Err(e) => io(e).to_string(),
                        Ok(_) => "replaced by another directory during the sweep".to_owned(),
                    };
                    // Reported at its own place; everything from it down is abandoned.
                    let abandoned = self.stack.split_off(k);
                    self.error(Some(abandoned[0].name.as_c_str()), &why);
                    self.held.retain(|&i| i < k);
                    if let Some(parent) = self.stack.last_mut() {
                        parent.empty = false;
                    }
                    return false;
                }
            }
            self.trim(k);
        }
        true
    }

    /// Closes descriptors beyond the bound: first those of the shallowest frames outside the
    /// window that are not checkpoints, then the shallowest checkpoints; never the root's, the
    /// top frame's or frame `walking`'s (being opened from).
    fn trim(&mut self, walking: usize) {
        let top = self.stack.len() - 1;
        while self.held.len() + 1 > MAX_OPEN_DIRS {
            let spare = |i: &usize| *i != top && *i != walking;
            let victim = self
                .held
                .iter()
                .copied()
                .find(|i| spare(i) && !self.stack[*i].keep && i + WINDOW <= top)
                .or_else(|| self.held.iter().copied().find(spare));
            let Some(i) = victim else {
                break;
            };
            self.stack[i].fd = None;
            self.stack[i].keep = false;
            self.held.remove(&i);
        }
    }

    /// Opens the top frame's subdirectory `name` and pushes it on the work list.
    fn enter(&mut self, name: CString) {
        let parent = self
            .stack
            .last()
            .and_then(|f| f.fd.as_ref())
            .expect("ensured");
        // ELOOP/ENOTDIR: it became a symlink or a file since it was listed.
        let opened = openat(parent, name.as_c_str(), DIR_FLAGS, Mode::empty())
            .and_then(|fd| fstat(&fd).map(|st| (fd, st)));
        let (fd, st) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.error(Some(name.as_c_str()), &io(e));
                if let Some(top) = self.stack.last_mut() {
                    top.empty = false;
                }
                return;
            }
        };
        let old = mtime_ns(&st) < self.dir_cutoff_ns;
        let entries = self.list(&fd, name.to_bytes());
        self.held.insert(self.stack.len());
        self.stack.push(Frame {
            name,
            dev: st.st_dev,
            ino: st.st_ino,
            fd: Some(fd),
            keep: false,
            old,
            empty: entries.is_some(),
            entries: entries.unwrap_or_default(),
        });
        let top = self.stack.len() - 1;
        self.trim(top);
    }

    /// Pops the finished top frame; removes it when it is empty and old enough.
    fn leave(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        self.held.remove(&self.stack.len());
        drop(frame.fd);
        if self.stack.is_empty() {
            return; // the root always stays
        }
        let remove = frame.empty && frame.old && self.options.remove_empty_dirs;
        let gone = remove && (self.options.dry_run || self.rmdir(&frame.name));
        if gone {
            self.report.dirs_removed += 1;
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.empty &= gone;
        }
    }

    fn rmdir(&mut self, name: &CStr) -> bool {
        if !self.ensure_open() {
            return false;
        }
        let parent = self
            .stack
            .last()
            .and_then(|f| f.fd.as_ref())
            .expect("ensured");
        // rmdir refuses a directory that is not empty (it gained a file) or is no longer one.
        unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok()
    }

    /// Handles one regular file of the top frame; returns whether it is gone (or would be).
    fn file(&mut self, name: &CStr) -> bool {
        let Ok(text) = name.to_str() else {
            return false;
        };
        if !self.patterns.iter().any(|p| p.matches(text)) {
            return false;
        }
        let dir = self
            .stack
            .last()
            .and_then(|f| f.fd.as_ref())
            .expect("ensured");
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                self.error(Some(name), &io(e));
                return false;
            }
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return false;
        }
        if mtime_ns(&st) >= self.cutoff_ns {
            return false;
        }
        if !self.options.dry_run {
            if let Err(e) = unlinkat(dir, name, AtFlags::empty()) {
                self.error(Some(name), &io(e));
                return false;
            }
        }
        self.report.files += 1;
        self.report.bytes += u64::try_from(st.st_size).unwrap_or(0);
        if self.report.paths.len() < SAMPLE_LIMIT {
            let p = self.path(Some(name));
            self.report.paths.push(p);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn options(days: f64) -> LogCleanup {
        LogCleanup {
            max_age_days: days,
            patterns: vec!["*.log".to_owned()],
            dry_run: false,
            remove_empty_dirs: true,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "jm-logs-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(d.join("dag_id=x")).unwrap();
        d
    }

    fn age(path: &Path, days: u64) {
        let t = SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
        let f = fs::File::open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn numbers_out_of_range_are_invalid_arguments_not_panics() {
        let d = tmp("num");
        for days in [1e300, f64::INFINITY, f64::NAN, -1.0, 36_501.0, f64::MAX] {
            let e = cleanup_old_logs(&d, &options(days)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{days}: {e}");
        }
        assert!(cleanup_old_logs(&d, &options(36_500.0)).is_ok());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn refuses_root_and_trees_that_are_not_log_folders() {
        let e = cleanup_old_logs(Path::new("/"), &options(7.0)).unwrap_err();
        assert!(e.to_string().contains("root directory"), "{e}");
        let d = tmp("layout");
        fs::remove_dir(d.join("dag_id=x")).unwrap();
        fs::create_dir(d.join("etc")).unwrap();
        let e = cleanup_old_logs(&d, &options(7.0)).unwrap_err();
        assert!(e.to_string().contains("Airflow log folder"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn deep_tree_on_a_small_stack_with_bounded_descriptors() {
        let d = tmp("deep");
        let mut p = d.join("dag_id=x");
        // 10,000 levels, built relative to the previous level (paths are too long for PATH_MAX).
        let mut fd = openat(CWD, &p, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..10_000 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = openat(&fd, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        let log = openat(
            &fd,
            "attempt=1.log",
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
        };
        rustix::fs::futimens(&log, &old).unwrap();
        drop(log);
        drop(fd);
        p.push("d");
        let root = d.clone();
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || cleanup_old_logs(&root, &options(7.0)).unwrap())
            .unwrap();
        let r = handle.join().expect("no stack overflow");
        assert_eq!(r.files, 1, "{:?}", r.errors);
        assert_eq!(r.error_count, 0, "{:?}", r.errors);
        // The directories are new: none is removed.
        assert_eq!(r.dirs_removed, 0);
        assert!(p.is_dir());
        // Dry run again: nothing more would go.
        let mut o = options(7.0);
        o.dry_run = true;
        let again = cleanup_old_logs(&d, &o).unwrap();
        assert_eq!((again.files, again.dirs_removed), (0, 0));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn empty_directories_go_only_when_old_and_dry_run_says_exactly_that() {
        let d = tmp("dirs");
        let young = d.join("dag_id=x/run_id=young");
        let old = d.join("dag_id=x/run_id=old/task_id=t");
        fs::create_dir_all(&young).unwrap();
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("attempt=1.log"), "x").unwrap();
        age(&old.join("attempt=1.log"), 10);
        age(&old, 10);
        age(old.parent().unwrap(), 10);
        let mut dry = options(7.0);
        dry.dry_run = true;
        let would = cleanup_old_logs(&d, &dry).unwrap();
        let did = cleanup_old_logs(&d, &options(7.0)).unwrap();
        assert_eq!((would.files, would.dirs_removed), (1, 2));
        assert_eq!((did.files, did.dirs_removed), (1, 2));
        assert!(young.is_dir());
        assert!(!old.parent().unwrap().exists());
        assert!(d.join("dag_id=x").is_dir()); // young: it just lost a child
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_symlinked_directory_is_not_entered() {
        let d = tmp("link");
        let outside = tmp("outside");
        fs::write(outside.join("a.log"), "x").unwrap();
        age(&outside.join("a.log"), 10);
        symlink(&outside, d.join("dag_id=x/link")).unwrap();
        let r = cleanup_old_logs(&d, &options(0.0)).unwrap();
        assert_eq!(r.files, 0);
        assert!(outside.join("a.log").exists());
        fs::remove_dir_all(d).unwrap();
        fs::remove_dir_all(outside).unwrap();
    }
}
