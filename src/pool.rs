//! The connection pool: r2d2 over the driver, built lazily and never shared across `fork()`.
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
//! * Every TCP connection runs over [`crate::transport`]: TLS as libpq's `sslmode` says, and a
//!   deadline (`io_timeout`, `long_io_timeout` for [`LazyPool::run_long`]) on every wait.
//! * With `prepared_statements=false` (PgBouncer in transaction pooling), queue calls send
//!   unnamed statements, and the transport rewrites every other named statement into an
//!   unnamed one (see [`crate::unnamed`]).
//! * A call is retried on another connection only when it cannot have done anything: the
//!   connection broke before a byte of it was written ([`LazyPool::run`]), or the call only
//!   reads ([`LazyPool::run_idempotent`]). When a statement may have run and its reply was
//!   lost, the caller gets `Unavailable` saying that the outcome is unknown ([`Outcome`]), or,
//!   for claims, recovers the job by its claim token (see `jobs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Row, Statement};
use r2d2::ManageConnection;
use scheduled_thread_pool::{OnPoolDropBehavior, ScheduledThreadPool};

use crate::config::Settings;
use crate::errors::{Error, Result};
use crate::transport::{Connector, IoState, TlsRefused};

/// Parameters of a statement.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A pooled connection and its prepared statements.
pub struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// The transport's deadline and byte counter; `None` on a Unix-domain socket.
    io: Option<Arc<IoState>>,
    prepared_statements: bool,
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
        if let Some(typed) = self.unprepared(params) {
            return self.client.query_typed(sql, &typed);
        }
        self.with_statement(sql, |c, s| c.query(s, params))
    }

    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: &Params,
    ) -> Result<Option<Row>, postgres::Error> {
        if let Some(typed) = self.unprepared(params) {
            return self.client.query_typed_opt(sql, &typed);
        }
        self.with_statement(sql, |c, s| c.query_opt(s, params))
    }

    pub fn query_one(
        &mut self,
        sql: &'static str,
        params: &Params,
    ) -> Result<Row, postgres::Error> {
        if let Some(typed) = self.unprepared(params) {
            return self.client.query_typed_one(sql, &typed);
        }
        self.with_statement(sql, |c, s| c.query_one(s, params))
    }

    pub fn execute(&mut self, sql: &'static str, params: &Params) -> Result<u64, postgres::Error> {
        if let Some(typed) = self.unprepared(params) {
            return self.client.execute_typed(sql, &typed);
        }
        self.with_statement(sql, |c, s| c.execute(s, params))
    }

    /// The parameters with their types when statements are not prepared (PgBouncer).
    fn unprepared<'a>(&self, params: &[&'a (dyn ToSql + Sync)]) -> Option<Typed<'a>> {
        if self.prepared_statements {
            None
        } else {
            typed_params(params)
        }
    }

    /// The raw client, for transactions, COPY and DDL (no statement caching).
    pub fn client(&mut self) -> &mut Client {
        self.statements.clear();
        &mut self.client
    }

    /// Starts a new deadline on this connection's transport (see [`IoState::arm`]); for
    /// connections of their own, such as a waiter's LISTEN connection.
    pub fn arm(&self, timeout: Duration) {
        if let Some(io) = &self.io {
            io.arm(timeout);
        }
    }

    fn written(&self) -> Option<u64> {
        self.io.as_ref().map(|io| io.written())
    }
}

/// Candidate types for a parameter sent without a prepared statement, most specific first:
/// the first one the Rust value accepts is the type sent, and the server casts from it as it
/// would from a literal of that type.
const SEND_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::FLOAT8,
    Type::BOOL,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::TEXT_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::INT2,
    Type::FLOAT4,
    Type::BYTEA,
];

type Typed<'a> = Vec<(&'a (dyn ToSql + Sync), Type)>;

/// Each parameter with the first of [`SEND_TYPES`] its value can be sent as; `None` when one
/// fits none of them (the statement is then prepared, as on the fast path).
fn typed_params<'a>(params: &[&'a (dyn ToSql + Sync)]) -> Option<Typed<'a>> {
    let mut scratch = bytes::BytesMut::new();
    params
        .iter()
        .map(|p| {
            SEND_TYPES
                .iter()
                .find(|t| {
                    scratch.clear();
                    // The type check comes before any encoding: a refusal costs nothing.
                    p.to_sql_checked(t, &mut scratch).is_ok()
                })
                .map(|t| (*p, t.clone()))
        })
        .collect()
}

