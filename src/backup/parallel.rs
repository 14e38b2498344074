//! A backup read by several connections that share the backup's snapshot (#17).
//!
//! The connection holding the backup's snapshot exports it (`pg_export_snapshot()`); N stream
//! connections of their own (opened like the pool's: same transport, TLS and deadlines) import
//! it (`SET TRANSACTION SNAPSHOT`), so every row they read is the state the header counted. Each
//! table is cut into ranges of heap pages (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID Range
//! Scan, PostgreSQL >= 14), handed out in order to whichever stream is free. The rows of each
//! range come back through a bounded channel of their own, and the thread writing the file
//! takes the ranges in order: the file is the single-stream file, one COPY block per table,
//! same bytes. Memory is bounded whatever the table's size: a range holds at most
//! [`RANGE_BUFFER`] bytes while it waits for its turn (its stream then waits, and the server
//! with it), and a stream starts no range before the one it read before was written, so each
//! stream holds at most two ranges.

use std::io::Write;
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Transaction};

use super::dump::Progress;
use super::format::{pinned_settings_sql, HashingWriter, NO_SERVER_TIMEOUTS_SQL};
use crate::config::Settings;
use crate::errors::{Error, Result};
use crate::pool::{Context, LazyPool};
use crate::transport::{Connector, IoState};

/// The most streams a backup may be asked for: more cannot help (each is a server backend
/// and a core), and each takes a connection slot.
pub const MAX_STREAMS: usize = 16;
/// The largest range of heap pages one COPY reads (4 MiB of heap at the default 8 kB pages).
const RANGE_PAGES: u64 = 512;
/// A range's rows are passed on in pieces of about this size.
const PIECE: usize = 256 << 10;
/// Pieces a range may hold while it waits for its turn: [`RANGE_BUFFER`] bytes.
const PIECES_PER_RANGE: usize = 32;
/// What one stream may hold in memory beyond the piece it is filling.
pub const RANGE_BUFFER: usize = PIECE * PIECES_PER_RANGE;

/// How many streams a backup uses when not told: the machine's cores, at most 4. A stream is
/// a server backend turning rows into text, so more streams than cores only compete; with the
/// server on this machine the backup's own thread (hashing, writing) shares the same cores.
#[must_use]
pub fn default_streams(cores: usize) -> usize {
    cores.clamp(1, 4)
}

/// Checks an explicit `streams=`: 1 to [`MAX_STREAMS`].
pub fn check_streams(streams: i64) -> Result<usize> {
    usize::try_from(streams)
        .ok()
        .filter(|s| (1..=MAX_STREAMS).contains(s))
        .ok_or_else(|| {
            Error::invalid(format!(
                "streams must be between 1 and {MAX_STREAMS} (the connections reading the \
                 backup in parallel), got {streams}"
            ))
        })
}

/// How many streams this backup will use: the request (or [`default_streams`] of this
/// machine), reduced to 1 where the server cannot share a snapshot between range scans
/// (PostgreSQL < 14 has no TID Range Scan; PgBouncer in transaction pooling) and to half the
/// server's free connection slots (the application keeps the other half).
pub(crate) fn decide(
    client: &mut Client,
    settings: &Settings,
    requested: Option<usize>,
) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let want = requested.unwrap_or_else(|| default_streams(cores));
    if want <= 1 {
        return Ok(1);
    }
    let told = requested.is_some();
    let one = |why: &str| {
        if told {
            log::warn!("backing up with 1 stream instead of {want}: {why}");
        } else {
            log::info!("backing up with 1 stream: {why}");
        }
        Ok(1)
    };
    if !settings.prepared_statements() {
        return one(
            "prepared_statements=false says the connections go through PgBouncer in \
             transaction pooling, where the streams cannot be sure to share the backup's \
             snapshot; connect to the server directly for a parallel backup",
        );
    }
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int,
                    current_setting('max_connections')::int
                    - current_setting('superuser_reserved_connections')::int
                    - (SELECT count(*) FROM pg_stat_activity
                       WHERE backend_type = 'client backend')::int",
            &[],
        )
        .context("reading the server's version and free connections")?;
    let (version, free): (i32, i32) = (row.get(0), row.get(1));
    if version < 140_000 {
        return one(&format!(
            "the server is PostgreSQL {}.{}; reading a table in page ranges needs 14 or newer",
            version / 10_000,
            version % 10_000
        ));
    }
    let allowed = usize::try_from(free / 2).unwrap_or(0);
    if allowed < want {
        if allowed <= 1 {
            return one(&format!(
                "the server has {free} free connection slot(s) and the application keeps half"
            ));
        }
        log::info!(
            "backing up with {allowed} streams instead of {want}: the server has {free} free \
             connection slots and the application keeps half"
        );
        return Ok(allowed);
    }
    Ok(want)
}

