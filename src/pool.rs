//! The connection pool: r2d2 over r2d2_postgres, built lazily and never shared across `fork()`.
//!
//! * Nothing connects until the first call that needs the database.
//! * The pool remembers the pid that built it. A process forked after that (Airflow forks its
//!   task processes) builds its own pool and *forgets* the inherited one without closing it:
//!   closing would send a Terminate message down sockets that still belong to the parent.
//! * Before `os.fork()`, [`release_for_fork`] closes every pool of the process and waits for
//!   their worker threads to end (Python calls it through `os.register_at_fork`). r2d2's
//!   threads wait in parking_lot, whose global table of waiting threads is not fork-safe: a
//!   child that inherits entries of threads that do not exist in it can crash when its own
//!   threads wait (seen: SIGSEGV in `parking_lot_core::ThreadData::new`). With no pool thread
//!   alive at the fork, the child's table holds nothing stale.
//! * Each pooled connection caches its prepared statements, so a hot call is one round trip
//!   (Bind/Execute), like `pgbench -M prepared`.
//! * A connection that the server closed (restart, idle timeout) is discarded and the call is
//!   retried on another one, so callers see a restart as a slower call, not an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;
use scheduled_thread_pool::{OnPoolDropBehavior, ScheduledThreadPool};

use crate::config::Settings;
use crate::errors::{Error, Result};

/// Parameters of a statement.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A pooled connection and its prepared statements.
pub struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Connection {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs `f` with the cached statement for `sql`; forgets the cache on any error, so a
    /// statement invalidated by a schema change is prepared afresh next time.
    fn with_statement<T>(
        &mut self,
        sql: &'static str,
        f: impl FnOnce(&mut Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let result = self
            .prepared(sql)
            .and_then(|statement| f(&mut self.client, &statement));
        if result.is_err() {
            self.statements.clear();
        }
        result
    }

    pub fn query(
        &mut self,
        sql: &'static str,
        params: &Params,
    ) -> Result<Vec<Row>, postgres::Error> {
        self.with_statement(sql, |c, s| c.query(s, params))
    }

    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: &Params,
    ) -> Result<Option<Row>, postgres::Error> {
        self.with_statement(sql, |c, s| c.query_opt(s, params))
    }

    pub fn query_one(
        &mut self,
        sql: &'static str,
        params: &Params,
    ) -> Result<Row, postgres::Error> {
        self.with_statement(sql, |c, s| c.query_one(s, params))
    }

    pub fn execute(&mut self, sql: &'static str, params: &Params) -> Result<u64, postgres::Error> {
        self.with_statement(sql, |c, s| c.execute(s, params))
    }

    /// The raw client, for transactions, COPY and DDL (no statement caching).
    pub fn client(&mut self) -> &mut Client {
        self.statements.clear();
        &mut self.client
    }
}

/// r2d2's manager: r2d2_postgres's, with a statement cache on each connection.
struct Manager(PostgresConnectionManager<NoTls>);

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        Ok(Connection {
            client: self.0.connect()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

struct Built {
    pid: u32,
    pool: r2d2::Pool<Manager>,
}

/// Size, idle and in-use connections of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub max_size: u32,
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
}

type Slot = Mutex<Option<Built>>;

/// The slots of the pools this process has built, for [`release_for_fork`].
static BUILT: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());
/// Whether any pool was ever built here: a process that never connected (an Airflow parent
/// that only imports job_manager) forks without looking for pool threads.
static EVER_BUILT: AtomicBool = AtomicBool::new(false);

/// Name of the pools' worker threads (one per pool); `/proc` shows the first 15 bytes.
const WORKER_NAME: &str = "jm-pool-worker";

/// A pool that is built on first use and rebuilt after `fork()`.
pub struct LazyPool {
    settings: Settings,
    slot: Arc<Slot>,
}

