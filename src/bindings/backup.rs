//! Backups from Python: `JobManager.backup_database` / `restore_database` (in manager.rs) and
//! the module functions that need no database: verify, list, cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::backup;

/// What a backup file is and holds.
#[pyclass(frozen, get_all, name = "BackupInfo", module = "job_manager._internal")]
pub struct BackupInfo {
    path: String,
    size_bytes: u64,
    sha256: String,
    created_at: Option<DateTime<Utc>>,
    rows: BTreeMap<String, u64>,
    duration_s: Option<f64>,
    format: &'static str,
    compressed: bool,
    compression: Option<&'static str>,
    schema_version: Option<i32>,
    server_version: Option<String>,
    problem: Option<String>,
    signed: bool,
    authenticated: bool,
}

#[pymethods]
impl BackupInfo {
    /// Whether the file verified (`problem` is None).
    #[getter]
    fn verified(&self) -> bool {
        self.problem.is_none()
    }

    /// A JSON-serialisable dict (times as ISO 8601 strings).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", &self.path)?;
        d.set_item("size_bytes", self.size_bytes)?;
        d.set_item("sha256", &self.sha256)?;
        d.set_item("created_at", self.created_at.map(iso))?;
        d.set_item("rows", &self.rows)?;
        d.set_item("duration_s", self.duration_s)?;
        d.set_item("format", self.format)?;
        d.set_item("compressed", self.compressed)?;
        d.set_item("compression", self.compression)?;
        d.set_item("schema_version", self.schema_version)?;
        d.set_item("server_version", &self.server_version)?;
        d.set_item("verified", self.problem.is_none())?;
        d.set_item("problem", &self.problem)?;
        d.set_item("signed", self.signed)?;
        d.set_item("authenticated", self.authenticated)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "BackupInfo(path='{}', size_bytes={}, created_at={}, rows={{{}}}, verified={})",
            self.path,
            self.size_bytes,
            self.created_at
                .map_or_else(|| "None".to_owned(), |t| format!("'{}'", iso(t))),
            rows_repr(&self.rows),
            if self.problem.is_none() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// `'jobs': 3, 'download_queue': 1`, as Python prints a dict's items.
fn rows_repr(rows: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = rows.iter().map(|(t, n)| format!("'{t}': {n}")).collect();
    items.join(", ")
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl From<backup::BackupInfo> for BackupInfo {
    fn from(i: backup::BackupInfo) -> Self {
        BackupInfo {
            path: i.path.display().to_string(),
            size_bytes: i.size_bytes,
            sha256: i.sha256,
            created_at: i.created_at,
            rows: i.rows,
            duration_s: i.duration_s,
            format: i.kind.as_str(),
            compressed: i.compression != backup::format::Compression::None,
            compression: i.compression.as_str(),
            schema_version: i.schema_version,
            server_version: i.server_version,
            problem: i.problem,
            signed: i.signed,
            authenticated: i.authenticated,
        }
    }
}

/// What a restore did.
#[pyclass(
    frozen,
    get_all,
    name = "RestoreInfo",
    module = "job_manager._internal"
)]
pub struct RestoreInfo {
    path: String,
    rows: BTreeMap<String, u64>,
    duration_s: f64,
    safety_backup: Option<String>,
    format: &'static str,
}

#[pymethods]
impl RestoreInfo {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", &self.path)?;
        d.set_item("rows", &self.rows)?;
        d.set_item("duration_s", self.duration_s)?;
        d.set_item("safety_backup", &self.safety_backup)?;
        d.set_item("format", self.format)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "RestoreInfo(path='{}', rows={{{}}}, duration_s={:.3}, safety_backup={})",
            self.path,
            rows_repr(&self.rows),
            self.duration_s,
            self.safety_backup
                .as_ref()
                .map_or_else(|| "None".to_owned(), |p| format!("'{p}'"))
        )
    }
}

