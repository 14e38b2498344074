//! Conversions between Python values and the core's types.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::downloads::{Download, DownloadStats};
use crate::errors::Error;
use crate::jobs::{ClaimedJob, Job};
use crate::stats::JobStats;

/// A `str` argument, extracted so that a string PostgreSQL cannot store (an unpaired
/// surrogate) is an `InvalidArgumentError`, not a `UnicodeEncodeError` from deep inside.
pub struct Text(pub String);

impl<'a, 'py> FromPyObject<'a, 'py> for Text {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let s = obj.cast::<PyString>()?;
        match s.to_str() {
            Ok(v) => Ok(Text(v.to_owned())),
            Err(_) => Err(Error::invalid(
                "a text argument contains an unpaired surrogate, which is not valid Unicode \
                 and cannot be stored; fix the string's encoding",
            )
            .into()),
        }
    }
}

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An integer setting: any Python int (or a value with `__index__`); one that does not fit
/// is a `ConfigurationError` naming the setting, never an `OverflowError`.
pub fn config_int(name: &str, value: &Bound<'_, PyAny>) -> PyResult<i128> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::Configuration(format!("{name} must be an integer, got a bool")).into());
    }
    match value.extract::<i128>() {
        Ok(n) => Ok(n),
        Err(_) if value.is_instance_of::<pyo3::types::PyInt>() => Err(Error::Configuration(
            format!("{name} is out of range: {}", short_repr(value)),
        )
        .into()),
        Err(_) => Err(Error::Configuration(format!(
            "{name} must be an integer, got {}",
            short_repr(value)
        ))
        .into()),
    }
}

/// A number of seconds (int or float); `None` means `default`. A value that no float can
/// hold is a `ConfigurationError`; the range is checked by the core.
pub fn config_seconds(name: &str, value: Option<&Bound<'_, PyAny>>, default: f64) -> PyResult<f64> {
    let Some(value) = value else {
        return Ok(default);
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::Configuration(format!("{name} must be a number, got a bool")).into());
    }
    value.extract::<f64>().map_err(|_| {
        Error::Configuration(format!(
            "{name} must be a number of seconds, got {}",
            short_repr(value)
        ))
        .into()
    })
}

fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string());
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

pub fn opt_str(t: Option<&Text>) -> Option<&str> {
    t.map(Text::as_str)
}

pub fn job_dict<'py>(py: Python<'py>, job: &Job) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", job.id)?;
    d.set_item("prompt_text", &job.prompt_text)?;
    d.set_item("status", &job.status)?;
    d.set_item("job_type", &job.job_type)?;
    d.set_item("local_path", &job.local_path)?;
    d.set_item("gcs_uri", &job.gcs_uri)?;
    d.set_item("operation_id", &job.operation_id)?;
    d.set_item("error_message", &job.error_message)?;
    d.set_item("created_at", job.created_at)?;
    d.set_item("updated_at", job.updated_at)?;
    Ok(d)
}

pub fn claimed_dict<'py>(py: Python<'py>, job: &ClaimedJob) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", job.id)?;
    d.set_item("prompt_text", &job.prompt_text)?;
    d.set_item("job_type", &job.job_type)?;
    d.set_item("created_at", job.created_at)?;
    Ok(d)
}

pub fn download_dict<'py>(py: Python<'py>, x: &Download) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", x.id)?;
    d.set_item("job_id", x.job_id)?;
    d.set_item("remote_url", &x.remote_url)?;
    d.set_item("local_path", &x.local_path)?;
    d.set_item("file_type", &x.file_type)?;
    d.set_item("file_size", x.file_size)?;
    d.set_item("status", &x.status)?;
    d.set_item("priority", x.priority)?;
    d.set_item("attempts", x.attempts)?;
    d.set_item("max_attempts", x.max_attempts)?;
    d.set_item("error_message", &x.error_message)?;
    d.set_item("started_at", x.started_at)?;
    d.set_item("completed_at", x.completed_at)?;
    d.set_item("created_at", x.created_at)?;
    d.set_item("updated_at", x.updated_at)?;
    d.set_item("prompt_text", &x.prompt_text)?;
    d.set_item("job_type", &x.job_type)?;
    Ok(d)
}

pub fn job_stats_dict<'py>(py: Python<'py>, stats: &JobStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (job_type, statuses) in stats {
        let inner = PyDict::new(py);
        for (status, count) in statuses {
            inner.set_item(status, count)?;
        }
        d.set_item(job_type, inner)?;
    }
    Ok(d)
}

/// The old `get_download_stats` shape: `by_status`, `by_type`, `summary`.
pub fn download_stats_dict<'py>(
    py: Python<'py>,
    stats: &DownloadStats,
) -> PyResult<Bound<'py, PyDict>> {
    let by_status = PyDict::new(py);
    for (status, (count, size)) in &stats.by_status {
        let entry = PyDict::new(py);
        entry.set_item("count", count)?;
        entry.set_item("total_size", size)?;
        by_status.set_item(status, entry)?;
    }
    let by_type = PyDict::new(py);
    for (file_type, statuses) in &stats.by_type {
        let entry = PyDict::new(py);
        for (status, count) in statuses {
            entry.set_item(status, count)?;
        }
        by_type.set_item(file_type, entry)?;
    }
    let summary = PyDict::new(py);
    summary.set_item("total_files", stats.total_files)?;
    summary.set_item("total_downloaded_size", stats.total_downloaded_size)?;
    let d = PyDict::new(py);
    d.set_item("by_status", by_status)?;
    d.set_item("by_type", by_type)?;
    d.set_item("summary", summary)?;
    Ok(d)
}
