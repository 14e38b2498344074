//! Maps the crate's [`Error`] to the Python hierarchy of `job_manager.exceptions`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::errors::Error;

const MODULE: &str = "job_manager.exceptions";

static CONFIGURATION: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UNAVAILABLE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SCHEMA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATABASE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BACKUP: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BACKUP_CORRUPT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let (cell, name) = match &err {
            Error::Configuration(_) => (&CONFIGURATION, "ConfigurationError"),
            Error::Unavailable(_) => (&UNAVAILABLE, "DatabaseUnavailableError"),
            Error::Schema(_) => (&SCHEMA, "SchemaError"),
            Error::InvalidArgument(_) => (&INVALID_ARGUMENT, "InvalidArgumentError"),
            Error::Database(_) => (&DATABASE, "DatabaseError"),
            Error::Backup(_) => (&BACKUP, "BackupError"),
            Error::BackupCorrupt(_) => (&BACKUP_CORRUPT, "BackupCorruptError"),
        };
        Python::attach(|py| match cell.import(py, MODULE, name) {
            Ok(class) => PyErr::from_type(class.clone(), err.to_string()),
            // Only if the package is broken: keep the message rather than lose it.
            Err(import_error) => PyRuntimeError::new_err(format!(
                "{err} (and {MODULE}.{name} could not be loaded: {import_error})"
            )),
        })
    }
}
