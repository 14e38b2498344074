//! Maintenance from Python: log cleanup (no database) and JSON-shaped reports.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::Error;
use crate::logs::{self, LogCleanup};

/// What a log sweep deleted (or, with `dry_run`, would delete).
#[pyclass(
    frozen,
    get_all,
    name = "CleanupReport",
    module = "job_manager._internal"
)]
pub struct CleanupReport {
    files: u64,
    bytes: u64,
    paths: Vec<String>,
    dirs_removed: u64,
    dry_run: bool,
    errors: Vec<String>,
    error_count: u64,
}

#[pymethods]
impl CleanupReport {
    /// A JSON-serialisable dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("files", self.files)?;
        d.set_item("bytes", self.bytes)?;
        d.set_item("paths", &self.paths)?;
        d.set_item("dirs_removed", self.dirs_removed)?;
        d.set_item("dry_run", self.dry_run)?;
        d.set_item("errors", &self.errors)?;
        d.set_item("error_count", self.error_count)?;
        d.set_item("sample_limit", logs::SAMPLE_LIMIT)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "CleanupReport(files={}, bytes={}, dirs_removed={}, dry_run={}, errors={})",
            self.files,
            self.bytes,
            self.dirs_removed,
            if self.dry_run { "True" } else { "False" },
            self.error_count
        )
    }
}

/// Deletes files under `log_dir` whose names match `patterns` and that are older than
/// `max_age_days`, then directories left empty that are old too. Never follows or deletes a
/// symlink, never deletes `log_dir` or a directory that still holds a file; refuses `/` and a
/// directory that is not a log folder; `dry_run` deletes nothing and reports the same.
#[pyfunction]
#[pyo3(signature = (log_dir, max_age_days=None, *, patterns=vec!["*.log".to_owned()], dry_run=false, remove_empty_dirs=true), text_signature = "(log_dir, max_age_days=None, *, patterns=['*.log'], dry_run=False, remove_empty_dirs=True)")]
pub fn cleanup_old_logs(
    py: Python<'_>,
    log_dir: PathBuf,
    max_age_days: Option<&Bound<'_, PyAny>>,
    patterns: Vec<String>,
    dry_run: bool,
    remove_empty_dirs: bool,
) -> PyResult<CleanupReport> {
    // A number of any size or kind becomes InvalidArgumentError, never OverflowError/TypeError.
    let max_age_days: f64 = match max_age_days {
        None => 7.0,
        Some(v) => v.extract().map_err(|_| {
            Error::invalid(format!(
                "max_age_days must be a number of days, got {}",
                shown(v)
            ))
        })?,
    };
    let options = LogCleanup {
        max_age_days,
        patterns,
        dry_run,
        remove_empty_dirs,
    };
    let r = py.detach(|| logs::cleanup_old_logs(&log_dir, &options))?;
    Ok(CleanupReport {
        files: r.files,
        bytes: r.bytes,
        paths: r.paths.iter().map(|p| p.display().to_string()).collect(),
        dirs_removed: r.dirs_removed,
        dry_run: r.dry_run,
        errors: r.errors,
        error_count: r.error_count,
    })
}

/// A value for a message: its `str()`, at most 40 characters.
fn shown(v: &Bound<'_, PyAny>) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// Health-report threshold overrides from any Python mapping: every value must be a number
/// (an int of any size, a float); anything else is an InvalidArgumentError, never a
/// TypeError or OverflowError. The range is checked by `Thresholds::with_overrides`.
pub fn threshold_overrides(
    thresholds: Option<&Bound<'_, PyDict>>,
) -> PyResult<std::collections::BTreeMap<String, f64>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(d) = thresholds else {
        return Ok(out);
    };
    for (k, v) in d.iter() {
        let key: String = k.extract().map_err(|_| {
            Error::invalid(format!("threshold names are strings, got {}", shown(&k)))
        })?;
        let value: f64 = v.extract().map_err(|_| {
            Error::invalid(format!(
                "threshold {key} must be a number, got {}",
                shown(&v)
            ))
        })?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A serde value as plain Python objects (dicts, lists, str, int, float, None).
pub fn to_python<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::Database(format!("cannot encode the report: {e}")))?;
    py.import("json")?.getattr("loads")?.call1((text,))
}
