//! The backup file: plain SQL that psql can restore, with a header and a checksum trailer.
//!
//! ```text
//! -- job_manager backup                       magic line
//! -- format_version: 2                        header: key: value lines, ends with "--"
//! -- created_at: 2026-11-24T02:00:00.000000Z
//! -- rows: jobs 1000000
//! -- column: jobs "prompt_text" text
//! -- sequence: jobs 1000000 true
//! --
//! BEGIN;                                      body: session settings pinned, schema DDL (IF
//! ...                                         NOT EXISTS), TRUNCATE, COPY blocks, history
//! COMMIT;                                     rows, setval, COMMIT
//! -- end of job_manager backup
//! -- sha256: <hex of every byte above>        trailer
//! -- hmac-sha256: <hex>                       only when a backup key is configured
//! ```
//!
//! Every line of the body is one that job_manager writes: `reader` accepts a file only when
//! each line is exactly what this module would write for the header it read (format 1 files,
//! written before the settings were pinned and names quoted, are read by the same rules).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::write::GzEncoder;
use hmac::Mac;
use sha2::{Digest, Sha256};

use super::grammar::{self, Ident, Refusal, SqlType};
use super::key::{HmacSha256, Key};
use crate::errors::Error;

pub const MAGIC: &str = "-- job_manager backup";
/// The format written. Version 1 (no pinned settings, unquoted names) is still read.
pub const FORMAT_VERSION: u32 = 2;
pub const END_MARKER: &str = "-- end of job_manager backup";
pub const TRAILER: &str = "-- sha256: ";
pub const HMAC_TRAILER: &str = "-- hmac-sha256: ";
/// The data tables a backup holds, in restore order (parents first).
pub const DATA_TABLES: [&str; 2] = ["jobs", "download_queue"];
pub const HISTORY_TABLE: &str = crate::schema::HISTORY_TABLE;

const RESTORE_HINT_V1: &str = "-- restore: python -m job_manager restore FILE, or psql -v \
                               ON_ERROR_STOP=1 --single-transaction -f FILE";
const RESTORE_HINT: &str = "-- restore: python -m job_manager restore FILE (or, once python -m \
                            job_manager verify --for-psql FILE passes: psql -X -v ON_ERROR_STOP=1 \
                            -f FILE)";

/// The session settings a backup is written and restored with, as pg_dump pins them: the
/// text of dates, intervals, floats and strings then means the same whatever the source or
/// target database's defaults are.
pub const PINNED_SETTINGS: [(&str, &str); 6] = [
    ("client_encoding", "'UTF8'"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "'ISO, MDY'"),
    ("intervalstyle", "'postgres'"),
    ("timezone", "'UTC'"),
    ("extra_float_digits", "3"),
];

/// Clears the server-side timeouts a role or database may set (`statement_timeout`,
/// `idle_in_transaction_session_timeout`, and `transaction_timeout` where the server has it)
/// for a backup's or restore's transaction: such a timeout would end a long backup part-way,
/// or a parallel backup's snapshot connection, idle while its streams read. pg_dump and
/// pg_restore clear them too. Those waits stay bounded by the client (`long_io_timeout`
/// without progress). Not written into backup files.
pub const NO_SERVER_TIMEOUTS_SQL: &str = "SET LOCAL statement_timeout = 0;
SET LOCAL idle_in_transaction_session_timeout = 0;
SELECT set_config('transaction_timeout', '0', true)
WHERE current_setting('transaction_timeout', true) IS NOT NULL;
";

/// `SET LOCAL ...;` for each of [`PINNED_SETTINGS`], one a line.
pub fn pinned_settings_sql() -> String {
    PINNED_SETTINGS
        .iter()
        .fold(String::new(), |mut sql, (name, value)| {
            let _ = writeln!(sql, "SET LOCAL {name} = {value};");
            sql
        })
}

/// What kind of file a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Written by `backup_database`.
    JobManager,
    /// A plain `pg_dump` (the replaced system's backups, or `dump_database`), with COPY or
    /// INSERT statements.
    PgDump,
    /// A CSV export of jobs with a header row (the replaced system's "jobs only" export).
    Csv,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JobManager => "job_manager",
            Kind::PgDump => "pg_dump",
            Kind::Csv => "csv",
        }
    }
}

