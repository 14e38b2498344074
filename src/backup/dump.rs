//! Writing a backup: one REPEATABLE READ, READ ONLY snapshot, streamed out with COPY.

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres::{Client, IsolationLevel, Transaction};

use super::format::{
    add_columns_sql, catalog_columns, copy_columns, history_insert_sql, pinned_settings_sql,
    setval_sql, HashingWriter, Header, DATA_TABLES, END_MARKER, FORMAT_VERSION, HISTORY_DDL,
    NO_SERVER_TIMEOUTS_SQL, TRUNCATE_SQL,
};
use super::parallel::Streams;
use crate::errors::{Error, Result};
use crate::pool::Context;
use crate::schema::{self, MIGRATIONS};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The "backup in progress" lines of a long backup: at most one every [`PROGRESS_EVERY`],
/// whichever path (one COPY, or the parallel streams) reads the rows.
pub(crate) struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
        }
    }

    /// Logs where the backup is if [`PROGRESS_EVERY`] has passed since the last line.
    pub(crate) fn tick(&mut self, table: &str, rows: u64, bytes: u64) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            log::info!(
                "backup in progress: {table} {rows} rows, {} MiB written in {:.0}s",
                bytes >> 20,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The backup's snapshot: one REPEATABLE READ, READ ONLY transaction with the session
/// settings pinned (the text of dates, intervals and floats must not depend on the database's
/// defaults) and row security off (a policy that would hide rows is an error, never a short
/// backup).
pub fn begin_snapshot(client: &mut Client) -> Result<Transaction<'_>> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .context("starting the backup snapshot")?;
    tx.batch_execute(&format!(
        "{}SET LOCAL row_security = off;\n{NO_SERVER_TIMEOUTS_SQL}",
        pinned_settings_sql()
    ))
    .context("starting the backup snapshot")?;
    Ok(tx)
}

/// Writes the backup from a transaction that already sees a consistent state with its
/// settings pinned: the backup's own snapshot, or a restore's transaction holding the owned
/// tables' locks (its safety backup: no row can be added between it and the load).
///
/// With `streams`, the tables' rows are read by those connections sharing `tx`'s snapshot
/// (see [`super::parallel`]); the file is the same.
pub fn write_snapshot(
    tx: &mut Transaction<'_>,
    out: &mut HashingWriter,
    created_at: DateTime<Utc>,
    streams: Option<&mut Streams<'_>>,
) -> Result<Header> {
    let (header, history) = read_header(tx, created_at)?;
    write_body(tx, &header, &history, out, streams)?;
    Ok(header)
}

/// Everything the header records, read in the backup's snapshot.
fn read_header(
    tx: &mut Transaction<'_>,
    created_at: DateTime<Utc>,
) -> Result<(Header, Vec<schema::AppliedMigration>)> {
    let Some(history) = schema::read_history(tx)? else {
        return Err(Error::Schema(
            "there is nothing to back up: job_manager's tables do not exist here; run \
             init_database() first"
                .into(),
        ));
    };
    let server_version: String = tx
        .query_one("SHOW server_version", &[])
        .context("reading the server version")?
        .get(0);
    let mut header = Header {
        format_version: FORMAT_VERSION,
        created_at: Some(created_at),
        server_version: server_version
            .chars()
            .map(|c| if c.is_control() || c == '\\' { ' ' } else { c })
            .take(200)
            .collect(),
        job_manager_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: history.iter().map(|h| h.version).max().unwrap_or(0),
        ..Header::default()
    };
    header
        .rows
        .insert(schema::HISTORY_TABLE.to_owned(), history.len() as u64);
    for table in DATA_TABLES {
        let columns: Vec<(String, String)> = tx
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                   AND attgenerated = ''
                 ORDER BY attnum",
                &[&table],
            )
            .context("reading the table layout")?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        header
            .columns
            .insert(table.to_owned(), catalog_columns(table, &columns)?);
        let count: i64 = tx
            // ONLY: COPY reads the table's own rows, never those of tables inheriting from it.
            .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
            .context("counting rows")?
            .get(0);
        header
            .rows
            .insert(table.to_owned(), u64::try_from(count).unwrap_or_default());
        let seq: Option<String> = tx
            .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&table])
            .context("finding the id sequence")?
            .get(0);
        if let Some(seq) = seq {
            // `seq` is the server's own, already quoted, qualified name.
            let row = tx
                .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
                .context("reading the id sequence")?;
            header
                .sequences
                .insert(table.to_owned(), (row.get(0), row.get(1)));
        }
    }
    Ok((header, history))
}