/// What a stream sends back for one range.
enum Piece {
    /// COPY rows, and how many (counted by the stream as it read them).
    Rows(Vec<u8>, u64),
    /// The range is complete: this many rows.
    Done(u64),
    Failed(Error),
}

/// One range of one table, for whichever stream is free.
struct Task {
    table: &'static str,
    sql: String,
    pieces: SyncSender<Piece>,
    /// Told when the writer has taken the whole range: until then its stream starts no other
    /// (so a stream holds at most two ranges, the one it reads and one waiting for its turn).
    written: Receiver<()>,
}

/// One range, seen from the thread writing the file: its rows, and where to say they were
/// written.
type Range = (Receiver<Piece>, SyncSender<()>);

/// The streams of one backup, seen from the thread writing the file.
pub struct Streams<'scope> {
    tasks: Option<Sender<Task>>,
    /// Per table, its ranges in page order: their rows, and the word that they were written.
    ranges: Vec<(&'static str, Vec<Range>)>,
    workers: Vec<ScopedJoinHandle<'scope, Result<()>>>,
    pub count: usize,
    spare: Spare,
}

/// Piece buffers written and handed back for the streams to fill again: fresh ones would each
/// be mapped and zeroed by the kernel (a piece is above malloc's mmap threshold).
#[derive(Clone, Default)]
struct Spare(Arc<Mutex<Vec<Vec<u8>>>>);

impl Spare {
    fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(PIECE + (PIECE >> 2)))
    }

    fn give_back(&self, mut piece: Vec<u8>) {
        piece.clear();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(piece);
    }
}