/// One column of a data table: its name and type, both parsed.
pub type Column = (Ident, SqlType);

/// The header of a job_manager backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub format_version: u32,
    pub created_at: Option<DateTime<Utc>>,
    pub server_version: String,
    pub job_manager_version: String,
    pub schema_version: i32,
    /// Rows per table: the data tables and the schema history.
    pub rows: BTreeMap<String, u64>,
    /// Columns per data table.
    pub columns: BTreeMap<String, Vec<Column>>,
    /// Sequence of each data table's id: (last_value, is_called).
    pub sequences: BTreeMap<String, (i64, bool)>,
}

impl Header {
    /// The header's text in `format_version`, from the magic line to the closing `--`.
    pub fn render(&self) -> String {
        let mut w = String::new();
        let v2 = self.format_version >= 2;
        let _ = writeln!(w, "{MAGIC}");
        let _ = writeln!(w, "-- format_version: {}", self.format_version);
        if let Some(t) = self.created_at {
            let _ = writeln!(
                w,
                "-- created_at: {}",
                t.to_rfc3339_opts(SecondsFormat::Micros, true)
            );
        }
        let _ = writeln!(w, "-- server_version: {}", self.server_version);
        let _ = writeln!(w, "-- job_manager_version: {}", self.job_manager_version);
        let _ = writeln!(w, "-- schema_version: {}", self.schema_version);
        for (table, n) in &self.rows {
            let _ = writeln!(w, "-- rows: {table} {n}");
        }
        for (table, cols) in &self.columns {
            for (name, ty) in cols {
                let name = if v2 {
                    name.quoted()
                } else {
                    name.as_str().to_owned()
                };
                let _ = writeln!(w, "-- column: {table} {name} {}", ty.render());
            }
        }
        for (table, (value, called)) in &self.sequences {
            let _ = writeln!(w, "-- sequence: {table} {value} {called}");
        }
        let _ = writeln!(w, "{}", if v2 { RESTORE_HINT } else { RESTORE_HINT_V1 });
        let _ = writeln!(w, "--");
        w
    }

    /// Applies one header line (without the newline). `Ok(false)` at the end of the header.
    /// Values are parsed strictly; the caller then checks that [`Header::render`] gives back
    /// the exact text read, which rules out reordered, repeated or unknown lines.
    pub fn apply(&mut self, line: &str) -> Result<bool, Refusal> {
        if line == "--" {
            return Ok(false);
        }
        let bad = || "a malformed header line".to_owned();
        let rest = line.strip_prefix("-- ").ok_or_else(bad)?;
        let (key, value) = rest.split_once(": ").ok_or_else(bad)?;
        match key {
            "format_version" => self.format_version = grammar::parse_int(value).ok_or_else(bad)?,
            "created_at" => {
                self.created_at = Some(
                    DateTime::parse_from_rfc3339(value)
                        .map_err(|_| bad())?
                        .with_timezone(&Utc),
                );
            }
            "server_version" => {
                grammar::check_header_text(value)?;
                value.clone_into(&mut self.server_version);
            }
            "job_manager_version" => {
                grammar::check_header_text(value)?;
                value.clone_into(&mut self.job_manager_version);
            }
            "schema_version" => self.schema_version = grammar::parse_int(value).ok_or_else(bad)?,
            "rows" => {
                let (table, n) = value.split_once(' ').ok_or_else(bad)?;
                if table != HISTORY_TABLE {
                    check_data_table(table)?;
                }
                let n = grammar::parse_int(n).ok_or_else(bad)?;
                if self.rows.insert(table.to_owned(), n).is_some() {
                    return Err(format!("the row count of {table} is given twice"));
                }
            }
            "column" => {
                let (table, rest) = value.split_once(' ').ok_or_else(bad)?;
                check_data_table(table)?;
                let (name, rest) = if self.format_version >= 2 {
                    Ident::parse_quoted(rest)?
                } else {
                    Ident::parse_plain_or_quoted(rest)?
                };
                let ty = SqlType::parse(rest.strip_prefix(' ').ok_or_else(bad)?)?;
                let cols = self.columns.entry(table.to_owned()).or_default();
                if cols.len() >= grammar::MAX_COLUMNS {
                    return Err(format!(
                        "{table} has more than {} columns",
                        grammar::MAX_COLUMNS
                    ));
                }
                if cols.iter().any(|(n, _)| *n == name) {
                    return Err(format!("{table} has the column {} twice", name.quoted()));
                }
                cols.push((name, ty));
            }
            "sequence" => {
                let mut parts = value.split(' ');
                let (Some(table), Some(v), Some(called), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                check_data_table(table)?;
                let called = match called {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad()),
                };
                let v = grammar::parse_int(v).ok_or_else(bad)?;
                self.sequences.insert(table.to_owned(), (v, called));
            }
            "restore" => {}
            _ => return Err(bad()),
        }
        Ok(true)
    }

