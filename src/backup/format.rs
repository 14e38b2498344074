//! The backup file: plain SQL that psql can restore, with a header and a checksum trailer.
//!
//! ```text
//! -- job_manager backup                       magic line
//! -- format_version: 1                        header: key: value lines, ends with "--"
//! -- created_at: 2026-11-24T02:00:00.000000Z
//! -- rows: jobs 1000000
//! -- column: jobs prompt_text text
//! -- sequence: jobs 1000000 true
//! --
//! BEGIN;                                      body: schema DDL (IF NOT EXISTS), TRUNCATE,
//! ...                                         COPY blocks, history rows, setval, COMMIT
//! COMMIT;
//! -- end of job_manager backup
//! -- sha256: <hex of every byte above>        trailer: the last line
//! ```
//!
//! Everything is read as a stream of lines of bounded length, so verifying or restoring a file
//! of any size (or a 2 GB file of zeros) keeps memory flat.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::errors::{Error, Result};

pub const MAGIC: &str = "-- job_manager backup";
pub const FORMAT_VERSION: u32 = 1;
pub const END_MARKER: &str = "-- end of job_manager backup";
pub const TRAILER: &str = "-- sha256: ";
/// The data tables a backup holds, in restore order (parents first).
pub const DATA_TABLES: [&str; 2] = ["jobs", "download_queue"];
pub const HISTORY_TABLE: &str = crate::schema::HISTORY_TABLE;
/// The longest line accepted (a COPY row holds one job; prompts are far smaller).
pub const MAX_LINE: usize = 64 * 1024 * 1024;
/// The longest first line: the magic line is short, so a huge binary file is refused at once.
const MAX_FIRST_LINE: usize = 4096;

const PG_DUMP_MAGIC: &str = "-- PostgreSQL database dump";
const PG_DUMP_COMPLETE: &str = "-- PostgreSQL database dump complete";

/// What kind of file a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Written by `backup_database`.
    JobManager,
    /// A plain `pg_dump` (the replaced system's backups, or `dump_database`).
    PgDump,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JobManager => "job_manager",
            Kind::PgDump => "pg_dump",
        }
    }
}

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
    /// Columns per data table: (name, SQL type).
    pub columns: BTreeMap<String, Vec<(String, String)>>,
    /// Sequence of each data table's id: (last_value, is_called).
    pub sequences: BTreeMap<String, (i64, bool)>,
}

impl Header {
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "{MAGIC}")?;
        writeln!(w, "-- format_version: {}", self.format_version)?;
        if let Some(t) = self.created_at {
            writeln!(
                w,
                "-- created_at: {}",
                t.to_rfc3339_opts(SecondsFormat::Micros, true)
            )?;
        }
        writeln!(w, "-- server_version: {}", one_line(&self.server_version))?;
        writeln!(w, "-- job_manager_version: {}", self.job_manager_version)?;
        writeln!(w, "-- schema_version: {}", self.schema_version)?;
        for (table, n) in &self.rows {
            writeln!(w, "-- rows: {table} {n}")?;
        }
        for (table, cols) in &self.columns {
            for (name, ty) in cols {
                writeln!(w, "-- column: {table} {name} {ty}")?;
            }
        }
        for (table, (value, called)) in &self.sequences {
            writeln!(w, "-- sequence: {table} {value} {called}")?;
        }
        writeln!(
            w,
            "-- restore: python -m job_manager restore FILE, or \
             psql -v ON_ERROR_STOP=1 --single-transaction -f FILE"
        )?;
        writeln!(w, "--")
    }

    /// Applies one header line (without the newline). `Ok(false)` at the end of the header.
    fn apply(&mut self, line: &str) -> Result<bool> {
        if line == "--" {
            return Ok(false);
        }
        let rest = line
            .strip_prefix("-- ")
            .ok_or_else(|| corrupt(format!("unexpected line in the header: {}", clip(line))))?;
        let Some((key, value)) = rest.split_once(": ") else {
            return Ok(true); // a comment line
        };
        let bad = || corrupt(format!("malformed header line: {}", clip(line)));
        match key {
            "format_version" => self.format_version = value.parse().map_err(|_| bad())?,
            "created_at" => {
                self.created_at = Some(
                    DateTime::parse_from_rfc3339(value)
                        .map_err(|_| bad())?
                        .with_timezone(&Utc),
                );
            }
            "server_version" => value.clone_into(&mut self.server_version),
            "job_manager_version" => value.clone_into(&mut self.job_manager_version),
            "schema_version" => self.schema_version = value.parse().map_err(|_| bad())?,
            "rows" => {
                let (table, n) = value.split_once(' ').ok_or_else(bad)?;
                self.rows
                    .insert(table.to_owned(), n.parse().map_err(|_| bad())?);
            }
            "column" => {
                let mut parts = value.splitn(3, ' ');
                let (Some(table), Some(name), Some(ty)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                check_data_table(table)?;
                check_identifier(name)?;
                check_type(ty)?;
                self.columns
                    .entry(table.to_owned())
                    .or_default()
                    .push((name.to_owned(), ty.to_owned()));
            }
            "sequence" => {
                let mut parts = value.split(' ');
                let (Some(table), Some(v), Some(called)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                check_data_table(table)?;
                self.sequences.insert(
                    table.to_owned(),
                    (v.parse().map_err(|_| bad())?, called == "true"),
                );
            }
            _ => {} // keys of later format versions are informative only
        }
        Ok(true)
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

pub fn corrupt(message: impl Into<String>) -> Error {
    Error::BackupCorrupt(message.into())
}

fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(80).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    format!("{t:?}")
}

pub fn check_data_table(table: &str) -> Result<()> {
    if DATA_TABLES.contains(&table) {
        Ok(())
    } else {
        Err(corrupt(format!(
            "the backup names a table job_manager does not own: {}",
            clip(table)
        )))
    }
}

/// Column names are written unquoted by PostgreSQL's catalog; we accept the safe subset.
pub fn check_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(corrupt(format!(
            "invalid column name in the backup: {}",
            clip(name)
        )))
    }
}

