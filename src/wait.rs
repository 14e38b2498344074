//! Waiting for jobs without polling: LISTEN on the channel that V6's triggers notify.
//!
//! A waiter checks (or claims) on the pool; when nothing is there it LISTENs on a connection
//! of its own, checks again (a job committed between the first check and the LISTEN would
//! otherwise be missed: after the LISTEN, every later COMMIT is delivered), then blocks until
//! a notification for its job type arrives, checks again, and so on until the deadline. The
//! server sends a NOTIFY at COMMIT, so a waiter never wakes before the job is visible; several
//! waiters may wake for one job, and the claim's SKIP LOCKED gives it to one of them.
//!
//! The wait is cut into slices so the caller can look for Ctrl-C in between (Python's
//! `check_signals`): [`SLICE`] on Python's main thread, [`LONG_SLICE`] on others (Python runs
//! signal handlers on the main thread only). Within a slice nothing runs: the thread sleeps in
//! `epoll_wait` on the socket.
//!
//! Where LISTEN cannot work, the waiter polls with capped exponential backoff
//! ([`POLL_FIRST`] doubling up to [`POLL_CAP`]): with `prepared_statements=false`, the setting
//! for PgBouncer in transaction pooling (PgBouncer hands the server connection that holds the
//! LISTEN to other clients between transactions, so notifications would reach someone else or
//! no one), when the server refuses LISTEN (a hot standby), and for the rest of a wait whose
//! LISTEN connection broke.
//!
//! A LISTEN connection is silent by nature, so one that stopped answering (a hung backend, a
//! proxy whose upstream died, a middlebox that forgot the flow while TCP keeps acknowledging)
//! would look like a queue without new jobs for as long as it is kept. Over TCP a wait
//! therefore sends it one `SELECT 1` after each `io_timeout` without a notification, bounded by
//! [`PROBE_CAP`] (or `io_timeout` when shorter), when the wait has that long left; a connection
//! that does not answer is dropped and the wait polls.
//!
//! LISTEN connections are kept by their JobManager between waits (up to its `pool_size` idle
//! ones, one per concurrent waiter; a forked process opens its own).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

use crate::errors::{Error, Result};
use crate::model::JobType;
use crate::pool::{Connection, LazyPool};

/// The channel V6's triggers notify; the payload is the job type.
pub const CHANNEL: &str = "job_manager_jobs";

/// The longest uninterrupted block on Python's main thread: Ctrl-C is noticed within this.
pub const SLICE: Duration = Duration::from_millis(200);

/// The longest uninterrupted block on other threads, where Python delivers no signal (its
/// handlers run on the main thread only), so there is nothing to look for in between.
pub const LONG_SLICE: Duration = Duration::from_secs(5);

/// The longest a probe of a silent LISTEN connection may take, unless `io_timeout` is shorter
/// (on threads other than Python's main one: [`LONG_SLICE`]). Ctrl-C waits for a probe, so
/// this bounds how late it can be noticed then.
pub const PROBE_CAP: Duration = Duration::from_secs(1);

/// The first pause when polling (no LISTEN).
pub const POLL_FIRST: Duration = Duration::from_millis(10);

/// The longest pause when polling.
pub const POLL_CAP: Duration = Duration::from_secs(1);

/// A connection that LISTENs on [`CHANNEL`].
pub struct Listener {
    conn: Connection,
    pid: u32,
    /// When the connection last proved alive (opened, a notification, a probe).
    heard: Instant,
}

impl Listener {
    fn open(pool: &LazyPool) -> Result<Listener> {
        let mut conn = pool.open_dedicated()?;
        conn.arm(pool.settings().io_timeout());
        conn.client()
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| Error::from_postgres("listening for new jobs", &e))?;
        Ok(Listener {
            conn,
            pid: std::process::id(),
            heard: Instant::now(),
        })
    }

    /// Forgets the notifications received so far (a check follows, which sees their jobs).
    fn drain(&mut self, io_timeout: Duration) -> Result<()> {
        self.conn.arm(io_timeout);
        let client = self.conn.client();
        let mut notifications = client.notifications();
        let mut pending = notifications.iter();
        while pending
            .next()
            .map_err(|e| Error::from_postgres("reading notifications", &e))?
            .is_some()
        {}
        Ok(())
    }

    /// One round trip, bounded by `io_timeout`: whether the connection still answers. A LISTEN
    /// connection is silent by nature, so without this one that went silent for good (a hung
    /// backend, a proxy whose upstream died, a middlebox that forgot the flow while TCP keeps
    /// acknowledging) would look like a queue with no new jobs for as long as it is kept.
    fn probe(&mut self, io_timeout: Duration) -> Result<()> {
        self.conn.arm(io_timeout);
        self.conn
            .client()
            .batch_execute("SELECT 1")
            .map_err(|e| Error::from_postgres("checking the LISTEN connection", &e))
    }

    /// [`Listener::wait`]; then, when nothing has been heard on the connection for
    /// `io_timeout` and `probe` bounds a probe that the time left before `deadline` allows, a
    /// [`Listener::probe`] (an error when the connection does not answer).
    fn listen(
        &mut self,
        job_type: JobType,
        slice: Duration,
        io_timeout: Duration,
        probe: Option<Duration>,
        deadline: Instant,
    ) -> Result<bool> {
        if self.wait(job_type, slice, io_timeout)? {
            self.heard = Instant::now();
            return Ok(true);
        }
        if let Some(bound) = probe {
            if self.heard.elapsed() >= io_timeout
                && deadline.saturating_duration_since(Instant::now()) > bound
            {
                self.probe(bound)?;
                self.heard = Instant::now();
            }
        }
        Ok(false)
    }

    /// Blocks until a notification for `job_type` arrives (`true`) or `slice` passes.
    fn wait(&mut self, job_type: JobType, slice: Duration, io_timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + slice;
        // The transport's deadline must not fire while the server is rightly silent.
        self.conn.arm(slice + io_timeout);
        let client = self.conn.client();
        let mut notifications = client.notifications();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match notifications.timeout_iter(left).next() {
                Ok(None) => return Ok(false),
                Ok(Some(n)) if n.payload() == job_type.as_str() => return Ok(true),
                Ok(Some(_)) => {}
                Err(e) => return Err(Error::from_postgres("waiting for new jobs", &e)),
            }
        }
    }
}