    /// What a complete header must hold: both data tables with their columns, and the row
    /// count of every table.
    pub fn check_complete(&self) -> Result<(), Refusal> {
        for table in DATA_TABLES {
            if self.columns.get(table).is_none_or(Vec::is_empty) {
                return Err(format!("the header lists no columns for {table}"));
            }
        }
        for table in DATA_TABLES.iter().copied().chain([HISTORY_TABLE]) {
            if !self.rows.contains_key(table) {
                return Err(format!("the header gives no row count for {table}"));
            }
        }
        Ok(())
    }
}

pub fn corrupt(message: impl Into<String>) -> Error {
    Error::BackupCorrupt(message.into())
}

pub fn check_data_table(table: &str) -> Result<(), Refusal> {
    if DATA_TABLES.contains(&table) {
        Ok(())
    } else {
        Err(format!(
            "the backup names a table job_manager does not own: {}",
            grammar::clip(table)
        ))
    }
}

/// `ALTER TABLE t ADD COLUMN IF NOT EXISTS ...` for every column of the backup: columns that a
/// newer or older schema lacks are added (never dropped), so no value is lost. Built from
/// parsed names and types only.
pub fn add_columns_sql(table: &str, columns: &[Column]) -> String {
    let adds: Vec<String> = columns
        .iter()
        .map(|(name, ty)| format!("ADD COLUMN IF NOT EXISTS {} {}", name.quoted(), ty.render()))
        .collect();
    format!("ALTER TABLE {table} {};", adds.join(", "))
}

/// `("id", "prompt_text", ...)`.
pub fn copy_columns<'a>(names: impl IntoIterator<Item = &'a Ident>) -> String {
    let names: Vec<String> = names.into_iter().map(Ident::quoted).collect();
    format!("({})", names.join(", "))
}

/// The statement that sets a table's id sequence after a restore: never below the largest id,
/// and as the backup had it for an empty table.
pub fn setval_sql(table: &str, value: i64, is_called: bool) -> String {
    format!(
        "SELECT pg_catalog.setval(pg_get_serial_sequence('{table}', 'id'), \
         GREATEST({value}, COALESCE((SELECT max(id) FROM {table}), 0), 1), \
         {is_called} OR EXISTS (SELECT 1 FROM {table}));"
    )
}

/// Empties the owned tables, and only them (not tables that inherit from them).
pub const TRUNCATE_SQL: &str = "TRUNCATE TABLE ONLY download_queue, ONLY jobs;";
/// What format 1 files wrote.
pub const TRUNCATE_SQL_V1: &str = "TRUNCATE TABLE download_queue, jobs;";

pub const HISTORY_DDL: &str = "CREATE TABLE IF NOT EXISTS job_manager_schema_history (version \
                               integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, \
                               applied_at timestamptz NOT NULL DEFAULT now(), execution_ms \
                               integer NOT NULL);";

const HISTORY_INSERT_HEAD: &str = "INSERT INTO job_manager_schema_history (version, name, \
                                   checksum, applied_at, execution_ms) VALUES (";
const HISTORY_INSERT_TAIL: &str = "'::timestamptz, 0) ON CONFLICT (version) DO NOTHING;";

/// The history row of a migration, `applied_at` as the server printed it (ISO).
pub fn history_insert_sql(m: &crate::schema::Migration, applied_at: &str) -> String {
    format!(
        "{HISTORY_INSERT_HEAD}{}, '{}', '{}', '{applied_at}{HISTORY_INSERT_TAIL}",
        m.version,
        m.name,
        m.checksum()
    )
}

