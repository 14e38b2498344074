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

/// Run by `os.fork()` before it forks (registered with `os.register_at_fork`): closes this
/// process's connection pools and waits for their threads, see `pool::release_for_fork`.
#[pyfunction]
fn _release_pools_before_fork(py: Python<'_>) {
    match py.detach(|| crate::pool::release_for_fork(std::time::Duration::from_secs(1))) {
        Ok(0) => {}
        Ok(n) => log::debug!("closed {n} connection pool(s) before fork()"),
        Err(e) => log::warn!("fork() while {e}: the child process may fail"),
    }
}

/// pyo3-log, minus one hazard: Python's logging runs Python code, so a signal that arrived
/// while a call was blocked (Ctrl-C) has its handler run inside the logging call, and pyo3-log
/// leaves the KeyboardInterrupt set on the thread. The call then fails with a SystemError
/// ("returned a result with an exception set"), or turns its typed error into a RuntimeError,
/// and the Ctrl-C is lost. Here an exception raised while logging is taken off the thread: a
/// KeyboardInterrupt is delivered again (`_thread.interrupt_main()`, as if Ctrl-C were pressed
/// now: the next signal check or bytecode raises it), anything else is reported as
/// unraisable, as Python does for errors in `__del__`.
struct SignalSafeLogger(pyo3_log::Logger);

impl log::Log for SignalSafeLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        Python::attach(|py| {
            let before = PyErr::take(py);
            self.0.log(record);
            if let Some(raised) = PyErr::take(py) {
                if raised.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    if let Err(e) = py
                        .import("_thread")
                        .and_then(|t| t.call_method0("interrupt_main"))
                    {
                        e.write_unraisable(py, None);
                    }
                } else {
                    raised.write_unraisable(py, None);
                }
            }
            if let Some(e) = before {
                e.restore(py);
            }
        });
    }

    fn flush(&self) {
        self.0.flush();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Rust `log` records go to Python `logging`, under the `job_manager` logger tree (server
    // notices too: config.rs). The crates under us (the driver's per-query debug trace, r2d2,
    // rustls) pass only their warnings and errors: their chatter is not the operator's news.
    // Levels are cached so a disabled level costs no GIL round trip; reset_log_cache()
    // refreshes them.
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels)?
        .filter(log::LevelFilter::Warn)
        .filter_target("job_manager".to_owned(), log::LevelFilter::Trace);
    let handle = logger.reset_handle();
    if log::set_boxed_logger(Box::new(SignalSafeLogger(logger))).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SCHEMA_VERSION", crate::schema::latest_version())?;
    m.add_class::<manager::JobManager>()?;
    m.add_class::<manager::PoolStatus>()?;
    m.add_class::<backup::BackupInfo>()?;
    m.add_class::<backup::RestoreInfo>()?;
    m.add_class::<backup::ImportInfo>()?;
    m.add_function(wrap_pyfunction!(backup::verify_backup, m)?)?;
    m.add_function(wrap_pyfunction!(backup::list_backups, m)?)?;
    m.add_function(wrap_pyfunction!(backup::cleanup_old_backups, m)?)?;
    m.add_class::<maintenance::CleanupReport>()?;
    m.add_function(wrap_pyfunction!(maintenance::cleanup_old_logs, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    let release = wrap_pyfunction!(_release_pools_before_fork, m)?;
    m.add_function(release.clone())?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("before", release)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}
