//! `JobManager`: the Python face of the core. Each method converts its arguments, releases the
//! GIL for everything that can block (pool checkout, connect, queries), and converts the result.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::backup::{BackupInfo, RestoreInfo};
use super::convert::{
    claimed_dict, config_int, config_seconds, download_dict, download_stats_dict, job_dict,
    job_stats_dict, opt_str, Count, Text,
};
use super::maintenance::to_python;
use crate::config::{
    Options, Settings, DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_IO_TIMEOUT_S, DEFAULT_LONG_IO_TIMEOUT_S,
};
use crate::maintenance::{self as upkeep, Thresholds};
use crate::model::{DownloadStatus, FileType, JobType};
use crate::pool::{LazyPool, PoolState};
use crate::schema::{self, InitOptions};
use crate::{backup, downloads, jobs, stats, wait};

/// A job queue in PostgreSQL. Construction does no I/O; the pool opens on first use.
#[pyclass(
    frozen,
    subclass,
    name = "JobManager",
    module = "job_manager._internal"
)]
pub struct JobManager {
    pool: LazyPool,
    cursor: jobs::ClaimCursor,
    /// `get_connection()`'s psycopg2 pool (`job_manager._dbapi.Pool`), made on first use.
    dbapi: PyOnceLock<Py<PyAny>>,
    listeners: wait::ListenerSlot,
}

/// Connections of a `JobManager`'s pool in this process.
#[pyclass(
    frozen,
    get_all,
    eq,
    name = "PoolStatus",
    module = "job_manager._internal"
)]
#[derive(PartialEq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    max_size: u32,
    /// Connections open now.
    size: u32,
    /// Open connections waiting for a caller.
    idle: u32,
    /// Open connections lent to a caller.
    in_use: u32,
}

#[pymethods]
impl PoolStatus {
    fn __repr__(&self) -> String {
        format!(
            "PoolStatus(max_size={}, size={}, idle={}, in_use={})",
            self.max_size, self.size, self.idle, self.in_use
        )
    }
}

impl From<PoolState> for PoolStatus {
    fn from(s: PoolState) -> Self {
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            idle: s.idle,
            in_use: s.in_use,
        }
    }
}

fn job_type(text: &Text) -> PyResult<JobType> {
    Ok(JobType::parse(text.as_str())?)
}

/// The longest wait accepted (30 days), in seconds.
const MAX_WAIT_S: f64 = 30.0 * 86_400.0;

/// A wait's timeout: zero (one check) up to [`MAX_WAIT_S`].
fn wait_timeout(timeout: f64) -> PyResult<std::time::Duration> {
    if timeout.is_finite() && (0.0..=MAX_WAIT_S).contains(&timeout) {
        return Ok(std::time::Duration::from_secs_f64(timeout));
    }
    Err(crate::errors::Error::invalid(format!(
        "timeout must be a number of seconds from 0 to {MAX_WAIT_S} (30 days), got {timeout}"
    ))
    .into())
}

/// The entries of a batch ending: `(job_id, text or None)`.
fn endings(items: Vec<(Count, Option<Text>)>) -> Vec<(i64, Option<String>)> {
    items
        .into_iter()
        .map(|(id, t)| (id.0, t.map(|t| t.0)))
        .collect()
}

fn texts(values: &[Text]) -> Vec<String> {
    values.iter().map(|t| t.0.clone()).collect()
}

impl JobManager {
    /// Runs a wait (see `wait::wait_for`) with the GIL released, taking it back between slices
    /// to look for Ctrl-C: a pending KeyboardInterrupt ends the wait and is raised.
    fn wait<T: Send>(
        &self,
        py: Python<'_>,
        job_type: JobType,
        timeout: std::time::Duration,
        attempt: impl FnMut() -> crate::errors::Result<Option<T>> + Send,
    ) -> PyResult<Option<T>> {
        let threading = py.import("threading")?;
        let main = threading
            .call_method0("main_thread")?
            .is(&threading.call_method0("current_thread")?);
        let slice = if main { wait::SLICE } else { wait::LONG_SLICE };
        let mut signal: Option<PyErr> = None;
        let waited = py.detach(|| {
            wait::wait_for(
                &self.pool,
                &self.listeners,
                job_type,
                timeout,
                slice,
                attempt,
                || {
                    Python::attach(|py| match py.check_signals() {
                        Ok(()) => false,
                        Err(e) => {
                            signal = Some(e);
                            true
                        }
                    })
                },
            )
        })?;
        match waited {
            wait::Waited::Got(v) => Ok(Some(v)),
            wait::Waited::TimedOut => Ok(None),
            wait::Waited::Interrupted => Err(signal.unwrap_or_else(|| {
                pyo3::exceptions::PyKeyboardInterrupt::new_err("the wait was interrupted")
            })),
        }
    }
}