/// Parses a history row written by [`history_insert_sql`]: the migration must be one this
/// build embeds (same name and checksum) and `applied_at` an ISO timestamp. Returns the version.
pub fn parse_history_insert(line: &str) -> Result<i32, Refusal> {
    let bad = || "not a schema history row job_manager writes".to_owned();
    let rest = line.strip_prefix(HISTORY_INSERT_HEAD).ok_or_else(bad)?;
    let (version, rest) = rest.split_once(", '").ok_or_else(bad)?;
    let version: i32 = grammar::parse_int(version).ok_or_else(bad)?;
    let m = crate::schema::MIGRATIONS
        .iter()
        .find(|m| m.version == version)
        .ok_or_else(|| newer_schema(version))?;
    let rest = rest
        .strip_prefix(&format!("{}', '{}', '", m.name, m.checksum()))
        .ok_or_else(|| format!("the schema history row of migration {} does not match the migration this job_manager embeds", m.label()))?;
    let applied_at = rest.strip_suffix(HISTORY_INSERT_TAIL).ok_or_else(bad)?;
    grammar::check_iso_timestamptz(applied_at)?;
    Ok(version)
}

pub fn newer_schema(version: i32) -> Refusal {
    format!(
        "the backup was written by a newer job_manager (schema migration {version} is unknown \
         here); upgrade job_manager to read it"
    )
}

/// The columns of a table as a backup records them, from the catalog: every name and type
/// must be one a backup can carry and a fresh database can recreate, else the backup is
/// refused now rather than found unrestorable later.
pub fn catalog_columns(
    table: &str,
    rows: &[(String, String)],
) -> crate::errors::Result<Vec<Column>> {
    rows.iter()
        .map(|(name, ty)| {
            let refuse = |why: Refusal| {
                Error::Backup(format!(
                    "cannot back up {table}.{}: {why}; nothing was written",
                    grammar::clip(name)
                ))
            };
            Ok((
                Ident::new(name).map_err(refuse)?,
                SqlType::parse(ty).map_err(refuse)?,
            ))
        })
        .collect()
}

/// How a backup file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd, multi-threaded: the default compressed format (`.sql.zst`).
    Zstd,
    /// gzip, for tools that only read gzip (`.sql.gz`).
    Gzip,
}

/// The zstd level: smaller files than gzip -6 at a fraction of its time.
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The file name's suffix after `.sql`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
        }
    }

    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zstd"),
            Compression::Gzip => Some("gzip"),
        }
    }

    /// What a file's first bytes say it is.
    pub fn of_magic(first: &[u8]) -> Self {
        if first.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if first.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// A reader of the decompressed bytes. zstd's window is capped (128 MiB, its default
    /// limit), so a crafted frame cannot make the decoder allocate more.
    pub fn decoder<'a>(
        self,
        raw: impl BufRead + Send + 'a,
    ) -> io::Result<Box<dyn BufRead + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(io::BufReader::with_capacity(
                1 << 16,
                flate2::bufread::MultiGzDecoder::new(raw),
            )),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(raw)?;
                d.window_log_max(27)?;
                Box::new(io::BufReader::with_capacity(1 << 16, d))
            }
        })
    }
}

/// Where backup bytes go: the file, compressed or not. Hashing happens above it.
pub enum Sink {
    Plain(io::BufWriter<File>),
    Gzip(GzEncoder<io::BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, io::BufWriter<File>>),
}

impl Sink {
    pub fn new(file: File, compression: Compression) -> io::Result<Self> {
        let w = io::BufWriter::with_capacity(1 << 17, file);
        Ok(match compression {
            Compression::None => Sink::Plain(w),
            Compression::Gzip => Sink::Gzip(GzEncoder::new(w, flate2::Compression::fast())),
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                let workers = std::thread::available_parallelism().map_or(1, usize::from);
                z.multithread(u32::try_from(workers.min(8)).unwrap_or(1))?;
                Sink::Zstd(z)
            }
        })
    }

    /// The file underneath.
    fn file(&self) -> &File {
        match self {
            Sink::Plain(w) => w.get_ref(),
            Sink::Gzip(gz) => gz.get_ref().get_ref(),
            Sink::Zstd(z) => z.get_ref().get_ref(),
        }
    }

    /// Flushes everything and returns the file, not yet synced.
    pub fn finish(self) -> io::Result<File> {
        let w = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(gz) => gz.finish()?,
            Sink::Zstd(z) => z.finish()?,
        };
        w.into_inner().map_err(io::IntoInnerError::into_error)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// How much a [`HashingWriter`] gathers before handing it to its writer thread.
