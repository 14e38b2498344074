//! The PyO3 layer: converts arguments, releases the GIL around the core, converts results.
//! No SQL and no queue logic lives here.

mod backup;
mod convert;
mod errors;
mod maintenance;
mod manager;

use std::sync::OnceLock;

use pyo3::prelude::*;

static LOG_RESET: OnceLock<pyo3_log::ResetHandle> = OnceLock::new();

/// Forgets the cached Python logger levels, so a level set after the first log record counts.
#[pyfunction]
fn reset_log_cache() {
    if let Some(handle) = LOG_RESET.get() {
        handle.reset();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Rust `log` records go to Python `logging`, under the `job_manager` logger tree. Levels
    // are cached so a disabled level costs no GIL round trip; reset_log_cache() refreshes them.
    if let Ok(handle) = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels)?.install() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SCHEMA_VERSION", crate::schema::latest_version())?;
    m.add_class::<manager::JobManager>()?;
    m.add_class::<manager::PoolStatus>()?;
    m.add_class::<backup::BackupInfo>()?;
    m.add_class::<backup::RestoreInfo>()?;
    m.add_function(wrap_pyfunction!(backup::verify_backup, m)?)?;
    m.add_function(wrap_pyfunction!(backup::list_backups, m)?)?;
    m.add_function(wrap_pyfunction!(backup::cleanup_old_backups, m)?)?;
    m.add_class::<maintenance::CleanupReport>()?;
    m.add_function(wrap_pyfunction!(maintenance::cleanup_old_logs, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    Ok(())
}