/// Opens `n` streams in `scope` that import the snapshot of `tx` (exported here). Returns
/// `None`, having logged why, when no stream could start: the backup then reads everything
/// through `tx` itself.
pub fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    pool: &'scope LazyPool,
    tx: &mut Transaction<'_>,
    n: usize,
) -> Result<Option<Streams<'scope>>> {
    // The snapshot's connection takes its locks (the tables, and their indexes by planning a
    // read of each) before any stream exists, as pg_dump -j's leader does: a session that
    // asks for an exclusive lock later queues behind all of them, and nobody in the backup
    // then asks for a lock behind it (see `open_stream`).
    tx.batch_execute(&take_locks_sql(""))
        .context("locking the tables for the backup")?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .context("exporting the backup snapshot for its parallel streams")?
        .get(0);
    let (task_tx, task_rx) = channel::<Task>();
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (ready_tx, ready_rx) = channel::<std::result::Result<(), String>>();
    let spare = Spare::default();
    let mut workers = Vec::with_capacity(n);
    for i in 1..=n {
        let snapshot = snapshot.clone();
        let tasks = Arc::clone(&task_rx);
        let spare = spare.clone();
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("job_manager-backup-stream-{i}"))
            .spawn_scoped(scope, move || {
                stream(pool, i, &snapshot, &tasks, &ready, &spare)
            });
        match spawned {
            Ok(h) => workers.push(h),
            Err(e) => log::warn!("cannot start backup stream {i}: {e}"),
        }
    }
    drop(ready_tx);
    // Each stream's connect is bounded by connect_timeout and its snapshot import by
    // long_io_timeout; this bound only guards against a stream that never answers.
    let settings = pool.settings();
    let bound = settings.connect_timeout() + settings.long_io_timeout();
    let mut ready = 0;
    for _ in 0..workers.len() {
        match ready_rx.recv_timeout(bound) {
            Ok(Ok(())) => ready += 1,
            Ok(Err(why)) => log::warn!("{why}"),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut streams = Streams {
        tasks: Some(task_tx),
        ranges: Vec::new(),
        workers,
        count: ready,
        spare,
    };
    if ready == 0 {
        log::warn!("no parallel backup stream could start: backing up with 1 stream");
        streams.tasks = None;
        streams.join()?;
        return Ok(None);
    }
    if ready < n {
        log::warn!("backing up with {ready} of the {n} streams asked for");
    }
    Ok(Some(streams))
}

/// The SQL of one range: `cols` is the COPY column list, "(a, b)"; `end` `None` reads to the
/// end of the table (pages added after the size was read hold no row the snapshot sees, but
/// the last range reads them anyway).
fn range_sql(table: &str, cols: &str, start: u64, end: Option<u64>) -> String {
    let select = cols.trim_start_matches('(').trim_end_matches(')');
    let upper = end.map_or(String::new(), |e| format!(" AND ctid < '({e},0)'::tid"));
    format!(
        "COPY (SELECT {select} FROM ONLY {table} WHERE ctid >= '({start},0)'::tid{upper}) \
         TO STDOUT"
    )
}

/// The page ranges of a table of `pages` pages read by `streams` streams: enough ranges that
/// every stream stays busy, none above [`RANGE_PAGES`]; the last is open-ended.
fn ranges(pages: u64, streams: usize) -> Vec<(u64, Option<u64>)> {
    let per = pages.div_ceil(streams as u64 * 4).clamp(1, RANGE_PAGES);
    let mut out = Vec::new();
    let mut start = 0;
    while start + per < pages {
        out.push((start, Some(start + per)));
        start += per;
    }
    out.push((start, None));
    out
}

impl Streams<'_> {
    /// Hands out every range of `tables` (name, COPY column list) at once, so the streams
    /// never wait between tables; the rows come back through [`Streams::copy_table`].
    pub fn dispatch(
        &mut self,
        tx: &mut Transaction<'_>,
        tables: &[(&'static str, String)],
    ) -> Result<()> {
        let tasks = self
            .tasks
            .take()
            .ok_or_else(|| Error::Backup("the backup streams were already used".into()))?;
        for (table, cols) in tables {
            let pages: i64 = tx
                .query_one(
                    "SELECT pg_relation_size($1::text::regclass)
                            / current_setting('block_size')::bigint",
                    &[table],
                )
                .context("measuring the tables")?
                .get(0);
            let mut receivers = Vec::new();
            for (start, end) in ranges(u64::try_from(pages).unwrap_or(0), self.count) {
                let (pieces, rx) = sync_channel(PIECES_PER_RANGE);
                let (written_tx, written) = sync_channel(1);
                receivers.push((rx, written_tx));
                let task = Task {
                    table,
                    sql: range_sql(table, cols, start, end),
                    pieces,
                    written,
                };
                if tasks.send(task).is_err() {
                    return Err(self.failure());
                }
            }
            self.ranges.push((table, receivers));
        }
        Ok(())
    }

    /// Writes the rows of `table`'s ranges, in order, to `out`; returns the rows written.
    pub(crate) fn copy_table(
        &mut self,
        table: &str,
        out: &mut HashingWriter,
        progress: &mut Progress,
    ) -> Result<u64> {
        let at = self
            .ranges
            .iter()
            .position(|(t, _)| *t == table)
            .ok_or_else(|| {
                Error::Backup(format!("{table} was not handed to the backup streams"))
            })?;
        let (_, receivers) = self.ranges.remove(at);
        let mut rows = 0;
        let mut written_rows = 0u64;
        for (rx, written) in receivers {
            loop {
                match rx.recv() {
                    Ok(Piece::Rows(bytes, n)) => {
                        out.write_all(&bytes).map_err(|e| {
                            Error::Backup(format!("writing the backup failed: {e}"))
                        })?;
                        written_rows += n;
                        progress.tick(table, written_rows, out.bytes);
                        self.spare.give_back(bytes);
                    }
                    Ok(Piece::Done(n)) => {
                        rows += n;
                        let _ = written.send(());
                        break;
                    }
                    Ok(Piece::Failed(e)) => return Err(e),
                    Err(_) => return Err(self.failure()),
                }
            }
        }
        Ok(rows)
    }

    /// Why a stream stopped without saying so: its own error when it returned one.
    fn failure(&mut self) -> Error {
        self.tasks = None;
        self.ranges.clear();
        match self.join() {
            Err(e) => e,
            Ok(()) => Error::Backup("a parallel backup stream stopped; nothing was written".into()),
        }
    }

    /// Waits for every stream to end its transaction; the first error of any of them.
    pub fn join(&mut self) -> Result<()> {
        self.tasks = None;
        let mut first = Ok(());
        for h in self.workers.drain(..) {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::Backup("a backup stream panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Streams<'_> {
    /// A backup abandoned on an error: no more ranges, no one reading; the streams stop at
    /// their next piece and their connections close.
    fn drop(&mut self) {
        self.tasks = None;
        self.ranges.clear();
    }
}

/// One stream: connects, imports the snapshot, says it is ready, then reads ranges until
/// there are none left. It runs on the async driver inside one runtime entry: the sync
/// driver enters its runtime once per row (`CopyOutReader::fill_buf`), which on a 2-core
/// machine takes the CPU the server's backends need.
fn stream(
    pool: &LazyPool,
    i: usize,
    snapshot: &str,
    tasks: &Mutex<Receiver<Task>>,
    ready: &Sender<std::result::Result<(), String>>,
    spare: &Spare,
) -> Result<()> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start its runtime: {e}")));
            return Ok(());
        }
    };
    runtime.block_on(async {
        let client = match open_stream(pool, i, snapshot).await {
            Ok(c) => {
                let _ = ready.send(Ok(()));
                c
            }
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return Ok(());
            }
        };
        let mut previous: Option<Receiver<()>> = None;
        loop {
            // The range read before must be written before this stream reads another: memory
            // stays bounded however far ahead of the writer the streams could run.
            if let Some(written) = previous.take() {
                if written.recv().is_err() {
                    return Ok(()); // abandoned
                }
            }
            let next = tasks.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(task) = next else { break };
            match read_range(&client, i, &task, spare).await {
                Ok(Some(rows)) => {
                    if task.pieces.send(Piece::Done(rows)).is_err() {
                        return Ok(()); // abandoned
                    }
                    previous = Some(task.written);
                }
                Ok(None) => return Ok(()), // abandoned
                Err(e) => {
                    let again = Error::Backup(e.to_string());
                    let _ = task.pieces.send(Piece::Failed(e));
                    return Err(again);
                }
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| stream_error(i, "ending its transaction", &e))
    })
}

/// The async driver's configuration with every setting of the sync one's `pg`.
fn async_config(pg: &postgres::Config) -> tokio_postgres::Config {
    use tokio_postgres::config::Host;
    let mut c = tokio_postgres::Config::new();
    if let Some(v) = pg.get_user() {
        c.user(v);
    }
    if let Some(v) = pg.get_password() {
        c.password(v);
    }
    if let Some(v) = pg.get_dbname() {
        c.dbname(v);
    }
    if let Some(v) = pg.get_options() {
        c.options(v);
    }
    if let Some(v) = pg.get_application_name() {
        c.application_name(v);
    }
    for h in pg.get_hosts() {
        match h {
            Host::Tcp(name) => c.host(name),
            Host::Unix(path) => c.host_path(path),
        };
    }
    for a in pg.get_hostaddrs() {
        c.hostaddr(*a);
    }
    for p in pg.get_ports() {
        c.port(*p);
    }
    if let Some(v) = pg.get_connect_timeout() {
        c.connect_timeout(*v);
    }
    if let Some(v) = pg.get_tcp_user_timeout() {
        c.tcp_user_timeout(*v);
    }
    if let Some(v) = pg.get_keepalives_interval() {
        c.keepalives_interval(v);
    }
    if let Some(v) = pg.get_keepalives_retries() {
        c.keepalives_retries(v);
    }
    c.ssl_mode(pg.get_ssl_mode())
        .ssl_negotiation(pg.get_ssl_negotiation())
        .keepalives(pg.get_keepalives())
        .keepalives_idle(pg.get_keepalives_idle())
        .target_session_attrs(pg.get_target_session_attrs())
        .channel_binding(pg.get_channel_binding())
        .load_balance_hosts(pg.get_load_balance_hosts());
    c
}

/// Connects as the pool does (the same transport: TLS as `sslmode` says, the deadline on
/// every wait, here `long_io_timeout`), then imports the snapshot and pins the settings.
async fn open_stream(pool: &LazyPool, i: usize, snapshot: &str) -> Result<tokio_postgres::Client> {
    let settings = pool.settings();
    let config = async_config(settings.pg());
    let mut last = None;
    let mut connected = None;
    for negotiation in settings.tls().attempts() {
        let state = Arc::new(IoState::default());
        let connector = Connector {
            negotiation: negotiation.clone(),
            state: Arc::clone(&state),
            connect_timeout: settings.connect_timeout(),
        };
        let attempt =
            tokio::time::timeout(settings.connect_timeout(), config.connect(connector)).await;
        match attempt {
            Ok(Ok(pair)) => {
                connected = Some((pair, state));
                break;
            }
            // allow: a server that refuses plaintext (hostssl only) gets a TLS attempt.
            Ok(Err(e)) if e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
                last = Some(start_error(i, "connecting", &e));
            }
            Ok(Err(e)) => return Err(start_error(i, "connecting", &e)),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "parallel backup stream {i} could not start: no answer from {} within \
                     {:.1}s (connect_timeout)",
                    settings.redacted_dsn(),
                    settings.connect_timeout().as_secs_f64()
                )))
            }
        }
    }
    let Some(((client, connection), state)) = connected else {
        return Err(
            last.unwrap_or_else(|| Error::Backup("no way to connect was configured".into()))
        );
    };
    // The login ran under connect_timeout (the transport armed it); from here every wait of
    // this stream is the backup's: long_io_timeout without progress, as on the snapshot's
    // own connection.
    state.arm(settings.long_io_timeout());
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("parallel backup stream {i}: the connection ended: {e}");
        }
    });
    // The snapshot id is the server's own text ("00000003-0000001B-1"); quoted all the same.
    let snapshot = snapshot.replace('\'', "''");
    client
        .batch_execute(&format!(
            "SET application_name = 'job_manager backup stream {i}';
             BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
             SET TRANSACTION SNAPSHOT '{snapshot}';
             {}SET LOCAL row_security = off;
             {NO_SERVER_TIMEOUTS_SQL}",
            pinned_settings_sql()
        ))
        .await
        .map_err(|e| start_error(i, "importing the backup snapshot", &e))?;
    // Every lock the stream's reads need, taken now or never: the tables (NOWAIT) and, by
    // planning a read of each, their indexes (at most STREAM_LOCK_WAIT). A session waiting
    // for an exclusive lock (ALTER TABLE, TRUNCATE, REINDEX, VACUUM FULL) queues behind the
    // snapshot's connection; a stream asking for a lock after it would queue behind that
    // session, while the snapshot's connection waits for the stream: a deadlock outside the
    // server's view. A stream that cannot have its locks at once stays out of the backup, and
    // one that ever waits longer than this for a lock fails it (55P03) instead of hanging.
    client
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'; {}",
            STREAM_LOCK_WAIT.as_millis(),
            take_locks_sql(" NOWAIT")
        ))
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                Error::Backup(format!(
                    "parallel backup stream {i} could not start: another session is waiting \
                     for a lock on jobs or download_queue that reading them would queue behind \
                     (an ALTER TABLE, TRUNCATE, REINDEX or VACUUM FULL); the backup goes on \
                     without this stream"
                ))
            } else {
                start_error(i, "taking its locks", &e)
            }
        })?;
    Ok(client)
}