const BLOCK: usize = 1 << 20;
/// Blocks in flight between the reader and the writer thread (bounds memory at ~8 MiB).
const BLOCKS_IN_FLIGHT: usize = 6;

/// Hashes and writes to a sink on its own thread, so the connection reading the rows never
/// waits for SHA-256 or the disk (and the server never waits for us): the caller's writes
/// are gathered into 1 MiB blocks and passed on through a bounded channel.
pub struct HashingWriter {
    block: Vec<u8>,
    to_writer: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<Digests>>>,
    /// Bytes written so far.
    pub bytes: u64,
}

impl HashingWriter {
    /// With a key, an HMAC-SHA-256 of the same bytes is computed beside the SHA-256.
    pub fn new(sink: Sink, key: Option<&Key>) -> io::Result<Self> {
        let mut mac = key.map(Key::mac);
        let (to_writer, blocks) = sync_channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
        let (give_back, spare) = channel();
        let writer = std::thread::Builder::new()
            .name("job_manager-backup-writer".into())
            .spawn(move || {
                let mut sink = sink;
                let mut hasher = Sha256::new();
                let mut written_back = 0;
                for mut block in blocks {
                    hasher.update(&block);
                    if let Some(mac) = &mut mac {
                        mac.update(&block);
                    }
                    sink.write_all(&block)?;
                    block.clear();
                    let _ = give_back.send(block);
                    written_back = start_writeback(sink.file(), written_back);
                }
                Ok(Digests { hasher, mac, sink })
            })?;
        Ok(HashingWriter {
            block: Vec::with_capacity(BLOCK),
            to_writer: Some(to_writer),
            spare,
            writer: Some(writer),
            bytes: 0,
        })
    }

    fn pass_on(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        let full = std::mem::replace(&mut self.block, next);
        let sent = self.to_writer.as_ref().map(|w| w.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer thread stopped: its error says why.
            _ => self
                .join()
                .and(Err(io::Error::other("the backup writer stopped"))),
        }
    }

    /// Waits for the writer thread to write everything sent so far.
    fn join(&mut self) -> io::Result<Digests> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the backup writer thread panicked")),
            None => Err(io::Error::other("the backup writer stopped")),
        }
    }

    /// Writes the trailer (not hashed): the SHA-256 line, and the HMAC line when a key was
    /// given. Returns the hex SHA-256 and the sink.
    pub fn finish(mut self) -> io::Result<(String, Sink)> {
        if !self.block.is_empty() {
            self.pass_on()?;
        }
        let Digests {
            hasher,
            mac,
            mut sink,
        } = self.join()?;
        let digest = hex::encode(hasher.finalize());
        writeln!(sink, "{TRAILER}{digest}")?;
        if let Some(mac) = mac {
            writeln!(
                sink,
                "{HMAC_TRAILER}{}",
                hex::encode(mac.finalize().into_bytes())
            )?;
        }
        Ok((digest, sink))
    }
}

/// What the writer thread hands back: the digests of every byte, and the sink.
struct Digests {
    hasher: Sha256,
    mac: Option<HmacSha256>,
    sink: Sink,
}