/// The SQL body: schema DDL, TRUNCATE, COPY blocks, history rows, sequences, COMMIT.
fn write_body(
    tx: &mut Transaction<'_>,
    header: &Header,
    history: &[schema::AppliedMigration],
    out: &mut HashingWriter,
    mut streams: Option<&mut Streams<'_>>,
) -> Result<()> {
    let io = |e: io::Error| Error::Backup(format!("writing the backup failed: {e}"));
    out.write_all(header.render().as_bytes()).map_err(io)?;
    write!(
        out,
        "BEGIN;\nSET LOCAL client_min_messages = warning;\n{}",
        pinned_settings_sql()
    )
    .map_err(io)?;
    for m in MIGRATIONS {
        if history.iter().any(|h| h.version == m.version) {
            writeln!(
                out,
                "-- schema: migration {}\n{}",
                m.label(),
                m.sql.trim_end()
            )
            .map_err(io)?;
        }
    }
    writeln!(out, "{HISTORY_DDL}").map_err(io)?;
    for (table, columns) in &header.columns {
        writeln!(out, "{}", add_columns_sql(table, columns)).map_err(io)?;
    }
    writeln!(out, "-- data\n{TRUNCATE_SQL}").map_err(io)?;
    let mut progress = Progress::new();
    let columns = |table: &str| copy_columns(header.columns[table].iter().map(|(name, _)| name));
    if let Some(streams) = streams.as_deref_mut() {
        let tables: Vec<(&'static str, String)> =
            DATA_TABLES.iter().map(|t| (*t, columns(t))).collect();
        streams.dispatch(tx, &tables)?;
    }
    for table in DATA_TABLES {
        let cols = columns(table);
        writeln!(out, "COPY {table} {cols} FROM stdin;").map_err(io)?;
        let rows = match streams.as_deref_mut() {
            Some(streams) => streams.copy_table(table, out, &mut progress)?,
            None => copy_table(tx, table, &cols, out, &mut progress)?,
        };
        if rows != header.rows[table] {
            return Err(Error::Backup(format!(
                "{table}: counted {} rows but COPY returned {rows} in the same snapshot",
                header.rows[table]
            )));
        }
        writeln!(out, "\\.").map_err(io)?;
    }
    if let Some(streams) = streams {
        // Every stream ended its transaction cleanly before the file can be published.
        streams.join()?;
    }
    for h in history {
        // A row the reader would refuse is refused here, before the file is published.
        let m = MIGRATIONS
            .iter()
            .find(|m| m.version == h.version && m.name == h.name && m.checksum() == h.checksum)
            .ok_or_else(|| {
                Error::Backup(format!(
                    "cannot back up: schema migration {} ({}) in this database is not one this                      job_manager embeds (the database was migrated by a newer job_manager);                      upgrade job_manager",
                    h.version, h.name
                ))
            })?;
        let applied_at: String = tx
            .query_one(
                "SELECT applied_at::text FROM job_manager_schema_history WHERE version = $1",
                &[&h.version],
            )
            .context("reading the schema history")?
            .get(0);
        writeln!(out, "{}", history_insert_sql(m, &applied_at)).map_err(io)?;
    }
    for (table, (value, called)) in &header.sequences {
        writeln!(out, "{}", setval_sql(table, *value, *called)).map_err(io)?;
    }
    writeln!(out, "COMMIT;\n{END_MARKER}").map_err(io)?;
    Ok(())
}

/// Streams one table through COPY into `out`; returns the rows written.
fn copy_table(
    tx: &mut Transaction<'_>,
    table: &str,
    cols: &str,
    out: &mut HashingWriter,
    progress: &mut Progress,
) -> Result<u64> {
    let mut reader = tx
        .copy_out(&format!("COPY {table} {cols} TO STDOUT"))
        .context(&format!("reading {table}"))?;
    let mut rows = 0u64;
    let mut chunks = 0u32;
    loop {
        // One COPY row per chunk: taken straight from the driver's buffer, no copy here.
        let chunk = reader
            .fill_buf()
            .map_err(|e| Error::Unavailable(format!("reading {table} failed: {e}")))?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        rows += memchr::memchr_iter(b'\n', chunk).count() as u64;
        out.write_all(chunk)
            .map_err(|e| Error::Backup(format!("writing the backup failed: {e}")))?;
        reader.consume(n);
        chunks = chunks.wrapping_add(1);
        if chunks % 4096 == 0 {
            progress.tick(table, rows, out.bytes);
        }
    }
    Ok(rows)
}