/// r2d2's manager: opens connections over our transport, with a statement cache on each.
struct Manager {
    settings: Settings,
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        open(&self.settings)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

/// Opens one connection as the settings say (for `allow`: plaintext, then TLS when the
/// server refuses plaintext).
fn open(settings: &Settings) -> Result<Connection, postgres::Error> {
    let mut last = None;
    for negotiation in settings.tls().attempts() {
        let io = Arc::new(IoState::default());
        let connector = Connector {
            negotiation: negotiation.clone(),
            state: io.clone(),
            connect_timeout: settings.connect_timeout(),
        };
        match settings.pg().connect(connector) {
            Ok(client) => {
                if !settings.prepared_statements() {
                    io.send_unnamed_statements();
                }
                return Ok(Connection {
                    client,
                    statements: HashMap::new(),
                    io: (!settings.unix_socket()).then_some(io),
                    prepared_statements: settings.prepared_statements(),
                });
            }
            // allow: a server that refuses plaintext (hostssl only) gets a TLS attempt.
            Err(e) if e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

struct Built {
    pid: u32,
    pool: r2d2::Pool<Manager>,
}

/// Which deadline a call runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `io_timeout`: queue calls.
    Ordinary,
    /// `long_io_timeout`: backups, restores, migrations, statistics refreshes.
    Long,
}

/// What became of a call whose connection may have broken after the statement was sent.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    /// The statement was sent and no reply came: it may or may not have taken effect.
    Unknown(Error),
}

/// The first source of `e` (itself included) of type `E`.
fn find_source<E: std::error::Error + 'static>(e: &postgres::Error) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
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
        let manager = Manager {
            settings: self.settings.clone(),
        };
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
    /// the server's reason instead of after r2d2's retries until the timeout. The attempt runs
    /// on its own thread and is abandoned at the deadline: whatever the server does, the
    /// caller waits at most `connect_timeout`.
    fn probe(&self) -> Result<()> {
        let settings = self.settings.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("job_manager-connect".into())
            .spawn(move || {
                let _ = tx.send(open(&settings).map(drop));
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
        let chain = crate::errors::error_chain(e);
        if let Some(refused) = find_source::<TlsRefused>(e) {
            return Error::Configuration(format!("connecting to {dsn}: {refused}"));
        }
        if chain.contains("password missing") {
            return Error::Configuration(format!(
                "connecting to {dsn}: the server asks for a password and none was given; add \
                 it to the DSN (postgresql://user:PASSWORD@host/db) or set POSTGRES_PASSWORD"
            ));
        }
        // The driver refused to complete the login itself (SCRAM: `channel_binding=require`
        // with no TLS channel to bind to, a server signature that does not verify): the DSN
        // and the server disagree; waiting or retrying cannot help.
        if chain.starts_with("authentication error") {
            return Error::Configuration(format!(
                "connecting to {dsn}: the login was not completed ({chain}); check \
                 channel_binding and sslmode in the DSN against what the server offers \
                 (channel binding needs TLS: sslmode=require or stricter)"
            ));
        }
        match Error::from_postgres(&format!("connecting to {dsn}"), e) {
            // No SQLSTATE: refused, timed out, unresolvable host.
            Error::Unavailable(_) | Error::Database(_) if e.as_db_error().is_none() => {
                Error::Unavailable(format!(
                    "cannot connect to {dsn} ({chain}); is the server running and reachable?"
                ))
            }
            Error::Database(m) => Error::Unavailable(m),
            other => other,
        }
    }

    /// A connection of its own, outside the pool (a waiter's LISTEN connection), opened as
    /// the pool's are and bounded by `connect_timeout`; its errors are classified as the
    /// pool's first connection's.
    pub fn open_dedicated(&self) -> Result<Connection> {
        let settings = self.settings.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("job_manager-connect".into())
            .spawn(move || {
                let _ = tx.send(open(&settings));
            })
            .map_err(|e| Error::Unavailable(format!("cannot start a connect thread: {e}")))?;
        let timeout = self.settings.connect_timeout();
        match rx.recv_timeout(timeout) {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.connect_error(&e)),
            Err(_) => Err(Error::Unavailable(format!(
                "no answer from {} within {:.1}s (connect_timeout)",
                self.settings.redacted_dsn(),
                timeout.as_secs_f64()
            ))),
        }
    }

    fn checkout(&self, pool: &r2d2::Pool<Manager>) -> Result<r2d2::PooledConnection<Manager>> {
        let started = Instant::now();
        pool.get().map_err(|e| {
            let waited = started.elapsed().as_secs_f64();
            let state = pool.state();
            let size = self.settings.pool_size();
            if state.connections >= size && state.idle_connections == 0 {
                Error::Unavailable(format!(
                    "all {size} connections of the pool (pool_size={size}) to {} stayed busy \
                     for {waited:.1}s; raise pool_size, or make fewer calls at once from this \
                     process",
                    self.settings.redacted_dsn()
                ))
            } else {
                Error::Unavailable(format!(
                    "no connection to {} within {waited:.1}s ({e}); is the server running and \
                     reachable?",
                    self.settings.redacted_dsn()
                ))
            }
        })
    }

    /// Runs `f` on a pooled connection, with `io_timeout` on every wait. When the connection
    /// broke before `f` wrote anything (a server restart noticed at the first write), `f`
    /// runs again on another connection; when it broke after, the statement may have run, and
    /// the error says that the outcome is unknown ([`Outcome::Unknown`] via
    /// [`LazyPool::run_outcome`] lets a caller recover instead).
    pub fn run<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        match self.run_outcome(Deadline::Ordinary, &mut f)? {
            Outcome::Done(v) => Ok(v),
            Outcome::Unknown(e) => Err(e),
        }
    }

    /// [`LazyPool::run`] with `long_io_timeout`: for backups and restores, where the server
    /// may be silent for long (an index build, a large COMMIT) while it works.
    pub fn run_long<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        match self.run_outcome(Deadline::Long, &mut f)? {
            Outcome::Done(v) => Ok(v),
            Outcome::Unknown(e) => Err(e),
        }
    }