/// Every [`WRITEBACK_EVERY`] bytes, asks the kernel to start writing what the file has so far
/// to disk (`POSIX_FADV_DONTNEED` starts writeback of dirty pages without waiting, then drops
/// them from the cache once clean). The disk works while the backup runs, the final fsync
/// only waits for the tail, and a backup does not push the database's pages out of the cache.
/// Returns the offset up to which writeback was started.
fn start_writeback(file: &File, from: u64) -> u64 {
    const WRITEBACK_EVERY: u64 = 8 << 20;
    let mut f = file;
    let Ok(end) = io::Seek::stream_position(&mut f) else {
        return from;
    };
    if end < from + WRITEBACK_EVERY {
        return from;
    }
    // Advice only: the fsync before publishing is what makes the file durable.
    let _ = rustix::fs::fadvise(
        file,
        from,
        std::num::NonZeroU64::new(end - from),
        rustix::fs::Advice::DontNeed,
    );
    end
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.block.extend_from_slice(buf);
        self.bytes += buf.len() as u64;
        if self.block.len() >= BLOCK {
            self.pass_on()?;
        }
        Ok(buf.len())
    }

    /// Blocks reach the file when they are full or at [`HashingWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for HashingWriter {
    /// A backup abandoned on an error: let the writer thread end before the file goes away.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut h = Header {
            format_version: FORMAT_VERSION,
            created_at: Some(
                DateTime::parse_from_rfc3339("2026-11-24T01:03:29.587449Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            server_version: "15.20 (Debian)".into(),
            job_manager_version: "0.1.0".into(),
            schema_version: 3,
            ..Header::default()
        };
        h.rows.insert("jobs".into(), 42);
        h.rows.insert("download_queue".into(), 0);
        h.rows.insert(HISTORY_TABLE.into(), 3);
        for (table, name, ty) in [
            ("jobs", "id", "integer"),
            ("jobs", "submitted_at", "timestamp without time zone"),
            ("jobs", "reviewed by", "character varying(20)"),
            ("jobs", "备注", "text"),
            ("download_queue", "id", "integer"),
        ] {
            h.columns
                .entry(table.into())
                .or_default()
                .push((Ident::new(name).unwrap(), SqlType::parse(ty).unwrap()));
        }
        h.sequences.insert("jobs".into(), (42, true));
        h
    }

    fn parse(text: &str) -> Result<Header, Refusal> {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(MAGIC));
        let mut parsed = Header::default();
        for line in lines {
            if !parsed.apply(line)? {
                break;
            }
        }
        Ok(parsed)
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        let text = h.render();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(parsed.render(), text);
        parsed.check_complete().unwrap();
    }

    #[test]
    fn hostile_header_values_are_refused() {
        let mut h = Header {
            format_version: 2,
            ..Header::default()
        };
        for line in [
            "-- column: pg_authid \"rolpassword\" text",
            "-- column: jobs \"x\" text, SET UNLOGGED",
            "-- column: jobs x text",
            "-- column: jobs \"x\" text; DROP TABLE jobs",
            "-- sequence: dag 1 true",
            "-- sequence: jobs 1 yes",
            "-- sequence: jobs 01 true",
            "-- rows: jobs many",
            "-- server_version: 15 \\! id",
            "-- unknown: 1",
            "COPY jobs",
        ] {
            assert!(h.apply(line).is_err(), "{line}");
        }
    }

    #[test]
    fn history_rows_round_trip_and_refuse_edits() {
        let m = &crate::schema::MIGRATIONS[0];
        let line = history_insert_sql(m, "2026-11-24 08:19:40.41387+00");
        assert_eq!(parse_history_insert(&line), Ok(m.version));
        assert!(parse_history_insert(&line.replace("+00'", "+00'); DROP TABLE dag; --'")).is_err());
        assert!(parse_history_insert(&line.replace("2026-11-24", "24/11/2026")).is_err());
        assert!(parse_history_insert(&line.replace("(1, ", "(99, ")).is_err());
    }

    #[test]
    fn hashing_writer_hashes_and_writes_every_block_in_order() {
        let dir = std::env::temp_dir().join(format!("jm-hw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        let key = Key::new(b"0123456789abcdef", "test").unwrap();
        let mut w = HashingWriter::new(
            Sink::new(File::create(&path).unwrap(), Compression::None).unwrap(),
            Some(&key),
        )
        .unwrap();
        let data: Vec<u8> = (0..3 * BLOCK + 12_345)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.bytes, data.len() as u64);
        let (digest, sink) = w.finish().unwrap();
        sink.finish().unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(&data)));
        let mut mac = key.mac();
        mac.update(&data);
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[..data.len()], &data[..]);
        assert_eq!(
            &written[data.len()..],
            format!(
                "{TRAILER}{digest}\n{HMAC_TRAILER}{}\n",
                hex::encode(mac.finalize().into_bytes())
            )
            .as_bytes()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