/// Types come from `format_type()`: letters, digits, spaces, parentheses, commas, brackets.
pub fn check_type(ty: &str) -> Result<()> {
    let ok = !ty.is_empty()
        && ty.len() < 128
        && ty
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),[].".contains(c));
    if ok {
        Ok(())
    } else {
        Err(corrupt(format!(
            "invalid column type in the backup: {}",
            clip(ty)
        )))
    }
}

/// Lines of a stream, each at most [`MAX_LINE`] bytes, with the newline kept.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::with_capacity(8192),
            max: MAX_LINE,
        }
    }

    fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The next line, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>> {
        self.buf.clear();
        loop {
            let available = self.reader.fill_buf().map_err(read_error)?;
            if available.is_empty() {
                return Ok((!self.buf.is_empty()).then_some(self.buf.as_slice()));
            }
            if let Some(i) = memchr::memchr(b'\n', available) {
                self.buf.extend_from_slice(&available[..=i]);
                self.reader.consume(i + 1);
                return Ok(Some(self.buf.as_slice()));
            }
            let n = available.len();
            self.buf.extend_from_slice(available);
            self.reader.consume(n);
            if self.buf.len() > self.max {
                return Err(corrupt(format!(
                    "a line is longer than {} bytes: not a backup, or a damaged one",
                    self.max
                )));
            }
        }
    }
}

fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            corrupt(format!("the file cannot be read as a backup: {e}"))
        }
        _ => Error::Backup(format!("reading the backup failed: {e}")),
    }
}

