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

/// A number of seconds from Python as a `Duration`: finite, positive and at most `max_s`
/// (a float such as `1e300` must be an `InvalidArgumentError`, never a panic).
pub fn seconds_arg(name: &str, value: f64, max_s: f64) -> Result<std::time::Duration, Error> {
    if value.is_finite() && value > 0.0 && value <= max_s {
        if let Ok(d) = std::time::Duration::try_from_secs_f64(value) {
            return Ok(d);
        }
    }
    Err(Error::invalid(format!(
        "{name} must be a positive number of seconds, at most {max_s}, got {value}"
    )))
}

/// An `int` argument that may be out of any sensible range (`-1`, `2**70`): extracted so that
/// the range check gives an `InvalidArgumentError`, never an `OverflowError`.
pub struct Count(pub i64);

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(v) => Ok(Count(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => Err(
                Error::invalid(format!("{} is out of range for this argument", obj.str()?)).into(),
            ),
            Err(e) => Err(e),
        }
    }
}

/// How many backups rotation keeps: at least 1 (a negative or zero `keep` never reaches
/// the deleting code).
pub fn keep_arg(keep: Count) -> Result<usize, Error> {
    let keep = keep.0;
    usize::try_from(keep)
        .ok()
        .filter(|k| *k >= 1)
        .ok_or_else(|| {
            Error::invalid(format!(
                "keep must be at least 1 (rotation never deletes every backup), got {keep}"
            ))
        })
}

/// `compress=` of a backup: False (none), True (zstd, the default compressed format), or the
/// name "zstd" / "gzip".
pub fn compression_arg(value: &Bound<'_, PyAny>) -> PyResult<crate::backup::format::Compression> {
    use crate::backup::format::Compression;
    if let Ok(on) = value.extract::<bool>() {
        return Ok(if on {
            Compression::Zstd
        } else {
            Compression::None
        });
    }
    match value.extract::<String>().as_deref() {
        Ok("zstd") => Ok(Compression::Zstd),
        Ok("gzip") => Ok(Compression::Gzip),
        _ => {
            Err(Error::invalid("compress must be False, True (zstd), \"zstd\" or \"gzip\"").into())
        }
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