impl LazyPool {
    pub fn new(settings: Settings) -> Self {
        LazyPool {
            settings,
            slot: Arc::new(Mutex::new(None)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Option<Built>> {
        // The slot holds no invariant a panic could break: recover from poisoning.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool of this process, building it if needed.
    fn pool(&self) -> Result<r2d2::Pool<Manager>> {
        let pid = std::process::id();
        let mut slot = self.lock();
        if let Some(built) = slot.as_ref() {
            if built.pid == pid {
                return Ok(built.pool.clone());
            }
            log::debug!(
                "process {pid} was forked from {}: building its own pool",
                built.pid
            );
            forget_inherited(slot.take());
        }
        let manager = Manager(PostgresConnectionManager::new(
            self.settings.pg().clone(),
            NoTls,
        ));
        self.probe()?;
        let pool = r2d2::Pool::builder()
            .thread_pool(Arc::new(worker_pool()))
            .max_size(self.settings.pool_size())
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(self.settings.connect_timeout())
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(manager)
            .map_err(|e| {
                Error::Unavailable(format!(
                    "could not start the connection pool for {}: {e}",
                    self.settings.redacted_dsn()
                ))
            })?;
        log::debug!(
            "connection pool for {} ready (max {} connections)",
            self.settings.redacted_dsn(),
            self.settings.pool_size()
        );
        *slot = Some(Built {
            pid,
            pool: pool.clone(),
        });
        EVER_BUILT.store(true, Ordering::Relaxed);
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        // Pruned of dropped pools; a pool rebuilt after close() is listed once.
        let this = Arc::downgrade(&self.slot);
        built.retain(|w| w.strong_count() > 0 && !w.ptr_eq(&this));
        built.push(this);
        Ok(pool)
    }

    /// One connection up front, so a wrong password or a missing database fails at once with
    /// the server's reason instead of after r2d2's retries until the timeout. The driver's
    /// `connect_timeout` bounds only the TCP connect, not the startup exchange, so the attempt
    /// runs on its own thread and is abandoned at the deadline: a server that accepts and
    /// never answers cannot hang the caller.
    fn probe(&self) -> Result<()> {
        let config = self.settings.pg().clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("job_manager-connect".into())
            .spawn(move || {
                let _ = tx.send(config.connect(NoTls).map(drop));
            })
            .map_err(|e| Error::Unavailable(format!("cannot start a connect thread: {e}")))?;
        let timeout = self.settings.connect_timeout();
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.connect_error(&e)),
            Err(_) => Err(Error::Unavailable(format!(
                "no answer from {} within {:.1}s (connect_timeout); the server accepted the \
                 connection but did not complete the login",
                self.settings.redacted_dsn(),
                timeout.as_secs_f64()
            ))),
        }
    }

    fn connect_error(&self, e: &postgres::Error) -> Error {
        let dsn = self.settings.redacted_dsn();
        let err = match Error::from_postgres(&format!("connecting to {dsn}"), e) {
            // No SQLSTATE: refused, timed out, unresolvable host.
            Error::Unavailable(_) | Error::Database(_) if e.as_db_error().is_none() => {
                Error::Unavailable(format!(
                    "cannot connect to {dsn} ({}); is the server running and reachable?",
                    crate::errors::error_chain(e)
                ))
            }
            Error::Database(m) => Error::Unavailable(m),
            other => other,
        };
        err.scrub(self.settings.password())
    }

    fn checkout(&self, pool: &r2d2::Pool<Manager>) -> Result<r2d2::PooledConnection<Manager>> {
        pool.get().map_err(|e| {
            Error::Unavailable(format!(
                "no connection to {} within {:.1}s ({e}); is the server running and reachable?",
                self.settings.redacted_dsn(),
                self.settings.connect_timeout().as_secs_f64()
            ))
            .scrub(self.settings.password())
        })
    }

    /// Runs `f` on a pooled connection. When the server closed the connection under it, the
    /// connection is discarded and `f` runs again on another one (at most once per pool slot,
    /// plus one fresh connection).
    pub fn run<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let pool = self.pool()?;
        let attempts = self.settings.pool_size() + 1;
        let mut attempt = 1;
        loop {
            let mut conn = self.checkout(&pool)?;
            let result = f(&mut conn);
            match result {
                Err(e) if conn.client.is_closed() && attempt < attempts => {
                    log::warn!("the server closed a pooled connection ({e}); retrying on another");
                    attempt += 1;
                }
                other => return other.map_err(|e| e.scrub(self.settings.password())),
            }
        }
    }

    pub fn state(&self) -> PoolState {
        let slot = self.lock();
        let max_size = self.settings.pool_size();
        match slot.as_ref() {
            Some(built) if built.pid == std::process::id() => {
                let s = built.pool.state();
                PoolState {
                    max_size,
                    size: s.connections,
                    idle: s.idle_connections,
                    in_use: s.connections - s.idle_connections,
                }
            }
            _ => PoolState {
                max_size,
                size: 0,
                idle: 0,
                in_use: 0,
            },
        }
    }

    /// Closes this process's connections. The next call opens a new pool.
    pub fn close(&self) {
        release(self.lock().take());
    }
}

impl Drop for LazyPool {
    fn drop(&mut self) {
        release(self.lock().take());
    }
}

/// One r2d2 worker thread per pool, named so that [`release_for_fork`] can wait for it.
fn worker_pool() -> ScheduledThreadPool {
    ScheduledThreadPool::builder()
        .num_threads(1)
        .thread_name_pattern(WORKER_NAME)
        // A closed pool's thread ends now, not after the reaper's next run.
        .on_drop_behavior(OnPoolDropBehavior::DiscardPendingScheduled)
        .build()
}

/// Closes a pool built by this process; forgets one inherited through `fork()` (see
/// [`forget_inherited`]). Returns whether a pool was closed.
fn release(built: Option<Built>) -> bool {
    match built {
        Some(b) if b.pid == std::process::id() => {
            drop(b);
            true
        }
        other => {
            forget_inherited(other);
            false
        }
    }
}

/// Closes every pool this process built and waits (up to `timeout`) until their worker
/// threads have ended, so that a `fork()` right after leaves no waiting thread behind (see
/// the module's notes). Pools rebuild on their next call. Returns how many were closed;
/// `Err` names what still runs at the deadline (a call in flight on another thread keeps its
/// pool alive until it returns).
pub fn release_for_fork(timeout: Duration) -> std::result::Result<usize, String> {
    if !EVER_BUILT.load(Ordering::Relaxed) {
        return Ok(0);
    }
    let slots: Vec<Arc<Slot>> = BUILT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    let closed = slots
        .iter()
        .filter(|slot| release(slot.lock().unwrap_or_else(PoisonError::into_inner).take()))
        .count();
    let deadline = Instant::now() + timeout;
    loop {
        let running = worker_threads();
        if running == 0 {
            return Ok(closed);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{running} connection pool thread(s) still running (a call in progress on \
                 another thread?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pool worker threads of this process (Linux: read from `/proc/self/task`; elsewhere 0).
fn worker_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let name = WORKER_NAME.as_bytes();
    let prefix = &name[..name.len().min(15)];
    tasks
        .filter_map(|t| std::fs::read(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

/// A pool inherited through `fork()` is leaked on purpose: dropping it would close sockets
/// that the parent process is still using.
fn forget_inherited(built: Option<Built>) {
    if let Some(b) = built {
        std::mem::forget(b);
    }
}

/// Maps a driver error to the crate's error, naming what was being done.
pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for Result<T, postgres::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::from_postgres(what, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the thread count is process-wide, so parallel tests would see each other's.
    #[test]
    fn release_for_fork_waits_for_the_worker_threads() {
        assert_eq!(worker_threads(), 0);
        assert_eq!(release_for_fork(Duration::from_millis(10)), Ok(0));
        EVER_BUILT.store(true, Ordering::Relaxed); // as if a pool had been built
        let pool = worker_pool();
        let deadline = Instant::now() + Duration::from_secs(5);
        while worker_threads() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(worker_threads(), 1);
        assert!(release_for_fork(Duration::from_millis(10)).is_err());
        drop(pool);
        // Nothing of ours is built here: release_for_fork only waits for the thread to end.
        assert_eq!(release_for_fork(Duration::from_secs(5)), Ok(0));
        assert_eq!(worker_threads(), 0);
    }
}