/// Opens a backup for reading, gunzipping it when it starts with the gzip magic.
pub fn open(path: &Path) -> Result<Lines<Box<dyn BufRead>>> {
    let file = File::open(path)
        .map_err(|e| Error::Backup(format!("cannot open backup {}: {e}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let gz = reader
        .fill_buf()
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn BufRead> = if gz {
        Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    Ok(Lines::new(inner))
}

/// What a full read of a backup found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kind: Kind,
    pub header: Header,
    /// SHA-256 of the content (our format: the value in the trailer, which matched).
    pub sha256: String,
    /// Rows per data table, as counted in the COPY blocks.
    pub rows: BTreeMap<String, u64>,
    pub compressed: bool,
}

/// A COPY block's target: `COPY jobs (...) FROM stdin;` or pg_dump's `COPY public.jobs (...)`.
pub fn copy_target(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("COPY ")?;
    let (table, rest) = rest.split_once(' ')?;
    let table = table.strip_prefix("public.").unwrap_or(table);
    let columns = rest.strip_suffix(" FROM stdin;")?;
    Some((table, columns))
}

/// Reads the whole file and checks it: header, structure, row counts and checksum (our
/// format), or completeness and COPY structure (pg_dump).
pub fn verify(path: &Path) -> Result<Verified> {
    let compressed = is_gzip(path)?;
    let mut lines = open(path)?.with_max(MAX_FIRST_LINE);
    let Some(first) = lines.next_line()? else {
        return Err(corrupt("the file is empty"));
    };
    let first = text(first)?.trim_end().to_owned();
    lines.max = MAX_LINE;
    if first == MAGIC {
        verify_ours(&mut lines, compressed)
    } else if first == "--" || first.starts_with(PG_DUMP_MAGIC) {
        verify_pg_dump(lines, &first, compressed)
    } else {
        Err(corrupt(
            "not a job_manager backup or a plain pg_dump file (wrong first line); custom-format \
             pg_dump files are restored with pg_restore",
        ))
    }
}

fn is_gzip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path)
        .map_err(|e| Error::Backup(format!("cannot open backup {}: {e}", path.display())))?;
    let n = f.read(&mut magic).map_err(read_error)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

pub fn text(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| corrupt("the file is not UTF-8 text"))
}

fn verify_ours(lines: &mut Lines<Box<dyn BufRead>>, compressed: bool) -> Result<Verified> {
    let mut hasher = Sha256::new();
    hasher.update(MAGIC.as_bytes());
    hasher.update(b"\n");
    let mut header = Header::default();
    loop {
        let Some(line) = lines.next_line()? else {
            return Err(corrupt("the file ends inside its header (truncated)"));
        };
        hasher.update(line);
        if !header.apply(text(line)?.trim_end_matches('\n'))? {
            break;
        }
    }
    if header.format_version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "backup format version {} is not supported by this job_manager (knows {FORMAT_VERSION})",
            header.format_version
        )));
    }
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_copy: Option<String> = None;
    let mut committed = false;
    let mut ended = false;
    let mut trailer: Option<String> = None;
    while let Some(line) = lines.next_line()? {
        if trailer.is_some() {
            return Err(corrupt("there is data after the checksum line"));
        }
        if let Some(table) = &in_copy {
            if line == b"\\.\n" {
                in_copy = None;
            } else {
                *rows.entry(table.clone()).or_default() += 1;
            }
            hasher.update(line);
            continue;
        }
        let s = text(line)?;
        if let Some(hex) = s.strip_prefix(TRAILER) {
            trailer = Some(hex.trim_end().to_owned());
            continue;
        }
        hasher.update(line);
        let s = s.trim_end_matches('\n');
        if let Some((table, _)) = copy_target(s) {
            check_data_table(table)?;
            rows.entry(table.to_owned()).or_default();
            in_copy = Some(table.to_owned());
        } else if s == "COMMIT;" {
            committed = true;
        } else if s == END_MARKER {
            ended = true;
        }
    }
    let Some(expected) = trailer else {
        return Err(corrupt(
            "the checksum line is missing: the file is truncated",
        ));
    };
    if in_copy.is_some() || !committed || !ended {
        return Err(corrupt(
            "the file is incomplete (a COPY block or the COMMIT is missing)",
        ));
    }
    let actual = hex::encode(hasher.finalize());
    if expected.len() != actual.len() || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(corrupt(
            "the checksum line is damaged (the file was cut short or edited)",
        ));
    }
    if actual != expected {
        return Err(corrupt(format!(
            "checksum mismatch: the file was changed or damaged (recorded {}, computed {})",
            short(&expected),
            short(&actual)
        )));
    }
    for table in DATA_TABLES {
        let counted = rows.get(table).copied().unwrap_or(0);
        let recorded = header.rows.get(table).copied().unwrap_or(0);
        if counted != recorded {
            return Err(corrupt(format!(
                "{table}: the header records {recorded} rows but the file holds {counted}"
            )));
        }
    }
    Ok(Verified {
        kind: Kind::JobManager,
        header,
        sha256: actual,
        rows,
        compressed,
    })
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn verify_pg_dump(
    mut lines: Lines<Box<dyn BufRead>>,
    first: &str,
    compressed: bool,
) -> Result<Verified> {
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update(b"\n");
    let mut seen_magic = first.starts_with(PG_DUMP_MAGIC);
    let mut last_comment = String::new();
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_copy: Option<Option<String>> = None;
    while let Some(line) = lines.next_line()? {
        hasher.update(line);
        if let Some(table) = &in_copy {
            if line == b"\\.\n" {
                in_copy = None;
            } else if let Some(t) = table {
                *rows.entry(t.clone()).or_default() += 1;
            }
            continue;
        }
        let s = text(line)?.trim_end_matches('\n');
        if s.starts_with(PG_DUMP_MAGIC) {
            seen_magic = true;
        }
        if s.starts_with("-- ") {
            s.clone_into(&mut last_comment);
        }
        if let Some((table, _)) = copy_target(s) {
            let ours = DATA_TABLES.contains(&table).then(|| table.to_owned());
            if let Some(t) = &ours {
                rows.entry(t.clone()).or_default();
            }
            in_copy = Some(ours);
        }
    }
    if !seen_magic {
        return Err(corrupt("not a job_manager backup or a plain pg_dump file"));
    }
    if in_copy.is_some() || last_comment != PG_DUMP_COMPLETE {
        return Err(corrupt(
            "the pg_dump file is incomplete (it does not end with \"-- PostgreSQL database dump \
             complete\"): the dump was cut short",
        ));
    }
    Ok(Verified {
        kind: Kind::PgDump,
        header: Header::default(),
        sha256: hex::encode(hasher.finalize()),
        rows,
        compressed,
    })
}