/// Takes every lock a backup's reads need: the tables (`wait`: "" or " NOWAIT") and, by
/// planning a read of each, their indexes.
fn take_locks_sql(wait: &str) -> String {
    format!(
        "LOCK TABLE ONLY jobs, ONLY download_queue IN ACCESS SHARE MODE{wait};
         EXPLAIN SELECT 1 FROM ONLY jobs; EXPLAIN SELECT 1 FROM ONLY download_queue;"
    )
}

/// How long a stream may wait for a lock (see [`open_stream`]).
const STREAM_LOCK_WAIT: Duration = Duration::from_secs(1);

/// A stream that could not start: the backup goes on without it (see [`start`]).
fn start_error(i: usize, what: &str, e: &postgres::Error) -> Error {
    Error::Backup(format!(
        "parallel backup stream {i} could not start ({what}): {}; the backup goes on without \
         this stream",
        crate::errors::error_chain(e)
    ))
}

fn stream_error(i: usize, what: &str, e: &postgres::Error) -> Error {
    Error::Backup(format!(
        "parallel backup stream {i} failed {what}: {}; the backup was abandoned and nothing \
         was written (streams=1 reads through one connection)",
        crate::errors::error_chain(e)
    ))
}

/// Reads one range into its channel; `None` when the writer stopped listening.
async fn read_range(
    client: &tokio_postgres::Client,
    i: usize,
    task: &Task,
    spare: &Spare,
) -> Result<Option<u64>> {
    use futures_util::StreamExt;
    let what = format!("reading {}", task.table);
    let copy = client
        .copy_out(task.sql.as_str())
        .await
        .map_err(|e| stream_error(i, &what, &e))?;
    let mut copy = std::pin::pin!(copy);
    let mut rows = 0u64;
    let mut piece = spare.take();
    let mut piece_rows = 0u64;
    while let Some(chunk) = copy.next().await {
        let chunk = chunk.map_err(|e| stream_error(i, &what, &e))?;
        // COPY's text rows end in a newline (one in a value is escaped).
        piece_rows += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        piece.extend_from_slice(&chunk);
        if piece.len() >= PIECE {
            let full = std::mem::replace(&mut piece, spare.take());
            rows += piece_rows;
            if task.pieces.send(Piece::Rows(full, piece_rows)).is_err() {
                return Ok(None);
            }
            piece_rows = 0;
        }
    }
    rows += piece_rows;
    if !piece.is_empty() && task.pieces.send(Piece::Rows(piece, piece_rows)).is_err() {
        return Ok(None);
    }
    Ok(Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_page_once_and_end_open() {
        for (pages, streams) in [(0, 4), (1, 2), (7, 4), (50_000, 2), (50_000, 4), (513, 1)] {
            let r = ranges(pages, streams);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, None);
            for w in r.windows(2) {
                assert_eq!(w[0].1, Some(w[1].0));
                assert!(w[0].1.unwrap() - w[0].0 <= RANGE_PAGES);
            }
        }
        assert_eq!(ranges(0, 4), vec![(0, None)]);
        assert!(ranges(50_000, 2).len() >= 8);
    }

    #[test]
    fn range_sql_reads_only_the_table_in_its_pages() {
        assert_eq!(
            range_sql("jobs", "(id, \"prompt\")", 512, Some(1024)),
            "COPY (SELECT id, \"prompt\" FROM ONLY jobs WHERE ctid >= '(512,0)'::tid AND \
             ctid < '(1024,0)'::tid) TO STDOUT"
        );
        assert!(!range_sql("jobs", "(id)", 0, None).contains("ctid <"));
    }

    #[test]
    fn streams_are_checked() {
        assert_eq!(check_streams(1).unwrap(), 1);
        assert_eq!(check_streams(16).unwrap(), 16);
        for bad in [0, -1, 17, i64::MAX] {
            assert!(matches!(check_streams(bad), Err(Error::InvalidArgument(_))));
        }
        assert_eq!(default_streams(1), 1);
        assert_eq!(default_streams(64), 4);
    }
}