impl From<backup::RestoreInfo> for RestoreInfo {
    fn from(i: backup::RestoreInfo) -> Self {
        RestoreInfo {
            path: i.path.display().to_string(),
            rows: i.rows,
            duration_s: i.duration_s,
            safety_backup: i.safety_backup.map(|p| p.display().to_string()),
            format: i.kind.as_str(),
        }
    }
}

/// What an import did.
#[pyclass(frozen, get_all, name = "ImportInfo", module = "job_manager._internal")]
pub struct ImportInfo {
    path: String,
    mode: &'static str,
    format: &'static str,
    added: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
    remapped: BTreeMap<String, u64>,
    duration_s: f64,
    safety_backup: Option<String>,
}

#[pymethods]
impl ImportInfo {
    /// A JSON-serialisable dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", &self.path)?;
        d.set_item("mode", self.mode)?;
        d.set_item("format", self.format)?;
        d.set_item("added", &self.added)?;
        d.set_item("skipped", &self.skipped)?;
        d.set_item("remapped", &self.remapped)?;
        d.set_item("duration_s", self.duration_s)?;
        d.set_item("safety_backup", &self.safety_backup)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "ImportInfo(path='{}', mode='{}', added={{{}}}, skipped={{{}}}, remapped={{{}}})",
            self.path,
            self.mode,
            rows_repr(&self.added),
            rows_repr(&self.skipped),
            rows_repr(&self.remapped)
        )
    }
}

impl From<backup::ImportInfo> for ImportInfo {
    fn from(i: backup::ImportInfo) -> Self {
        ImportInfo {
            path: i.path.display().to_string(),
            mode: i.mode.as_str(),
            format: i.kind.as_str(),
            added: i.added,
            skipped: i.skipped,
            remapped: i.remapped,
            duration_s: i.duration_s,
            safety_backup: i.safety_backup.map(|p| p.display().to_string()),
        }
    }
}

/// Reads a backup in full and checks every line of it, its row counts and checksum (and,
/// with `JOB_MANAGER_BACKUP_KEY` set, its HMAC). No database is needed. Raises
/// `BackupCorruptError` for a truncated, edited, unsigned or foreign file.
#[pyfunction]
pub fn verify_backup(py: Python<'_>, path: PathBuf) -> PyResult<BackupInfo> {
    let auth = backup::Auth::from_env()?;
    Ok(py.detach(|| backup::verify_backup(&path, &auth))?.into())
}

/// Every file in `backup_dir` named like a backup, newest first; `verified` says which pass.
#[pyfunction]
#[pyo3(signature = (backup_dir=PathBuf::from("backups")), text_signature = "(backup_dir='backups')")]
pub fn list_backups(py: Python<'_>, backup_dir: PathBuf) -> PyResult<Vec<BackupInfo>> {
    let auth = backup::Auth::from_env()?;
    let list = py.detach(|| backup::list_backups(&backup_dir, &auth))?;
    Ok(list.into_iter().map(Into::into).collect())
}

/// Keeps the newest `keep` backups that verify and deletes older ones; returns the deleted
/// paths. Never touches a file not named like a backup. With `dry_run`, deletes nothing and
/// returns the paths the same call would delete.
#[pyfunction]
#[pyo3(signature = (backup_dir=PathBuf::from("backups"), keep=super::convert::Count(10), *, dry_run=false), text_signature = "(backup_dir='backups', keep=10, *, dry_run=False)")]
pub fn cleanup_old_backups(
    py: Python<'_>,
    backup_dir: PathBuf,
    keep: super::convert::Count,
    dry_run: bool,
) -> PyResult<Vec<String>> {
    let keep = super::convert::keep_arg(keep)?;
    let auth = backup::Auth::from_env()?;
    let deleted =
        py.detach(|| backup::cleanup_old_backups(&backup_dir, keep, None, &auth, dry_run))?;
    Ok(deleted.iter().map(|p| p.display().to_string()).collect())
}