#[pymethods]
impl JobManager {
    #[new]
    #[pyo3(signature = (
        dsn=None,
        *,
        pool_size=None,
        connect_timeout=None,
        io_timeout=None,
        long_io_timeout=None,
        application_name=None,
        prepared_statements=true,
        dbapi_pool_size=None,
    ), text_signature = "(dsn=None, *, pool_size=4, connect_timeout=10.0, io_timeout=30.0, long_io_timeout=3600.0, application_name=None, prepared_statements=True, dbapi_pool_size=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dsn: Option<Text>,
        pool_size: Option<&Bound<'_, PyAny>>,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        io_timeout: Option<&Bound<'_, PyAny>>,
        long_io_timeout: Option<&Bound<'_, PyAny>>,
        application_name: Option<Text>,
        prepared_statements: bool,
        dbapi_pool_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let defaults = Options::default();
        let options = Options {
            pool_size: match pool_size {
                Some(v) => config_int("pool_size", v)?,
                None => defaults.pool_size,
            },
            connect_timeout_s: config_seconds(
                "connect_timeout",
                connect_timeout,
                DEFAULT_CONNECT_TIMEOUT_S,
            )?,
            io_timeout_s: config_seconds("io_timeout", io_timeout, DEFAULT_IO_TIMEOUT_S)?,
            long_io_timeout_s: config_seconds(
                "long_io_timeout",
                long_io_timeout,
                DEFAULT_LONG_IO_TIMEOUT_S,
            )?,
            application_name: application_name.map(|t| t.0),
            prepared_statements,
            dbapi_pool_size: dbapi_pool_size
                .map(|v| config_int("dbapi_pool_size", v))
                .transpose()?,
        };
        let settings =
            Settings::resolve(opt_str(dsn.as_ref()), &options, |k| std::env::var(k).ok())?;
        Ok(JobManager {
            pool: LazyPool::new(settings),
            cursor: jobs::ClaimCursor::default(),
            dbapi: PyOnceLock::new(),
            listeners: wait::ListenerSlot::default(),
        })
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let s = slf.get().pool.settings();
        Ok(format!(
            "{}(dsn='{}', pool_size={}, connect_timeout={:?})",
            slf.get_type().name()?,
            s.redacted_dsn(),
            s.pool_size(),
            s.connect_timeout().as_secs_f64()
        ))
    }

    /// The DSN with the password replaced by `***`.
    #[getter]
    fn dsn(&self) -> &str {
        self.pool.settings().redacted_dsn()
    }

    #[getter]
    /// The most connections this JobManager's pool opens.
    fn pool_size(&self) -> u32 {
        self.pool.settings().pool_size()
    }

    #[getter]
    /// The most connections `get_connection()` keeps open in this process (default: pool_size).
    fn dbapi_pool_size(&self) -> u32 {
        self.pool.settings().dbapi_pool_size()
    }

    #[getter]
    /// Seconds a new connection may take (login included) before DatabaseUnavailableError.
    fn connect_timeout(&self) -> f64 {
        self.pool.settings().connect_timeout().as_secs_f64()
    }

    #[getter]
    /// Seconds an ordinary call may wait for a silent server before DatabaseUnavailableError.
    fn io_timeout(&self) -> f64 {
        self.pool.settings().io_timeout().as_secs_f64()
    }

    #[getter]
    /// Seconds a backup, restore or import may wait for a silent server (data flowing keeps it alive).
    fn long_io_timeout(&self) -> f64 {
        self.pool.settings().long_io_timeout().as_secs_f64()
    }

    #[getter]
    /// The TLS mode in force, as libpq names it (disable, allow, prefer, require, verify-ca, verify-full).
    fn sslmode(&self) -> &'static str {
        self.pool.settings().tls().mode.as_str()
    }

    #[getter]
    /// Whether named prepared statements are used (False behind PgBouncer in transaction pooling).
    fn prepared_statements(&self) -> bool {
        self.pool.settings().prepared_statements()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// Closes this process's connections (`get_connection()`'s idle ones too, and those lent
    /// out when they come back); the next call opens a new pool.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(dbapi) = self.dbapi.get(py) {
            dbapi.bind(py).call_method0("close")?;
        }
        py.detach(|| {
            self.listeners.close();
            self.pool.close();
        });
        Ok(())
    }

    /// A context manager lending a psycopg2 connection made from this JobManager's settings
    /// (see `job_manager._dbapi`): commit when the block ends, rollback on an exception, and
    /// the connection goes back to a pool of at most `dbapi_pool_size`.
    fn get_connection<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let dbapi = this.dbapi.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let s = this.pool.settings();
            let params = PyDict::new(py);
            for (key, value) in s.dbapi_params() {
                params.set_item(key, value)?;
            }
            // The bound the queue's own calls have, as a server-side statement_timeout; not
            // behind PgBouncer in transaction pooling (a SET would follow the server
            // connection to other clients).
            let statement_timeout_ms = s
                .prepared_statements()
                .then(|| u64::try_from(s.io_timeout().as_millis()).unwrap_or(u64::MAX));
            let pool = py.import("job_manager._dbapi")?.getattr("Pool")?.call1((
                params,
                s.dbapi_pool_size(),
                s.connect_timeout().as_secs_f64(),
                s.redacted_dsn(),
                statement_timeout_ms,
            ))?;
            Ok(pool.unbind())
        })?;
        dbapi.bind(py).call_method0("connection")
    }

    /// The pool's state: whether it is open, its size, connections idle and in use.
    fn pool_status(&self) -> PoolStatus {
        self.pool.state().into()
    }

    #[pyo3(signature = (table_name=Text("jobs".to_owned())), text_signature = "($self, table_name='jobs')")]
    /// Whether the table exists in the current schema (the name is a query parameter).
    fn check_table_exists(&self, py: Python<'_>, table_name: Text) -> PyResult<bool> {
        Ok(py.detach(|| schema::table_exists(&self.pool, table_name.as_str()))?)
    }

    #[pyo3(signature = (*, lock_timeout=5.0))]
    /// Apply the missing migrations and return their labels (``[]`` when current).
    ///
    /// Additive only: never drops a table, a column or a row. Safe to call from many processes
    /// at once (an advisory lock serialises them). DDL waits at most ``lock_timeout`` seconds
    /// for a table lock, then raises :class:`SchemaError`.
    fn init_database(&self, py: Python<'_>, lock_timeout: f64) -> PyResult<Vec<String>> {
        let options = InitOptions {
            lock_timeout: super::convert::seconds_arg("lock_timeout", lock_timeout, 86_400.0)?,
            ..InitOptions::default()
        };
        Ok(py.detach(|| {
            self.pool
                .run_long(|c| schema::init_database(c.client(), options))
        })?)
    }

    /// Labels of the migrations ``init_database`` would apply now.
    fn pending_migrations(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(py.detach(|| self.pool.run(|c| schema::pending(c.client())))?)
    }

    /// Queue a job; return its id, or the id of the job that already has this prompt.
    fn add_job(&self, py: Python<'_>, prompt_text: Text, job_type: Text) -> PyResult<i32> {
        let t = self::job_type(&job_type)?;
        Ok(py.detach(|| jobs::add_job(&self.pool, prompt_text.as_str(), t))?)
    }

    /// Queue many jobs with COPY; return how many were new (prompts already queued, and
    /// repeats in ``prompts``, are skipped). All or nothing.
    fn add_jobs(&self, py: Python<'_>, prompts: Vec<Text>, job_type: Text) -> PyResult<u64> {
        let t = self::job_type(&job_type)?;
        let prompts = texts(&prompts);
        Ok(py.detach(|| jobs::add_jobs(&self.pool, &prompts, t))?)
    }

    /// How many of ``prompts`` are queued already, per job type: ``{job_type: count}`` (the
    /// prompts ``add_jobs`` skips, whatever type they were queued as).
    fn queued_job_types<'py>(
        &self,
        py: Python<'py>,
        prompts: Vec<Text>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prompts = texts(&prompts);
        let counts = py.detach(|| jobs::queued_job_types(&self.pool, &prompts))?;
        let d = PyDict::new(py);
        let mut sorted: Vec<_> = counts.into_iter().collect();
        sorted.sort();
        for (t, n) in sorted {
            d.set_item(t, n)?;
        }
        Ok(d)
    }

    /// Queue IMAGE_TEST jobs; return how many of the prompts are now queued as IMAGE_TEST.
    fn add_test_jobs(&self, py: Python<'_>, prompts: Vec<Text>) -> PyResult<u64> {
        let prompts = texts(&prompts);
        Ok(py.detach(|| jobs::add_test_jobs(&self.pool, &prompts))?)
    }

    /// Print the job counts per type and status in the old format.
    fn show_stats(&self, py: Python<'_>) -> PyResult<()> {
        let stats = py.detach(|| stats::get_job_stats(&self.pool))?;
        let text = stats::format_stats(&stats);
        py.import("builtins")?.getattr("print")?.call1((text,))?;
        Ok(())
    }

    /// ``{job_type: {status: count}}``.
    fn get_job_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| stats::get_job_stats(&self.pool))?;
        job_stats_dict(py, &stats)
    }

    #[pyo3(signature = (job_type=None, older_than_seconds=3600.0, *, dry_run=false))]
    /// Put jobs ``processing`` for longer than ``older_than_seconds`` back to ``pending``;
    /// return how many. With ``dry_run``, change nothing and return how many it would reset.
    fn reset_stuck_jobs(
        &self,
        py: Python<'_>,
        job_type: Option<Text>,
        older_than_seconds: f64,
        dry_run: bool,
    ) -> PyResult<u64> {
        let t = job_type.as_ref().map(self::job_type).transpose()?;
        // At most a century: beyond it the server's timestamp arithmetic overflows.
        if !(older_than_seconds.is_finite() && older_than_seconds.abs() <= 3.2e9) {
            return Err(crate::errors::Error::invalid(format!(
                "older_than_seconds must be a number of seconds up to a century, got {older_than_seconds}"
            ))
            .into());
        }
        if dry_run {
            return Ok(py.detach(|| jobs::count_stuck_jobs(&self.pool, t, older_than_seconds))?);
        }
        Ok(py.detach(|| jobs::reset_stuck_jobs(&self.pool, t, older_than_seconds))?)
    }

    /// Claim the oldest pending job of a type (it becomes ``processing``); each job is
    /// claimed by exactly one caller, however many workers. ``None`` when none is pending.
    ///
    /// Repeated claims on one JobManager continue after its previous claim (skipping the
    /// index entries of claimed jobs); a job re-queued behind that point is claimed when the
    /// jobs after it run out, or within 1,000 claims.
    fn get_and_lock_job<'py>(
        &self,
        py: Python<'py>,
        job_type: Text,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let t = self::job_type(&job_type)?;
        let job = py.detach(|| jobs::get_and_lock_job(&self.pool, t, &self.cursor))?;
        job.map(|j| claimed_dict(py, &j)).transpose()
    }

    /// Claim up to ``limit`` (1 to 10,000) of the oldest pending jobs of a type in one round
    /// trip, with the guarantees of ``get_and_lock_job``; oldest first, ``[]`` when none is
    /// pending.
    fn get_and_lock_jobs<'py>(
        &self,
        py: Python<'py>,
        job_type: Text,
        limit: Count,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = self::job_type(&job_type)?;
        let claimed =
            py.detach(|| jobs::get_and_lock_jobs(&self.pool, t, &self.cursor, limit.0))?;
        let list = PyList::empty(py);
        for j in &claimed {
            list.append(claimed_dict(py, j)?)?;
        }
        Ok(list)
    }

    /// Mark many jobs completed in one round trip: ``[(job_id, local_path or None), ...]``
    /// (None keeps the job's local_path). Returns the ids marked, in the order given; ids
    /// with no job, and jobs that were not ``processing``, are logged as warnings.
    fn mark_jobs_as_completed(
        &self,
        py: Python<'_>,
        jobs: Vec<(Count, Option<Text>)>,
    ) -> PyResult<Vec<i32>> {
        let items = endings(jobs);
        Ok(py.detach(|| jobs::mark_jobs_completed(&self.pool, &items))?)
    }

    /// Mark many jobs failed in one round trip: ``[(job_id, error_message or None), ...]``.
    /// Returns the ids marked, in the order given; ids with no job, and jobs that were not
    /// ``processing``, are logged as warnings.
    fn mark_jobs_as_failed(
        &self,
        py: Python<'_>,
        jobs: Vec<(Count, Option<Text>)>,
    ) -> PyResult<Vec<i32>> {
        let items = endings(jobs);
        Ok(py.detach(|| jobs::mark_jobs_failed(&self.pool, &items))?)
    }

    /// Block (GIL released) until a job of this type is pending, or ``timeout`` seconds pass:
    /// ``True`` when one is pending. Woken by LISTEN/NOTIFY (polling with backoff when
    /// ``prepared_statements=False``); Ctrl-C ends it within 0.2 s (a check of the queue
    /// already sent finishes first, within ``io_timeout``).
    fn wait_for_job(&self, py: Python<'_>, job_type: Text, timeout: f64) -> PyResult<bool> {
        let t = self::job_type(&job_type)?;
        let timeout = wait_timeout(timeout)?;
        let found = self.wait(py, t, timeout, || {
            Ok(jobs::has_pending(&self.pool, t)?.then_some(()))
        })?;
        Ok(found.is_some())
    }

    /// ``get_and_lock_job`` that waits (GIL released, as ``wait_for_job``) up to ``timeout``
    /// seconds for a job to claim; ``None`` when none came.
    fn wait_and_lock_job<'py>(
        &self,
        py: Python<'py>,
        job_type: Text,
        timeout: f64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let t = self::job_type(&job_type)?;
        let timeout = wait_timeout(timeout)?;
        let job = self.wait(py, t, timeout, || {
            jobs::get_and_lock_job(&self.pool, t, &self.cursor)
        })?;
        job.map(|j| claimed_dict(py, &j)).transpose()
    }

    /// ``get_and_lock_jobs`` that waits (GIL released, as ``wait_for_job``) up to ``timeout``
    /// seconds for at least one job; returns what one claim took then (up to ``limit``), or
    /// ``[]``.
    fn wait_and_lock_jobs<'py>(
        &self,
        py: Python<'py>,
        job_type: Text,
        limit: Count,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = self::job_type(&job_type)?;
        let timeout = wait_timeout(timeout)?;
        let limit = limit.0;
        if !(1..=jobs::MAX_BATCH).contains(&limit) {
            // The same message as the claim's, before any wait.
            py.detach(|| jobs::get_and_lock_jobs(&self.pool, t, &self.cursor, limit))?;
        }
        let claimed = self.wait(py, t, timeout, || {
            let got = jobs::get_and_lock_jobs(&self.pool, t, &self.cursor, limit)?;
            Ok((!got.is_empty()).then_some(got))
        })?;
        let list = PyList::empty(py);
        for j in claimed.iter().flatten() {
            list.append(claimed_dict(py, j)?)?;
        }
        Ok(list)
    }

    #[pyo3(signature = (job_id, local_path=None, gcs_uri=None))]
    /// Mark completed, setting the paths given; ``True`` when it was marked. When no job
    /// has this id: ``False``, with a warning logged (``job_manager.jobs``), nothing changed.
    fn mark_job_as_completed(
        &self,
        py: Python<'_>,
        job_id: Count,
        local_path: Option<Text>,
        gcs_uri: Option<Text>,
    ) -> PyResult<bool> {
        Ok(py.detach(|| {
            jobs::mark_completed(
                &self.pool,
                job_id.0,
                opt_str(local_path.as_ref()),
                opt_str(gcs_uri.as_ref()),
            )
        })?)
    }

    #[pyo3(signature = (job_id, error_message=None))]
    /// Mark failed and store ``error_message``; ``True`` when it was marked. When no job
    /// has this id: ``False``, with a warning logged (``job_manager.jobs``), nothing changed.
    fn mark_job_as_failed(
        &self,
        py: Python<'_>,
        job_id: Count,
        error_message: Option<Text>,
    ) -> PyResult<bool> {
        Ok(py.detach(|| jobs::mark_failed(&self.pool, job_id.0, opt_str(error_message.as_ref())))?)
    }

    /// Marks a job awaiting_retry. Returns False (and logs a warning) when no job has this id.
    fn mark_job_as_awaiting_retry(&self, py: Python<'_>, job_id: Count) -> PyResult<bool> {
        Ok(py.detach(|| jobs::mark_awaiting_retry(&self.pool, job_id.0))?)
    }

    /// Marks a job generation_successful with its gcs_uri. Returns False (and logs a warning) when no job has this id.
    fn mark_job_as_generation_successful(
        &self,
        py: Python<'_>,
        job_id: Count,
        gcs_uri: Text,
    ) -> PyResult<bool> {
        Ok(py.detach(|| jobs::mark_generation_successful(&self.pool, job_id.0, gcs_uri.as_str()))?)
    }

    /// Records the operation id of a job's generation. Returns False when no job has this id.
    fn update_job_operation_info(
        &self,
        py: Python<'_>,
        job_id: Count,
        operation_id: Text,
    ) -> PyResult<bool> {
        Ok(py.detach(|| jobs::update_operation_id(&self.pool, job_id.0, operation_id.as_str()))?)
    }

    /// The job's operation_id, or None when it has none or the job does not exist.
    fn get_job_operation_id(&self, py: Python<'_>, job_id: Count) -> PyResult<Option<String>> {
        Ok(py.detach(|| jobs::get_operation_id(&self.pool, job_id.0))?)
    }

    /// Records where a job's output was stored. Returns False when no job has this id.
    fn update_job_gcs_uri(&self, py: Python<'_>, job_id: Count, gcs_uri: Text) -> PyResult<bool> {
        Ok(py.detach(|| jobs::update_gcs_uri(&self.pool, job_id.0, gcs_uri.as_str()))?)
    }

    /// The job with this id as a dict (every column), or None when there is none.
    fn get_job_by_id<'py>(
        &self,
        py: Python<'py>,
        job_id: Count,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let job = py.detach(|| jobs::get_job_by_id(&self.pool, job_id.0))?;
        job.map(|j| job_dict(py, &j)).transpose()
    }

    #[pyo3(signature = (job_id, remote_url, local_path, file_type, priority=Count(0)), text_signature = "($self, job_id, remote_url, local_path, file_type, priority=0)")]
    /// Queue a download for an existing job; return the new download's id.
    fn add_download_task(
        &self,
        py: Python<'_>,
        job_id: Count,
        remote_url: Text,
        local_path: Text,
        file_type: Text,
        priority: Count,
    ) -> PyResult<i32> {
        let ft = FileType::parse(file_type.as_str())?;
        let priority = i32::try_from(priority.0).map_err(|_| {
            crate::errors::Error::invalid(format!("priority {} is out of range", priority.0))
        })?;
        Ok(py.detach(|| {
            downloads::add_download_task(
                &self.pool,
                job_id.0,
                remote_url.as_str(),
                local_path.as_str(),
                ft,
                priority,
            )
        })?)
    }

    #[pyo3(signature = (limit=Count(10), file_type=None), text_signature = "($self, limit=10, file_type=None)")]
    /// Pending downloads with attempts left, highest priority first, then oldest.
    fn get_pending_downloads<'py>(
        &self,
        py: Python<'py>,
        limit: Count,
        file_type: Option<Text>,
    ) -> PyResult<Bound<'py, PyList>> {
        let ft = file_type
            .as_ref()
            .map(|t| FileType::parse(t.as_str()))
            .transpose()?;
        let rows = py.detach(|| downloads::get_pending_downloads(&self.pool, limit.0, ft))?;
        let list = PyList::empty(py);
        for row in &rows {
            list.append(download_dict(py, row)?)?;
        }
        Ok(list)
    }

    #[pyo3(signature = (download_id, status, error_message=None, file_size=None))]
    /// Move a download to ``status``; ``completed`` also completes its job, atomically.
    /// ``False`` when the download does not exist.
    fn update_download_status(
        &self,
        py: Python<'_>,
        download_id: Count,
        status: Text,
        error_message: Option<Text>,
        file_size: Option<Count>,
    ) -> PyResult<bool> {
        let st = DownloadStatus::parse(status.as_str())?;
        Ok(py.detach(|| {
            downloads::update_download_status(
                &self.pool,
                download_id.0,
                st,
                opt_str(error_message.as_ref()),
                file_size.map(|c| c.0),
            )
        })?)
    }

    /// The download queue by status and file type, with totals (sizes as int).
    fn get_download_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| downloads::get_download_stats(&self.pool))?;
        download_stats_dict(py, &stats)
    }

    /// ``{status: count}`` of the download queue, nothing else (an index-only scan).
    fn download_counts(&self, py: Python<'_>) -> PyResult<std::collections::BTreeMap<String, i64>> {
        Ok(py.detach(|| downloads::download_counts(&self.pool))?)
    }

    /// Jobs added and finished (completed / failed) per hour over the last 24 hours
    /// (``granularity="hour"``) or per day over the last 30 days (``"day"``), oldest first,
    /// every bucket present. Read-only; each half is an index range scan.
    #[pyo3(signature = (granularity="hour"), text_signature = "($self, granularity='hour')")]
    fn throughput<'py>(&self, py: Python<'py>, granularity: &str) -> PyResult<Bound<'py, PyAny>> {
        let g = stats::Granularity::parse(granularity)?;
        let report = py.detach(|| stats::throughput(&self.pool, g))?;
        to_python(py, &report)
    }

    /// ANALYZE on the owned tables; returns their names. ``tables``: only these owned
    /// tables. With ``dry_run``, run nothing and return the tables it would analyze.
    #[pyo3(signature = (*, tables=None, dry_run=false))]
    fn analyze_tables(
        &self,
        py: Python<'_>,
        tables: Option<Vec<Text>>,
        dry_run: bool,
    ) -> PyResult<Vec<String>> {
        let only = tables.as_ref().map(|t| texts(t));
        Ok(py.detach(|| upkeep::analyze_tables(&self.pool, only.as_deref(), dry_run))?)
    }

    /// VACUUM (ANALYZE) on the owned tables (FULL rewrites them under an exclusive lock);
    /// returns the tables vacuumed. ``tables``: only these owned tables. With ``dry_run``,
    /// run nothing and return the tables it would vacuum.
    #[pyo3(signature = (full=false, *, tables=None, dry_run=false))]
    fn vacuum_tables(
        &self,
        py: Python<'_>,
        full: bool,
        tables: Option<Vec<Text>>,
        dry_run: bool,
    ) -> PyResult<Vec<String>> {
        let only = tables.as_ref().map(|t| texts(t));
        Ok(py.detach(|| upkeep::vacuum_tables(&self.pool, full, only.as_deref(), dry_run))?)
    }

    /// The size of the database in bytes.
    fn database_size(&self, py: Python<'_>) -> PyResult<i64> {
        Ok(py.detach(|| upkeep::database_size(&self.pool))?)
    }

    /// Per owned table: rows (estimate; exact on request), bytes, dead tuples, last
    /// (auto)vacuum/analyze, and scans per index.
    #[pyo3(signature = (exact=false))]
    fn table_stats<'py>(&self, py: Python<'py>, exact: bool) -> PyResult<Bound<'py, PyAny>> {
        let stats = py.detach(|| upkeep::table_stats(&self.pool, exact))?;
        to_python(py, &stats)
    }

    /// The queue, the database and the backups at a glance, with a `problems` list; plain
    /// JSON types, ready for XCom.
    #[pyo3(signature = (backup_dir=None, *, thresholds=None))]
    fn health_report<'py>(
        &self,
        py: Python<'py>,
        backup_dir: Option<std::path::PathBuf>,
        thresholds: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let overrides = super::maintenance::threshold_overrides(thresholds)?;
        let thresholds = Thresholds::default().with_overrides(&overrides)?;
        let report =
            py.detach(|| upkeep::health_report(&self.pool, backup_dir.as_deref(), thresholds))?;
        to_python(py, &report)
    }

    /// Backs up the owned tables to `backup_dir`, then keeps the newest `keep` (None: all).
    /// `streams`: connections reading the tables in parallel in one snapshot (None: decided
    /// from the machine and the server).
    #[pyo3(signature = (backup_dir=std::path::PathBuf::from("backups"), *, keep=Some(super::convert::Count(10)), compress=None, streams=None), text_signature = "($self, backup_dir='backups', *, keep=10, compress=False, streams=None)")]
    fn backup_database(
        &self,
        py: Python<'_>,
        backup_dir: std::path::PathBuf,
        keep: Option<super::convert::Count>,
        compress: Option<&Bound<'_, PyAny>>,
        streams: Option<super::convert::Count>,
    ) -> PyResult<BackupInfo> {
        let keep = keep.map(super::convert::keep_arg).transpose()?;
        let streams = streams
            .map(|s| backup::parallel::check_streams(s.0))
            .transpose()?;
        let compress = compress.map_or(Ok(backup::format::Compression::None), |c| {
            super::convert::compression_arg(c)
        })?;
        let auth = backup::Auth::from_env()?;
        Ok(py
            .detach(|| {
                backup::backup_database(&self.pool, &backup_dir, keep, compress, &auth, streams)
            })?
            .into())
    }

    /// A whole-database `pg_dump` into `backup_dir` (the old behaviour), written atomically,
    /// checked complete, then rotated to `keep`.
    #[pyo3(signature = (backup_dir=std::path::PathBuf::from("backups"), *, keep=Some(super::convert::Count(10)), pg_dump=None), text_signature = "($self, backup_dir='backups', *, keep=10, pg_dump=None)")]
    fn dump_database(
        &self,
        py: Python<'_>,
        backup_dir: std::path::PathBuf,
        keep: Option<super::convert::Count>,
        pg_dump: Option<std::path::PathBuf>,
    ) -> PyResult<BackupInfo> {
        let keep = keep.map(super::convert::keep_arg).transpose()?;
        Ok(py
            .detach(|| backup::dump_database(&self.pool, &backup_dir, keep, pg_dump.as_deref()))?
            .into())
    }

    /// Restores a backup (or a plain pg_dump of the replaced system) in one transaction,
    /// after verifying it and taking a safety backup of the current rows into `backup_dir`.
    /// With a backup key configured, an unsigned file is refused unless `allow_unsigned`.
    #[pyo3(signature = (path, *, safety_backup=true, backup_dir=std::path::PathBuf::from("backups"), allow_unsigned=false), text_signature = "($self, path, *, safety_backup=True, backup_dir='backups', allow_unsigned=False)")]
    fn restore_database(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        safety_backup: bool,
        backup_dir: std::path::PathBuf,
        allow_unsigned: bool,
    ) -> PyResult<RestoreInfo> {
        let safety_dir = safety_backup.then_some(backup_dir.as_path());
        let auth = backup::Auth {
            allow_unsigned,
            ..backup::Auth::from_env()?
        };
        Ok(py
            .detach(|| backup::restore_database(&self.pool, &path, safety_dir, &auth))?
            .into())
    }

    /// Imports a backup, a pg_dump (COPY or INSERT statements) or a CSV export of jobs:
    /// `mode="merge"` adds the jobs whose prompts are not present (new ids where taken, their
    /// downloads re-pointed) and leaves existing rows alone; `mode="replace"` is a restore.
    #[pyo3(signature = (path, *, mode="merge", safety_backup=true, backup_dir=std::path::PathBuf::from("backups"), allow_unsigned=false), text_signature = "($self, path, *, mode='merge', safety_backup=True, backup_dir='backups', allow_unsigned=False)")]
    fn import_jobs(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        mode: &str,
        safety_backup: bool,
        backup_dir: std::path::PathBuf,
        allow_unsigned: bool,
    ) -> PyResult<super::backup::ImportInfo> {
        let mode = match mode {
            "merge" => backup::Mode::Merge,
            "replace" => backup::Mode::Replace,
            other => {
                return Err(crate::errors::Error::invalid(format!(
                    "mode must be 'merge' or 'replace', got {other:?}"
                ))
                .into())
            }
        };
        let safety_dir = safety_backup.then_some(backup_dir.as_path());
        let auth = backup::Auth {
            allow_unsigned,
            ..backup::Auth::from_env()?
        };
        Ok(py
            .detach(|| backup::import_jobs(&self.pool, &path, mode, safety_dir, &auth))?
            .into())
    }

    #[pyo3(signature = (days=Count(7), *, dry_run=false), text_signature = "($self, days=7, *, dry_run=False)")]
    /// Delete completed downloads older than ``days``; return how many. With ``dry_run``,
    /// delete nothing and return how many it would delete.
    fn cleanup_old_downloads(&self, py: Python<'_>, days: Count, dry_run: bool) -> PyResult<u64> {
        let days = days.0;
        if days > 36_500 {
            return Err(crate::errors::Error::invalid(format!(
                "days must be at most 36500 (a century), got {days}"
            ))
            .into());
        }
        if dry_run {
            return Ok(py.detach(|| downloads::count_old_downloads(&self.pool, days))?);
        }
        Ok(py.detach(|| downloads::cleanup_old_downloads(&self.pool, days))?)
    }
}
