//! job_manager: a PostgreSQL-backed job queue for Apache Airflow.
//!
//! The core (configuration, pool, schema, queue) is plain Rust; `bindings` is the thin PyO3
//! layer that the Python package `job_manager` loads as `job_manager._internal`.

pub mod backup;
pub mod config;
pub mod downloads;
pub mod errors;
pub mod jobs;
pub mod logs;
pub mod maintenance;
pub mod model;
pub mod planner;
pub mod pool;
pub mod schema;
pub mod stats;
pub mod transport;
pub mod unnamed;
pub mod wait;

#[cfg(feature = "python")]
mod bindings;

pub use errors::{Error, Result};

/// The extension module `job_manager._internal`.
#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _internal(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    bindings::register(m)
}