/// Where backup bytes go: the file, gzip-compressed or not. Hashing happens above it.
pub enum Sink {
    Plain(io::BufWriter<File>),
    Gzip(GzEncoder<io::BufWriter<File>>),
}

impl Sink {
    pub fn new(file: File, compress: bool) -> Self {
        let w = io::BufWriter::with_capacity(1 << 17, file);
        if compress {
            Sink::Gzip(GzEncoder::new(w, flate2::Compression::fast()))
        } else {
            Sink::Plain(w)
        }
    }

    /// The file underneath.
    fn file(&self) -> &File {
        match self {
            Sink::Plain(w) => w.get_ref(),
            Sink::Gzip(gz) => gz.get_ref().get_ref(),
        }
    }

    /// Flushes everything and returns the file, not yet synced.
    pub fn finish(self) -> io::Result<File> {
        let w = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(gz) => gz.finish()?,
        };
        w.into_inner().map_err(io::IntoInnerError::into_error)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
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
    writer: Option<JoinHandle<io::Result<(Sha256, Sink)>>>,
    /// Bytes written so far.
    pub bytes: u64,
}

impl HashingWriter {
    pub fn new(sink: Sink) -> io::Result<Self> {
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
                    sink.write_all(&block)?;
                    block.clear();
                    let _ = give_back.send(block);
                    written_back = start_writeback(sink.file(), written_back);
                }
                Ok((hasher, sink))
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
    fn join(&mut self) -> io::Result<(Sha256, Sink)> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the backup writer thread panicked")),
            None => Err(io::Error::other("the backup writer stopped")),
        }
    }

    /// Writes the trailer (not hashed) and returns the hex digest and the sink.
    pub fn finish(mut self) -> io::Result<(String, Sink)> {
        if !self.block.is_empty() {
            self.pass_on()?;
        }
        let (hasher, mut sink) = self.join()?;
        let digest = hex::encode(hasher.finalize());
        writeln!(sink, "{TRAILER}{digest}")?;
        Ok((digest, sink))
    }
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

    #[test]
    fn header_round_trips() {
        let mut h = Header {
            format_version: 1,
            created_at: Some(
                DateTime::parse_from_rfc3339("2026-11-24T01:03:29.587449Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            server_version: "15.20 (Debian)\nsecond line".into(),
            job_manager_version: "0.1.0".into(),
            schema_version: 3,
            ..Header::default()
        };
        h.rows.insert("jobs".into(), 42);
        h.columns
            .entry("jobs".into())
            .or_default()
            .push(("submitted_at".into(), "timestamp without time zone".into()));
        h.sequences.insert("jobs".into(), (42, true));
        let mut out = Vec::new();
        h.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(MAGIC));
        let mut parsed = Header::default();
        for line in lines {
            if !parsed.apply(line).unwrap() {
                break;
            }
        }
        h.server_version = "15.20 (Debian) second line".into();
        assert_eq!(parsed, h);
    }

    #[test]
    fn hostile_header_values_are_refused() {
        let mut h = Header::default();
        assert!(h.apply("-- column: pg_authid rolpassword text").is_err());
        assert!(h.apply("-- column: jobs x;DROP text").is_err());
        assert!(h.apply("-- column: jobs x text; DROP TABLE jobs").is_err());
        assert!(h.apply("-- sequence: dag 1 true").is_err());
        assert!(h.apply("-- rows: jobs many").is_err());
        assert!(h.apply("COPY jobs").is_err());
    }

    #[test]
    fn copy_targets() {
        assert_eq!(
            copy_target("COPY public.jobs (id, prompt_text) FROM stdin;"),
            Some(("jobs", "(id, prompt_text)"))
        );
        assert_eq!(
            copy_target("COPY jobs (\"id\") FROM stdin;"),
            Some(("jobs", "(\"id\")"))
        );
        assert_eq!(copy_target("COPY jobs TO stdout;"), None);
    }

    #[test]
    fn hashing_writer_hashes_and_writes_every_block_in_order() {
        let dir = std::env::temp_dir().join(format!("jm-hw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        let mut w = HashingWriter::new(Sink::new(File::create(&path).unwrap(), false)).unwrap();
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
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[..data.len()], &data[..]);
        assert_eq!(
            &written[data.len()..],
            format!("{TRAILER}{digest}\n").as_bytes()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let zeros = io::repeat(0).take(MAX_LINE as u64 + 10);
        let mut lines = Lines::new(BufReader::new(zeros));
        assert!(matches!(lines.next_line(), Err(Error::BackupCorrupt(_))));
    }
}