/// A JobManager's idle LISTEN connections (at most its `pool_size`), reused by later waits.
#[derive(Default)]
pub struct ListenerSlot(Mutex<Vec<Listener>>);

impl ListenerSlot {
    fn take(&self) -> Option<Listener> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if idle.iter().any(|l| l.pid != pid) {
            // Inherited through fork(): the sockets are the parent's; leave them alone.
            for l in idle.drain(..) {
                std::mem::forget(l);
            }
        }
        idle.pop()
    }

    fn give_back(&self, listener: Listener, keep: usize) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < keep {
            idle.push(listener);
        }
    }

    /// Closes the idle LISTEN connections (with the pool's `close`).
    pub fn close(&self) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        for l in idle.drain(..) {
            if l.pid == pid {
                drop(l);
            } else {
                std::mem::forget(l);
            }
        }
    }
}

/// How a wait ended.
#[derive(Debug)]
pub enum Waited<T> {
    Got(T),
    TimedOut,
    /// `interrupted` said to stop (Ctrl-C).
    Interrupted,
}

/// Whether waits on this pool can use LISTEN.
pub fn can_listen(pool: &LazyPool) -> bool {
    pool.settings().prepared_statements()
}

/// Runs `attempt` (a check or a claim on the pool) until it gives something or `timeout`
/// passes, waiting for notifications of `job_type` in between (see the module's notes).
/// `interrupted` is called between slices of at most `slice`; when it returns `true` the wait
/// ends at once.
pub fn wait_for<T>(
    pool: &LazyPool,
    slot: &ListenerSlot,
    job_type: JobType,
    timeout: Duration,
    slice: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
    mut interrupted: impl FnMut() -> bool,
) -> Result<Waited<T>> {
    let deadline = Instant::now() + timeout;
    if let Some(got) = attempt()? {
        return Ok(Waited::Got(got));
    }
    if Instant::now() >= deadline {
        return Ok(Waited::TimedOut);
    }
    let io_timeout = pool.settings().io_timeout();
    let mut listener = if can_listen(pool) {
        match slot.take() {
            Some(mut l) => match l.drain(io_timeout) {
                Ok(()) => Some(l),
                Err(e) => {
                    log::debug!("the idle LISTEN connection broke ({e}); opening another");
                    None
                }
            },
            None => None,
        }
        .map_or_else(|| listen_or_poll(pool), |l| Ok(Some(l)))?
    } else {
        None
    };
    // After the LISTEN: anything committed from now on wakes us, so check once more.
    let result = (|| {
        if listener.is_some() {
            if let Some(got) = attempt()? {
                return Ok(Waited::Got(got));
            }
        }
        let mut backoff = POLL_FIRST;
        let mut next_poll = Instant::now() + backoff;
        // Over TCP the LISTEN connection is probed once it has been silent for io_timeout (see
        // Listener::listen); over a Unix socket there is no middlebox to go silent and no
        // deadline to bound a probe.
        let probe = (!pool.settings().unix_socket()).then(|| io_timeout.min(slice.max(PROBE_CAP)));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Waited::TimedOut);
            }
            if interrupted() {
                return Ok(Waited::Interrupted);
            }
            let woke = if let Some(l) = listener.as_mut() {
                match l.listen(job_type, left.min(slice), io_timeout, probe, deadline) {
                    Ok(woke) => woke,
                    Err(e) => {
                        // No attempt at once (it would likely meet the same trouble): the loop
                        // looks for Ctrl-C first, then polls.
                        log::warn!(
                            "the LISTEN connection broke or went silent ({e}); polling for the \
                             rest of this wait"
                        );
                        listener = None;
                        next_poll = Instant::now() + backoff;
                        continue;
                    }
                }
            } else {
                // Polling: sleep until the next check (in slices), then check.
                let nap = next_poll
                    .saturating_duration_since(Instant::now())
                    .min(left)
                    .min(slice);
                std::thread::sleep(nap);
                if Instant::now() < next_poll {
                    continue;
                }
                backoff = (backoff * 2).min(POLL_CAP);
                next_poll = Instant::now() + backoff;
                true
            };
            if woke {
                if let Some(got) = attempt()? {
                    return Ok(Waited::Got(got));
                }
            }
        }
    })();
    if let Some(l) = listener {
        slot.give_back(l, pool.settings().pool_size() as usize);
    }
    result
}

/// A new LISTEN connection, or `None` (polling) when the server refuses LISTEN.
fn listen_or_poll(pool: &LazyPool) -> Result<Option<Listener>> {
    match Listener::open(pool) {
        Ok(l) => Ok(Some(l)),
        Err(Error::Database(m)) => {
            log::warn!("cannot LISTEN ({m}); polling with backoff instead");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