    /// For calls that only read (or whose repetition changes nothing): retried on another
    /// connection whenever the connection broke, sent or not.
    pub fn run_idempotent<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let attempts = self.settings.pool_size() + 1;
        let mut attempt = 1;
        loop {
            match self.run_outcome(Deadline::Ordinary, &mut f)? {
                Outcome::Done(v) => return Ok(v),
                Outcome::Unknown(e) if attempt >= attempts => return Err(e),
                Outcome::Unknown(e) => {
                    log::warn!("{e}; this call is safe to repeat: running it again");
                    attempt += 1;
                }
            }
        }
    }

    /// Runs `f` once the way [`LazyPool::run`] does, but hands back a lost reply as
    /// [`Outcome::Unknown`] so the caller can find out what happened (claims look for their
    /// token).
    pub fn run_outcome<T>(
        &self,
        deadline: Deadline,
        mut f: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<Outcome<T>> {
        let (timeout, setting) = match deadline {
            Deadline::Ordinary => (self.settings.io_timeout(), "io_timeout"),
            Deadline::Long => (self.settings.long_io_timeout(), "long_io_timeout"),
        };
        let pool = self.pool()?;
        let attempts = self.settings.pool_size() + 1;
        let mut attempt = 1;
        loop {
            let mut conn = self.checkout(&pool)?;
            if let Some(io) = &conn.io {
                io.arm(timeout);
            }
            let before = conn.written();
            let result = f(&mut conn);
            let err = match result {
                Ok(v) => return Ok(Outcome::Done(v)),
                Err(e) if !conn.client.is_closed() => return Err(e),
                Err(e) => e,
            };
            let timed_out = conn.io.as_ref().is_some_and(|io| io.timed_out());
            if timed_out {
                self.cancel_in_background(&conn);
            }
            let err = if timed_out {
                Error::Unavailable(format!(
                    "no reply from {} for {}s ({setting}); the connection was closed",
                    self.settings.redacted_dsn(),
                    timeout.as_secs_f64()
                ))
            } else {
                match err {
                    // Name the server, as connection errors do (user, host, port, database).
                    Error::Unavailable(m) => Error::Unavailable(format!(
                        "{m} (connection to {})",
                        self.settings.redacted_dsn()
                    )),
                    other => other,
                }
            };
            let sent = match (before, conn.written()) {
                (Some(b), Some(a)) => a != b,
                // A Unix-domain socket: we cannot tell, so assume it was.
                _ => true,
            };
            if sent {
                return Ok(Outcome::Unknown(Error::Unavailable(format!(
                    "{err}; the connection broke after the statement was sent, so whether it \
                     took effect is unknown: check the data before repeating the call"
                ))));
            }
            if attempt >= attempts {
                return Err(err);
            }
            log::warn!("a pooled connection was closed before the call was sent ({err}); retrying on another");
            attempt += 1;
        }
    }

    /// Asks the server to cancel what a timed-out connection was running (a statement waiting
    /// for a lock would otherwise run on, and hold its locks, after we gave up on it). Best
    /// effort, on its own thread; the attempt is bounded by `connect_timeout`.
    fn cancel_in_background(&self, conn: &Connection) {
        let token = conn.client.cancel_token();
        let Some(negotiation) = self.settings.tls().attempts().next().cloned() else {
            return;
        };
        let connector = Connector {
            negotiation,
            state: Arc::new(IoState::default()),
            connect_timeout: self.settings.connect_timeout(),
        };
        let spawned = std::thread::Builder::new()
            .name("job_manager-cancel".into())
            .spawn(move || {
                if let Err(e) = token.cancel_query(connector) {
                    log::debug!("could not cancel the timed-out statement: {e}");
                }
            });
        if let Err(e) = spawned {
            log::debug!("could not start a cancel thread: {e}");
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
