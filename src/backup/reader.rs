//! One reader for backup files: it parses, checks and hashes in a single pass, and both
//! `verify` and `restore` consume it, so what a restore loads is exactly what was checked.
//!
//! * [`BackupFile::open`] opens the path once and refuses anything but a regular file (a FIFO,
//!   a device or a directory) before reading a byte; every later pass reads that descriptor.
//! * [`Reader::next_event`] yields the COPY blocks of the owned tables as [`Event`]s. In our own
//!   format every other line must be exactly the line job_manager writes at that point
//!   (`format.rs`); in a plain pg_dump only the owned tables' `CREATE TABLE`, `COPY` and
//!   `setval` lines are read, strictly, and everything else is skipped, never executed.
//! * Memory stays flat: lines are read one at a time, each at most [`MAX_LINE`] bytes.
//!
//! Errors name the line number and never quote more than a few characters of the file.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::format::{
    self, add_columns_sql, copy_columns, corrupt, pinned_settings_sql, setval_sql, Column,
    Compression, Header, Kind, DATA_TABLES, END_MARKER, HISTORY_DDL, HISTORY_TABLE, HMAC_TRAILER,
    MAGIC, TRAILER, TRUNCATE_SQL, TRUNCATE_SQL_V1,
};
use super::grammar::{
    self, CsvRecord, Guess, Ident, InsertCursor, Quote, Refusal, SqlScan, SqlType,
};
use super::key::{self, HmacSha256, Key};
use crate::errors::{Error, Result};
use crate::schema::MIGRATIONS;

/// The longest line accepted (a COPY row holds one job; prompts are far smaller).
pub const MAX_LINE: usize = 64 * 1024 * 1024;
/// The longest first line: the magic line is short, so a huge binary file is refused at once.
const MAX_FIRST_LINE: usize = 4096;
const PG_DUMP_MAGIC: &str = "-- PostgreSQL database dump";
const PG_DUMP_COMPLETE: &str = "-- PostgreSQL database dump complete";

/// A backup file opened once. Every pass reads this descriptor, never the path again.
pub struct BackupFile {
    file: File,
    path: PathBuf,
    pub size: u64,
    pub compression: Compression,
}

impl BackupFile {
    /// Opens `path` without blocking (a FIFO would block an ordinary open) and refuses
    /// anything that is not a regular file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).expect("O_NONBLOCK fits"),
            )
            .open(path)
            .map_err(|e| Error::Backup(format!("cannot open backup {}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::Backup(format!("cannot stat {}: {e}", path.display())))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a FIFO, socket or device)"
            };
            return Err(corrupt(format!(
                "{} is {what}: a backup is a regular file",
                path.display()
            )));
        }
        let mut magic = [0u8; 4];
        let n = read_up_to(&file, &mut magic)?;
        Ok(BackupFile {
            file,
            path: path.to_path_buf(),
            size: meta.len(),
            compression: Compression::of_magic(&magic[..n]),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader from the first byte of the file. `auth` says whether a key is configured
    /// and whether an unsigned file is acceptable.
    pub fn reader(&self, auth: &Auth) -> Result<Reader> {
        let mut file = self
            .file
            .try_clone()
            .map_err(|e| Error::Backup(format!("cannot read {}: {e}", self.path.display())))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::Backup(format!("cannot read {}: {e}", self.path.display())))?;
        let raw = BufReader::with_capacity(1 << 16, file);
        let inner = self
            .compression
            .decoder(raw)
            .map_err(|e| Error::Backup(format!("cannot read {}: {e}", self.path.display())))?;
        Reader::new(Lines::new(inner), auth, self.compression)
    }

    /// A reader for the load that follows a verify of this same descriptor: every line is
    /// parsed and hashed as in the verify, but COPY rows are not checked again. Their bytes
    /// are the ones verified, or the digest differs and the load is refused before COMMIT
    /// (`restore::check_same_file`).
    pub fn reader_for_load(&self, auth: &Auth) -> Result<Reader> {
        let mut r = self.reader(auth)?;
        r.rows_checked = false;
        Ok(r)
    }

    /// Reads the whole file and checks it.
    pub fn verify(&self, auth: &Auth) -> Result<Verified> {
        let mut r = self.reader(auth)?;
        while !matches!(r.next_event()?, Event::End) {}
        r.finish()
    }
}

fn read_up_to(mut f: &File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(&e)),
        }
    }
    Ok(n)
}

/// What the reader requires of a file's signature.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub key: Option<Key>,
    /// With a key: accept a file that carries no HMAC (an operator's explicit choice).
    pub allow_unsigned: bool,
}

impl Auth {
    /// The key from the environment, unsigned files refused when there is one.
    pub fn from_env() -> Result<Self> {
        Ok(Auth {
            key: Key::from_env()?,
            allow_unsigned: false,
        })
    }
}

/// What a full read of a backup found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kind: Kind,
    /// Our format's header (empty for pg_dump files).
    pub header: Header,
    /// SHA-256 of the content (our format: everything above the checksum line).
    pub sha256: String,
    /// Rows per data table, as counted in the COPY blocks.
    pub rows: BTreeMap<String, u64>,
    pub compression: Compression,
    /// The file carries an HMAC line.
    pub signed: bool,
    /// The HMAC was checked against the configured key and matched.
    pub authenticated: bool,
    /// pg_dump files without a `CREATE TABLE` for a table (data-only dumps): the type each
    /// such column's values fit, for a restore that must add the column.
    pub inferred: BTreeMap<String, Vec<Column>>,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A COPY block of an owned table starts; its rows follow as [`Event::Row`].
    Copy {
        table: &'static str,
        columns: Vec<Ident>,
    },
    /// One COPY row, checked: [`Reader::row`] holds it, with its newline.
    Row,
    /// The COPY block ended.
    CopyEnd,
    /// The whole file was read and checked; [`Reader::finish`] gives the result.
    End,
}

/// Lines of a stream, each at most `max` bytes and ending with a newline, numbered from 1.
struct Lines {
    reader: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    max: usize,
    number: u64,
}

impl Lines {
    fn new(reader: Box<dyn BufRead + Send>) -> Self {
        Lines {
            reader,
            buf: Vec::with_capacity(8192),
            max: MAX_FIRST_LINE,
            number: 0,
        }
    }

    /// The next line with its newline, or `None` at the end of the stream.
    fn next_line(&mut self) -> Result<Option<&[u8]>> {
        self.buf.clear();
        loop {
            let available = self.reader.fill_buf().map_err(|e| read_error(&e))?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(corrupt(format!(
                    "the file ends in the middle of line {} (truncated)",
                    self.number + 1
                )));
            }
            if let Some(i) = memchr::memchr(b'\n', available) {
                if self.buf.len() + i >= self.max {
                    return Err(self.too_long());
                }
                self.buf.extend_from_slice(&available[..=i]);
                self.reader.consume(i + 1);
                self.number += 1;
                return Ok(Some(self.buf.as_slice()));
            }
            let n = available.len();
            self.buf.extend_from_slice(available);
            self.reader.consume(n);
            if self.buf.len() > self.max {
                return Err(self.too_long());
            }
        }
    }

    fn too_long(&self) -> Error {
        corrupt(format!(
            "line {} is longer than {} bytes: not a backup, or a damaged one",
            self.number + 1,
            self.max
        ))
    }
}

fn read_error(e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            corrupt(format!("the file cannot be read as a backup: {e}"))
        }
        _ => Error::Backup(format!("reading the backup failed: {e}")),
    }
}

/// The reader of either kind of file, with what both share: lines, hashing, signature.
pub struct Reader {
    lines: Lines,
    /// The current line was looked at but not consumed: the next fetch returns it again.
    pending: bool,
    hasher: Sha256,
    mac: Option<HmacSha256>,
    auth: Auth,
    compression: Compression,
    /// Rows counted per owned table.
    rows: BTreeMap<String, u64>,
    /// The open COPY block: table, number of columns, rows so far.
    copy: Option<(&'static str, usize)>,
    format: Format,
    /// The current row when it was made from an INSERT statement or a CSV record, not read
    /// as a COPY line.
    converted_row: Option<Vec<u8>>,
    /// The file's HMAC matched the configured key.
    authenticated: bool,
    /// COPY rows are checked (false only in a load after a verify of the same descriptor).
    rows_checked: bool,
    ended: Option<Verified>,
}

enum Format {
    Ours(Box<Ours>),
    PgDump(Box<PgDump>),
    Csv(Box<Csv>),
}

/// State of a CSV export of jobs: the header's columns, then records.
struct Csv {
    columns: Vec<Ident>,
    record: CsvRecord,
    /// Bytes of the record being read (a quoted field may span lines).
    record_bytes: usize,
    started: bool,
    copy_ended: bool,
}

/// What a pg_dump INSERT statement turns into, waiting to be handed out.
enum Pending {
    Copy(&'static str, Vec<Ident>),
    Row(&'static str, Vec<u8>),
    CopyEnd,
}

/// An owned table's INSERT statement whose rows are being handed out, one parsed at a time.
struct Inserting {
    table: &'static str,
    columns: usize,
    text: String,
    cursor: InsertCursor,
}

/// An INSERT statement being read (its strings may span lines).
struct Statement {
    /// The text, kept only for the owned tables.
    text: Option<String>,
    quote: Quote,
}

/// State of a job_manager file: the header, then the lines expected after it.
#[derive(Default)]
struct Ours {
    header: Header,
    steps: VecDeque<Step>,
    /// The rest of the migration whose text is being read.
    migration_text: VecDeque<&'static str>,
    migrations: Vec<i32>,
    history: Vec<i32>,
    sha256: Option<String>,
    signed: bool,
}

enum Step {
    /// This exact line.
    Line(String),
    /// Zero or more migrations, each as its label line and its exact text.
    Migrations,
    /// `COPY table (...) FROM stdin;`, its rows and `\.`.
    Copy(&'static str),
    /// This many schema history rows.
    History(u64),
    /// The checksum line, then an optional HMAC line, then the end of the file.
    Trailer,
}

/// A column of a `CREATE TABLE` in a pg_dump: its name and its type, or why the type is not
/// one a restore can recreate (an error only if the restore needs the column).
type Definition = (Ident, std::result::Result<SqlType, Refusal>);

/// State of a plain pg_dump: only what it says about the owned tables is read. (Its flags
/// are independent facts about the dump read so far.)
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)]
struct PgDump {
    /// The COPY data of a table we do not own is being skipped.
    skipping: bool,
    /// The INSERT statement being read.
    statement: Option<Statement>,
    /// The owned table (and columns) whose INSERT statements are being handed out as one
    /// block of rows.
    group: Option<(&'static str, Vec<Ident>)>,
    pending: VecDeque<Pending>,
    /// The INSERT statement whose rows are being handed out.
    inserting: Option<Inserting>,
    /// The dump said `SET standard_conforming_strings = off;`.
    std_strings_off: bool,
    /// Strings and dollar-quoted bodies of the dump's other statements.
    scan: SqlScan,
    /// Columns of the open block that the dump gives no type for: (position in the row,
    /// position in the table's guesses).
    untyped: Vec<(usize, usize)>,
    /// What the values of such columns look like, per table.
    guesses: BTreeMap<&'static str, Vec<(Ident, Guess)>>,
    seen_magic: bool,
    /// The last `-- ` comment line was pg_dump's "complete" marker.
    complete: bool,
    creating: Option<&'static str>,
    definitions: BTreeMap<&'static str, Vec<Definition>>,
    sequences: BTreeMap<&'static str, i64>,
}

impl Reader {
    fn new(mut lines: Lines, auth: &Auth, compression: Compression) -> Result<Self> {
        let Some(first) = lines.next_line()? else {
            return Err(corrupt("the file is empty"));
        };
        let first_line = first.to_vec();
        let first = std::str::from_utf8(&first_line)
            .map_err(|_| corrupt("line 1 is not UTF-8 text: not a backup"))?
            .trim_end_matches('\n');
        lines.max = MAX_LINE;
        let format = if first == MAGIC {
            Format::Ours(Box::default())
        } else if first == "--" || first.starts_with(PG_DUMP_MAGIC) {
            Format::PgDump(Box::new(PgDump {
                seen_magic: first.starts_with(PG_DUMP_MAGIC),
                ..PgDump::default()
            }))
        } else if let Some(columns) = csv_header(&first_line) {
            Format::Csv(Box::new(Csv {
                columns,
                record: CsvRecord::default(),
                record_bytes: 0,
                started: false,
                copy_ended: false,
            }))
        } else {
            return Err(corrupt(
                "not a job_manager backup, a plain pg_dump file or a CSV of jobs with a header \
                 row naming prompt_text (wrong first line); custom-format pg_dump files are \
                 restored with pg_restore",
            ));
        };
        let mut hasher = Sha256::new();
        hasher.update(&first_line);
        let mut mac = auth.key.as_ref().map(Key::mac);
        if let Some(mac) = &mut mac {
            mac.update(&first_line);
        }
        let mut r = Reader {
            lines,
            pending: false,
            hasher,
            mac,
            auth: auth.clone(),
            compression,
            rows: BTreeMap::new(),
            copy: None,
            format,
            converted_row: None,
            authenticated: false,
            rows_checked: true,
            ended: None,
        };
        if matches!(r.format, Format::Ours(_)) {
            r.read_header()?;
        }
        Ok(r)
    }

    /// The kind of file being read.
    pub fn kind(&self) -> Kind {
        match self.format {
            Format::Ours(_) => Kind::JobManager,
            Format::PgDump(_) => Kind::PgDump,
            Format::Csv(_) => Kind::Csv,
        }
    }

    /// Our format's header (read when the reader was made); empty for pg_dump files.
    pub fn header(&self) -> Option<&Header> {
        match &self.format {
            Format::Ours(o) => Some(&o.header),
            Format::PgDump(_) | Format::Csv(_) => None,
        }
    }

    /// The current COPY row with its newline (after [`Event::Row`]).
    pub fn row(&self) -> &[u8] {
        self.converted_row.as_deref().unwrap_or(&self.lines.buf)
    }

    /// pg_dump files: the type the dump's `CREATE TABLE` gives a column of an owned table.
    pub fn dump_column_type(&self, table: &str, column: &Ident) -> Result<SqlType> {
        let Format::PgDump(d) = &self.format else {
            return Err(corrupt(format!(
                "the file has a column {} that {table} does not have, and says nothing of its \
                 type: add the column to the table first (ALTER TABLE {table} ADD COLUMN ...) or \
                 remove it from the file",
                column.quoted()
            )));
        };
        let found = d
            .definitions
            .get(table)
            .and_then(|defs| defs.iter().find(|(n, _)| n == column));
        match found {
            Some((_, Ok(t))) => Ok(t.clone()),
            Some((_, Err(why))) => Err(corrupt(format!("{table}.{}: {why}", column.quoted()))),
            None => Err(corrupt(format!(
                "{table}.{} is in the data but its type is not in the dump",
                column.quoted()
            ))),
        }
    }

    /// pg_dump files: the `setval` of each owned table's id sequence.
    pub fn dump_sequences(&self) -> BTreeMap<&'static str, i64> {
        match &self.format {
            Format::PgDump(d) => d.sequences.clone(),
            Format::Ours(_) | Format::Csv(_) => BTreeMap::new(),
        }
    }

    /// Reads the next line, hashing it; `None` at the end of the file.
    fn fetch(&mut self, hash: bool) -> Result<Option<&[u8]>> {
        if self.pending {
            self.pending = false;
            return Ok(Some(&self.lines.buf));
        }
        let Some(line) = self.lines.next_line()? else {
            return Ok(None);
        };
        if hash {
            self.hasher.update(line);
            if let Some(mac) = &mut self.mac {
                mac.update(line);
            }
        }
        Ok(Some(line))
    }

    /// The current line as text, without its newline.
    fn text(&self) -> Result<&str> {
        let line = self
            .lines
            .buf
            .strip_suffix(b"\n")
            .unwrap_or(&self.lines.buf);
        let s = std::str::from_utf8(line)
            .map_err(|_| self.refuse("the line is not UTF-8 text".into()))?;
        if s.contains('\0') {
            return Err(self.refuse("a NUL byte".into()));
        }
        Ok(s)
    }

    fn refuse(&self, why: Refusal) -> Error {
        corrupt(format!("line {}: {why}", self.lines.number))
    }

    fn truncated(&self, before: &str) -> Error {
        corrupt(format!(
            "the file ends after line {}, before {before}: it is truncated",
            self.lines.number
        ))
    }

    /// The next event. After [`Event::End`], call [`Reader::finish`].
    pub fn next_event(&mut self) -> Result<Event> {
        if self.ended.is_some() {
            return Ok(Event::End);
        }
        if let Some((table, columns)) = self.copy {
            return self.copy_line(table, columns);
        }
        match self.format {
            Format::Ours(_) => self.next_ours(),
            Format::PgDump(_) => self.next_pg_dump(),
            Format::Csv(_) => self.next_csv(),
        }
    }

    /// A line inside a COPY block of an owned table.
    fn copy_line(&mut self, table: &'static str, columns: usize) -> Result<Event> {
        let rows_checked = self.rows_checked;
        let Some(line) = self.fetch(true)? else {
            return Err(self.truncated(&format!("the end of the COPY block of {table}")));
        };
        if line == b"\\.\n" {
            self.copy = None;
            return Ok(Event::CopyEnd);
        }
        let data = &line[..line.len() - 1];
        if rows_checked {
            let checked = grammar::check_copy_row(data, columns).and_then(|()| {
                std::str::from_utf8(data)
                    .map(drop)
                    .map_err(|_| "COPY data that is not UTF-8".to_owned())
            });
            checked.map_err(|why| self.refuse(why))?;
        }
        self.converted_row = None;
        self.observe(table);
        *self.rows.entry(table.to_owned()).or_default() += 1;
        Ok(Event::Row)
    }

    /// Makes the whole result once [`Event::End`] was returned.
    pub fn finish(mut self) -> Result<Verified> {
        if self.ended.is_none() {
            while !matches!(self.next_event()?, Event::End) {}
        }
        Ok(self.ended.take().expect("set at Event::End"))
    }

    fn ours(&mut self) -> &mut Ours {
        match &mut self.format {
            Format::Ours(o) => o,
            _ => unreachable!("only called for our format"),
        }
    }

    fn read_header(&mut self) -> Result<()> {
        let mut header = Header::default();
        let mut text = format!("{MAGIC}\n");
        loop {
            if self.fetch(true)?.is_none() {
                return Err(self.truncated("the end of the header"));
            }
            let line = self.text()?.to_owned();
            text.push_str(&line);
            text.push('\n');
            let more = header.apply(&line).map_err(|why| self.refuse(why))?;
            if header.format_version == 0 {
                return Err(self.refuse("the header must start with the format version".into()));
            }
            if header.format_version > format::FORMAT_VERSION {
                return Err(corrupt(format!(
                    "backup format version {} is newer than this job_manager reads (up to {}); \
                     upgrade job_manager",
                    header.format_version,
                    format::FORMAT_VERSION
                )));
            }
            if !more {
                break;
            }
        }
        header.check_complete().map_err(|why| self.refuse(why))?;
        if header.render() != text {
            return Err(self.refuse(
                "the header is not one job_manager writes (a line is out of order, repeated, \
                 or not in its written form)"
                    .into(),
            ));
        }
        let mut steps = VecDeque::new();
        steps.push_back(Step::Line("BEGIN;".into()));
        steps.push_back(Step::Line(
            "SET LOCAL client_min_messages = warning;".into(),
        ));
        if header.format_version >= 2 {
            for line in pinned_settings_sql().lines() {
                steps.push_back(Step::Line(line.to_owned()));
            }
        }
        steps.push_back(Step::Migrations);
        steps.push_back(Step::Line(HISTORY_DDL.into()));
        for (table, columns) in &header.columns {
            steps.push_back(Step::Line(add_columns_sql(table, columns)));
        }
        steps.push_back(Step::Line("-- data".into()));
        steps.push_back(Step::Line(
            if header.format_version >= 2 {
                TRUNCATE_SQL
            } else {
                TRUNCATE_SQL_V1
            }
            .into(),
        ));
        for table in DATA_TABLES {
            steps.push_back(Step::Copy(table));
        }
        steps.push_back(Step::History(header.rows[HISTORY_TABLE]));
        for (table, (value, called)) in &header.sequences {
            steps.push_back(Step::Line(setval_sql(table, *value, *called)));
        }
        steps.push_back(Step::Line("COMMIT;".into()));
        steps.push_back(Step::Line(END_MARKER.into()));
        steps.push_back(Step::Trailer);
        self.format = Format::Ours(Box::new(Ours {
            header,
            steps,
            migration_text: VecDeque::new(),
            migrations: Vec::new(),
            history: Vec::new(),
            sha256: None,
            signed: false,
        }));
        Ok(())
    }

    /// Why a line is not the one expected, in words that do not repeat the file.
    fn unexpected(&self, expected: &str) -> Error {
        let starts_with_backslash = self.lines.buf.first() == Some(&b'\\');
        if starts_with_backslash {
            self.refuse(format!(
                "a line starting with a backslash (a psql meta-command) outside COPY data; \
                 expected {expected}"
            ))
        } else {
            self.refuse(format!(
                "not a line job_manager writes here; expected {expected}"
            ))
        }
    }

    fn next_ours(&mut self) -> Result<Event> {
        loop {
            if let Some(expected) = self.ours().migration_text.pop_front() {
                if self.fetch(true)?.is_none() {
                    return Err(self.truncated("the end of a migration"));
                }
                if self.text()? != expected {
                    return Err(self.unexpected("the text of the migration named above it"));
                }
                continue;
            }
            let Some(step) = self.ours().steps.pop_front() else {
                return self.end_ours();
            };
            match step {
                Step::Line(expected) => {
                    if self.fetch(true)?.is_none() {
                        return Err(self.truncated(&grammar::clip(&expected)));
                    }
                    if self.text()? != expected {
                        return Err(self.unexpected(&grammar::clip(&expected)));
                    }
                }
                Step::Migrations => {
                    if self.fetch(true)?.is_none() {
                        return Err(self.truncated("the schema"));
                    }
                    let line = self.text()?;
                    let Some(label) = line.strip_prefix("-- schema: migration ") else {
                        // Not a migration: the next step reads this line again.
                        self.pending = true;
                        continue;
                    };
                    let m = MIGRATIONS.iter().find(|m| m.label() == label);
                    let last = self.ours().migrations.last().copied().unwrap_or(0);
                    let Some(m) = m.filter(|m| m.version > last) else {
                        return Err(self.refuse(
                            "a migration this job_manager does not embed, or out of order (a \
                             backup of a newer job_manager?)"
                                .into(),
                        ));
                    };
                    let o = self.ours();
                    o.migrations.push(m.version);
                    o.migration_text.extend(m.sql.trim_end().split('\n'));
                    o.steps.push_front(Step::Migrations);
                }
                Step::Copy(table) => {
                    let columns = self.ours().header.columns[table].clone();
                    let names: Vec<Ident> = columns.into_iter().map(|(n, _)| n).collect();
                    let expected = format!("COPY {table} {} FROM stdin;", copy_columns(&names));
                    if self.fetch(true)?.is_none() {
                        return Err(self.truncated(&format!("the COPY block of {table}")));
                    }
                    if self.text()? != expected {
                        return Err(self.unexpected(&format!("the COPY block of {table}")));
                    }
                    self.rows.insert(table.to_owned(), 0);
                    self.copy = Some((table, names.len()));
                    return Ok(Event::Copy {
                        table,
                        columns: names,
                    });
                }
                Step::History(n) => {
                    for _ in 0..n {
                        if self.fetch(true)?.is_none() {
                            return Err(self.truncated("the schema history rows"));
                        }
                        let version = format::parse_history_insert(self.text()?)
                            .map_err(|why| self.refuse(why))?;
                        let o = self.ours();
                        if o.history.last().is_some_and(|v| *v >= version) {
                            return Err(self.refuse("schema history rows out of order".into()));
                        }
                        o.history.push(version);
                    }
                    let o = self.ours();
                    if o.history != o.migrations
                        || o.header.schema_version != o.history.last().copied().unwrap_or(0)
                    {
                        return Err(self.refuse(
                            "the schema history does not match the migrations in the file".into(),
                        ));
                    }
                }
                Step::Trailer => self.read_trailer()?,
            }
        }
    }

    fn read_trailer(&mut self) -> Result<()> {
        if self.fetch(false)?.is_none() {
            return Err(self.truncated("the checksum line"));
        }
        let hex = self
            .text()?
            .strip_prefix(TRAILER)
            .filter(|h| is_hex_digest(h))
            .map(str::to_owned)
            .ok_or_else(|| self.unexpected("the checksum line"))?;
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if actual != hex {
            return Err(corrupt(format!(
                "checksum mismatch: the file was changed or damaged (recorded {}, computed {})",
                &hex[..12],
                &actual[..12]
            )));
        }
        self.ours().sha256 = Some(actual);
        if self.fetch(false)?.is_none() {
            return Ok(());
        }
        let tag = self
            .text()?
            .strip_prefix(HMAC_TRAILER)
            .filter(|h| is_hex_digest(h))
            .map(str::to_owned)
            .ok_or_else(|| self.unexpected("the end of the file or the HMAC line"))?;
        if self.fetch(false)?.is_some() {
            return Err(self.refuse("data after the last line of the backup".into()));
        }
        self.ours().signed = true;
        if let Some(mac) = self.mac.take() {
            if !key::matches(mac, &tag) {
                return Err(corrupt(
                    "the backup's HMAC does not match the configured backup key: it was \
                     written with another key, or edited by someone who does not hold the key",
                ));
            }
            self.authenticated = true;
        }
        Ok(())
    }

    fn end_ours(&mut self) -> Result<Event> {
        let authenticated = self.authenticated;
        let o = self.ours();
        let (header, sha256, signed) = (o.header.clone(), o.sha256.take(), o.signed);
        for table in DATA_TABLES {
            let counted = self.rows.get(table).copied().unwrap_or(0);
            let recorded = header.rows.get(table).copied().unwrap_or(0);
            if counted != recorded {
                return Err(corrupt(format!(
                    "{table}: the header records {recorded} rows but the file holds {counted}"
                )));
            }
        }
        self.check_signature(signed, authenticated)?;
        self.ended = Some(Verified {
            kind: Kind::JobManager,
            header,
            sha256: sha256.expect("the trailer step ran"),
            rows: std::mem::take(&mut self.rows),
            compression: self.compression,
            signed,
            authenticated,
            inferred: BTreeMap::new(),
        });
        Ok(Event::End)
    }

    /// With a key configured, an unsigned file is refused unless the caller allowed it.
    fn check_signature(&self, signed: bool, authenticated: bool) -> Result<()> {
        let accepted = authenticated || (self.auth.allow_unsigned && !signed);
        if self.auth.key.is_some() && !accepted {
            return Err(corrupt(
                "the file carries no HMAC, and a backup key is configured \
                 (JOB_MANAGER_BACKUP_KEY): only signed backups are accepted; restore a file you \
                 trust with allow_unsigned (CLI: --allow-unsigned)",
            ));
        }
        Ok(())
    }

    fn pg(&mut self) -> &mut PgDump {
        match &mut self.format {
            Format::PgDump(d) => d,
            _ => unreachable!("only called for pg_dump files"),
        }
    }

    /// A block of rows of an owned table starts: remember its columns that the dump gives no
    /// type for, to guess their types from the values.
    fn start_block(&mut self, table: &'static str, columns: &[Ident]) {
        if let Format::PgDump(d) = &mut self.format {
            let defined = d.definitions.get(table);
            let guesses = d.guesses.entry(table).or_default();
            d.untyped.clear();
            for (i, c) in columns.iter().enumerate() {
                if defined.is_some_and(|defs| defs.iter().any(|(n, _)| n == c)) {
                    continue;
                }
                let slot = guesses.iter().position(|(n, _)| n == c).unwrap_or_else(|| {
                    guesses.push((c.clone(), Guess::Null));
                    guesses.len() - 1
                });
                d.untyped.push((i, slot));
            }
        }
    }

    /// Updates the guesses with one checked row: linear in the row's length, and a column
    /// already known to be text is not looked at again.
    fn observe(&mut self, table: &'static str) {
        let Format::PgDump(d) = &mut self.format else {
            return;
        };
        if d.untyped.is_empty() {
            return;
        }
        let row = self.converted_row.as_deref().unwrap_or(&self.lines.buf);
        let row = row.strip_suffix(b"\n").unwrap_or(row);
        let guesses = d.guesses.entry(table).or_default();
        let mut wanted = d.untyped.iter().peekable();
        for (i, field) in row.split(|b| *b == b'\t').enumerate() {
            let Some((_, slot)) = wanted.next_if(|(at, _)| *at == i) else {
                if wanted.peek().is_none() {
                    break;
                }
                continue;
            };
            let guess = &mut guesses[*slot].1;
            if *guess != Guess::Text {
                *guess = guess.and(Guess::of(field));
            }
        }
    }

    fn inferred(&self) -> BTreeMap<String, Vec<Column>> {
        let Format::PgDump(d) = &self.format else {
            return BTreeMap::new();
        };
        d.guesses
            .iter()
            .map(|(table, cols)| {
                let cols = cols
                    .iter()
                    .map(|(n, g)| (n.clone(), g.sql_type()))
                    .collect();
                ((*table).to_owned(), cols)
            })
            .collect()
    }

    /// Hands out what an INSERT statement turned into.
    fn hand_out(&mut self, pending: Pending) -> Result<Event> {
        match pending {
            Pending::Copy(table, columns) => {
                if self.rows.contains_key(table) {
                    return Err(self.refuse(format!("a second block of rows for {table}")));
                }
                self.rows.insert(table.to_owned(), 0);
                self.start_block(table, &columns);
                Ok(Event::Copy { table, columns })
            }
            Pending::Row(table, row) => {
                *self.rows.entry(table.to_owned()).or_default() += 1;
                self.converted_row = Some(row);
                self.observe(table);
                Ok(Event::Row)
            }
            Pending::CopyEnd => Ok(Event::CopyEnd),
        }
    }

    /// One more line of an INSERT statement; at its end, the rows of an owned table's
    /// statement are parsed (never executed) and queued.
    fn statement_line(&mut self) -> Result<()> {
        let line = self.text()?.to_owned();
        let Some(mut st) = self.pg().statement.take() else {
            return Ok(());
        };
        let std_strings = !self.pg().std_strings_off;
        let ended = grammar::scan_statement_line(&line, &mut st.quote, std_strings);
        if let Some(text) = &mut st.text {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&line);
            if text.len() > MAX_LINE {
                return Err(self.refuse(format!(
                    "an INSERT statement longer than {MAX_LINE} bytes; export with fewer \
                     --rows-per-insert"
                )));
            }
        }
        if !ended {
            self.pg().statement = Some(st);
            return Ok(());
        }
        let Some(text) = st.text else {
            return Ok(());
        };
        let (table, columns, values) = self.parse_insert(&text).map_err(|why| self.refuse(why))?;
        let d = self.pg();
        if d.group.as_ref() != Some(&(table, columns.clone())) {
            if d.group.is_some() {
                d.pending.push_back(Pending::CopyEnd);
            }
            d.pending.push_back(Pending::Copy(table, columns.clone()));
            d.group = Some((table, columns.clone()));
        }
        let cursor = InsertCursor::new(values, !d.std_strings_off);
        d.inserting = Some(Inserting {
            table,
            columns: columns.len(),
            text,
            cursor,
        });
        Ok(())
    }

    /// The next row of the INSERT statement being handed out, parsed now.
    fn next_inserted_row(&mut self) -> Result<Option<Event>> {
        let Some(mut ins) = self.pg().inserting.take() else {
            return Ok(None);
        };
        let row = grammar::next_insert_row(&ins.text, &mut ins.cursor, ins.columns)
            .map_err(|why| self.refuse(why))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let table = ins.table;
        self.pg().inserting = Some(ins);
        self.hand_out(Pending::Row(table, row)).map(Some)
    }

    /// `INSERT INTO public.jobs [(columns)] VALUES (...)[, (...)];` of an owned table: the
    /// table, its columns and where the rows start in `text`.
    fn parse_insert(
        &mut self,
        text: &str,
    ) -> std::result::Result<(&'static str, Vec<Ident>, usize), Refusal> {
        let bad = || "not an INSERT statement pg_dump writes".to_owned();
        let rest = text.strip_prefix("INSERT INTO public.").ok_or_else(bad)?;
        let (name, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let table = owned(name).ok_or_else(bad)?;
        let (columns, rest) = if rest.starts_with('(') {
            let (columns, rest) = parse_column_list(rest)?;
            (columns, rest.strip_prefix(' ').ok_or_else(bad)?)
        } else {
            let defs = self.pg().definitions.get(table).ok_or_else(|| {
                format!(
                    "an INSERT into {table} without column names, in a dump without its \
                     CREATE TABLE: export with --column-inserts"
                )
            })?;
            (defs.iter().map(|(n, _)| n.clone()).collect(), rest)
        };
        let values = rest.strip_prefix("VALUES").ok_or_else(bad)?;
        Ok((table, columns, text.len() - values.len()))
    }

    fn next_pg_dump(&mut self) -> Result<Event> {
        loop {
            if let Some(pending) = self.pg().pending.pop_front() {
                return self.hand_out(pending);
            }
            if let Some(event) = self.next_inserted_row()? {
                return Ok(event);
            }
            if self.fetch(true)?.is_none() {
                if self.pg().statement.is_some() {
                    return Err(self.truncated("the end of an INSERT statement"));
                }
                if self.pg().group.take().is_some() {
                    return Ok(Event::CopyEnd);
                }
                return self.end_pg_dump();
            }
            if self.pg().skipping {
                let ended = self.lines.buf == b"\\.\n";
                self.pg().skipping = !ended;
                continue;
            }
            if self.pg().statement.is_some() {
                self.statement_line()?;
                continue;
            }
            let line = self.text()?.to_owned();
            if self.pg().scan.inside() {
                // Inside a string or a function's body: nothing here is a statement of ours.
                let std_strings = !self.pg().std_strings_off;
                self.pg().scan.feed(&line, std_strings);
                continue;
            }
            if let Some(rest) = line.strip_prefix("INSERT INTO ") {
                let ours = rest
                    .strip_prefix("public.")
                    .and_then(|r| r.split_once(' '))
                    .and_then(|(t, _)| owned(t))
                    .is_some();
                self.pg().statement = Some(Statement {
                    text: ours.then(String::new),
                    quote: Quote::Outside,
                });
                self.statement_line()?;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if self.pg().group.take().is_some() {
                // This line ends a block of INSERT rows: read it again after the block's end.
                self.pending = true;
                return Ok(Event::CopyEnd);
            }
            if let Some(event) = self.dump_line(&line)? {
                return Ok(event);
            }
        }
    }

    /// A line of a pg_dump outside COPY data and INSERT statements: only the owned tables'
    /// `CREATE TABLE`, `setval` and `COPY` lines mean anything; the rest is skipped.
    fn dump_line(&mut self, line: &str) -> Result<Option<Event>> {
        if let Some(table) = self.pg().creating {
            // `);`, or `)` followed by `WITH (...)` storage parameters.
            if line.starts_with(')') {
                self.pg().creating = None;
            } else if let Some(def) = column_definition(line) {
                let defs = self.pg().definitions.entry(table).or_default();
                defs.push(def);
                if defs.len() > grammar::MAX_COLUMNS {
                    return Err(self.refuse(format!(
                        "{table} has more than {} columns",
                        grammar::MAX_COLUMNS
                    )));
                }
            }
            return Ok(None);
        }
        if line == "--" {
            return Ok(None);
        }
        if line.starts_with("-- ") {
            // The last comment with text must be pg_dump's closing one.
            let d = self.pg();
            d.seen_magic |= line.starts_with(PG_DUMP_MAGIC);
            d.complete = line == PG_DUMP_COMPLETE;
            return Ok(None);
        }
        if let Some(t) = line
            .strip_prefix("CREATE TABLE public.")
            .and_then(|r| r.strip_suffix(" ("))
        {
            if let Some(table) = owned(t) {
                if self.pg().definitions.contains_key(table) {
                    return Err(self.refuse(format!("a second CREATE TABLE for {table}")));
                }
                self.pg().definitions.insert(table, Vec::new());
                self.pg().creating = Some(table);
            }
            return Ok(None);
        }
        if let Some((table, value)) = parse_setval(line) {
            self.pg().sequences.insert(table, value);
            return Ok(None);
        }
        if let Some(rest) = line.strip_prefix("COPY ") {
            let Some(rest) = rest.strip_suffix(" FROM stdin;") else {
                return Ok(None);
            };
            let target = rest
                .strip_prefix("public.")
                .and_then(|r| r.split_once(' '))
                .and_then(|(t, cols)| owned(t).map(|t| (t, cols)));
            let Some((table, cols)) = target else {
                self.pg().skipping = true;
                return Ok(None);
            };
            if self.rows.contains_key(table) {
                return Err(self.refuse(format!("a second COPY block for {table}")));
            }
            let columns = parse_column_list(cols)
                .and_then(|(columns, rest)| {
                    if rest.is_empty() {
                        Ok(columns)
                    } else {
                        Err("a malformed COPY column list".to_owned())
                    }
                })
                .map_err(|why| self.refuse(why))?;
            self.rows.insert(table.to_owned(), 0);
            self.copy = Some((table, columns.len()));
            self.start_block(table, &columns);
            return Ok(Some(Event::Copy { table, columns }));
        }
        match line {
            "SET standard_conforming_strings = off;" => self.pg().std_strings_off = true,
            "SET standard_conforming_strings = on;" => self.pg().std_strings_off = false,
            _ => {
                let std_strings = !self.pg().std_strings_off;
                self.pg().scan.feed(line, std_strings);
            }
        }
        Ok(None)
    }

    fn end_pg_dump(&mut self) -> Result<Event> {
        let d = self.pg();
        let (seen_magic, complete, creating) = (d.seen_magic, d.complete, d.creating.is_some());
        if !seen_magic {
            return Err(corrupt("not a job_manager backup or a plain pg_dump file"));
        }
        if !complete || creating {
            return Err(corrupt(
                "the pg_dump file is incomplete (it does not end with \"-- PostgreSQL database \
                 dump complete\"): the dump was cut short",
            ));
        }
        if !self.rows.contains_key("jobs") {
            return Err(corrupt(
                "the pg_dump file holds no data for jobs (neither a COPY block nor INSERT \
                 statements): there is nothing to restore from it",
            ));
        }
        self.end_unsigned(Kind::PgDump)
    }

    /// The end of a file that carries no signature (a pg_dump, a CSV).
    fn end_unsigned(&mut self, kind: Kind) -> Result<Event> {
        self.check_signature(false, false)?;
        self.ended = Some(Verified {
            kind,
            header: Header::default(),
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            rows: std::mem::take(&mut self.rows),
            compression: self.compression,
            signed: false,
            authenticated: false,
            inferred: self.inferred(),
        });
        Ok(Event::End)
    }
}

impl Reader {
    fn csv(&mut self) -> &mut Csv {
        match &mut self.format {
            Format::Csv(c) => c,
            _ => unreachable!("only called for CSV files"),
        }
    }

    /// A CSV export of jobs: one block of rows for `jobs`, a row per record.
    fn next_csv(&mut self) -> Result<Event> {
        if !self.csv().started {
            self.csv().started = true;
            self.rows.insert("jobs".to_owned(), 0);
            let columns = self.csv().columns.clone();
            return Ok(Event::Copy {
                table: "jobs",
                columns,
            });
        }
        loop {
            if self.fetch(true)?.is_none() {
                if self.csv().record.is_open() {
                    return Err(self.truncated("the end of a quoted CSV field"));
                }
                if !self.csv().copy_ended {
                    self.csv().copy_ended = true;
                    return Ok(Event::CopyEnd);
                }
                return self.end_unsigned(Kind::Csv);
            }
            let line = std::str::from_utf8(&self.lines.buf)
                .map_err(|_| self.refuse("the line is not UTF-8 text".into()))?
                .to_owned();
            if line.contains('\0') {
                return Err(self.refuse("a NUL byte".into()));
            }
            let c = self.csv();
            c.record_bytes += line.len();
            let record_bytes = c.record_bytes;
            let fed = c.record.feed(&line);
            let columns = c.columns.len();
            match fed.map_err(|why| self.refuse(why))? {
                None if record_bytes > MAX_LINE => {
                    return Err(self.refuse(format!("a CSV record longer than {MAX_LINE} bytes")));
                }
                None => {}
                Some(fields) => {
                    self.csv().record_bytes = 0;
                    if fields.len() != columns {
                        return Err(self.refuse(format!(
                            "a CSV record with {} fields where the header names {columns}",
                            fields.len()
                        )));
                    }
                    if fields
                        .iter()
                        .flatten()
                        .any(|f| grammar::is_ambiguous_date(f))
                    {
                        return Err(self.refuse(
                            "a date that is not ISO (YYYY-MM-DD) in the CSV: whether day or month \
                             comes first cannot be known; export it with DateStyle ISO \
                             (PGDATESTYLE=ISO)"
                                .into(),
                        ));
                    }
                    *self.rows.entry("jobs".to_owned()).or_default() += 1;
                    self.converted_row = Some(grammar::csv_row(&fields));
                    return Ok(Event::Row);
                }
            }
        }
    }
}

/// The columns a CSV export's header row names, when the first line is one: column names
/// (no NULLs, no duplicates) that include `prompt_text`.
fn csv_header(first_line: &[u8]) -> Option<Vec<Ident>> {
    let line = std::str::from_utf8(first_line).ok()?;
    let fields = CsvRecord::default().feed(line).ok()??;
    let mut columns: Vec<Ident> = Vec::new();
    for f in fields {
        let name = Ident::new(&f?).ok()?;
        if columns.contains(&name) {
            return None;
        }
        columns.push(name);
    }
    columns
        .iter()
        .any(|c| c.as_str() == "prompt_text")
        .then_some(columns)
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The owned table of that name.
fn owned(name: &str) -> Option<&'static str> {
    DATA_TABLES.into_iter().find(|t| *t == name)
}

/// pg_dump's `(id, prompt_text, "order", ...)` at the start of `cols`; returns the names and
/// what follows the closing parenthesis.
fn parse_column_list(cols: &str) -> std::result::Result<(Vec<Ident>, &str), Refusal> {
    let mut rest = cols
        .strip_prefix('(')
        .ok_or_else(|| "a malformed COPY column list".to_owned())?;
    let mut names = Vec::new();
    loop {
        let (name, after) = Ident::parse_plain_or_quoted(rest)?;
        if names.contains(&name) {
            return Err(format!("the column {} is listed twice", name.quoted()));
        }
        names.push(name);
        if names.len() > grammar::MAX_COLUMNS {
            return Err(format!("more than {} columns", grammar::MAX_COLUMNS));
        }
        if let Some(rest) = after.strip_prefix(')') {
            return Ok((names, rest));
        }
        rest = after
            .strip_prefix(", ")
            .ok_or_else(|| "a malformed COPY column list".to_owned())?;
    }
}

/// A column line of pg_dump's `CREATE TABLE public.x (` block: its name and type (or why the
/// type is not one a restore can recreate). `None` for constraints and unreadable lines.
fn column_definition(line: &str) -> Option<Definition> {
    let line = line.trim_start().trim_end_matches(',');
    if line.starts_with("CONSTRAINT ") {
        return None;
    }
    let (name, rest) = Ident::parse_plain_or_quoted(line).ok()?;
    let rest = rest.strip_prefix(' ')?;
    let end = [
        " DEFAULT ",
        " NOT NULL",
        " COLLATE ",
        " GENERATED ",
        " CONSTRAINT ",
    ]
    .iter()
    .filter_map(|k| rest.find(k))
    .min()
    .unwrap_or(rest.len());
    Some((name, SqlType::parse(&rest[..end])))
}

/// `SELECT pg_catalog.setval('public.jobs_id_seq', 3, true);` -> ("jobs", 3).
fn parse_setval(line: &str) -> Option<(&'static str, i64)> {
    let rest = line.strip_prefix("SELECT pg_catalog.setval('public.")?;
    let (seq, rest) = rest.split_once("', ")?;
    let table = owned(seq.strip_suffix("_id_seq")?)?;
    let (value, called) = rest.strip_suffix(");")?.split_once(", ")?;
    if !matches!(called, "true" | "false") {
        return None;
    }
    Some((table, grammar::parse_int(value)?))
}

/// Reads `bytes` as a backup from memory with `auth`, to the end: what verify does, for the
/// fuzzers and the corpus replay test. Never panics, whatever the bytes.
pub fn verify_bytes(bytes: &[u8], auth: &Auth) -> Result<Verified> {
    let compression = Compression::of_magic(bytes);
    let inner = compression
        .decoder(io::Cursor::new(bytes.to_vec()))
        .map_err(|e| corrupt(format!("the file cannot be read as a backup: {e}")))?;
    let mut r = Reader::new(Lines::new(inner), auth, compression)?;
    while !matches!(r.next_event()?, Event::End) {}
    r.finish()
}

/// The columns of the table, for a restore's statements.
pub fn header_columns<'a>(header: &'a Header, table: &str) -> &'a [Column] {
    header.columns.get(table).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_definitions_of_pg_dump() {
        let def = |l: &str| {
            column_definition(l).map(|(n, t)| (n.as_str().to_owned(), t.map(|t| t.render())))
        };
        assert_eq!(
            def("    id integer NOT NULL,"),
            Some(("id".into(), Ok("integer".into())))
        );
        assert_eq!(
            def("    status text DEFAULT 'pending'::text NOT NULL,"),
            Some(("status".into(), Ok("text".into())))
        );
        assert_eq!(
            def("    submitted_at timestamp without time zone,"),
            Some((
                "submitted_at".into(),
                Ok("timestamp without time zone".into())
            ))
        );
        assert_eq!(
            def("    \"reviewed by\" character varying(20),"),
            Some(("reviewed by".into(), Ok("character varying(20)".into())))
        );
        assert_eq!(def("    CONSTRAINT jobs_check CHECK ((x))"), None);
        assert!(matches!(
            def("    evil text, SET UNLOGGED,"),
            Some((_, Err(_)))
        ));
        assert!(matches!(def("    mood public.mood,"), Some((_, Err(_)))));
    }

    #[test]
    fn setval_lines() {
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.jobs_id_seq', 3, true);"),
            Some(("jobs", 3))
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.log_id_seq', 9, true);"),
            None
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.jobs_id_seq', 3, true); DROP TABLE x;"),
            None
        );
    }

    #[test]
    fn dump_column_lists() {
        let (cols, rest) = parse_column_list("(id, prompt_text, \"order\", \"a \"\"b\")").unwrap();
        assert_eq!(rest, "");
        let names: Vec<&str> = cols.iter().map(Ident::as_str).collect();
        assert_eq!(names, ["id", "prompt_text", "order", "a \"b"]);
        assert!(parse_column_list("(id, id)").is_err());
        assert!(parse_column_list("(id; DROP)").is_err());
        assert!(parse_column_list("id").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let auth = Auth::default();
        for bytes in [
            &b""[..],
            b"\n",
            b"-- job_manager backup\n",
            b"-- job_manager backup\n-- format_version: 2\n--\n",
            b"--\n",
            b"-- PostgreSQL database dump\nCOPY public.jobs (id) FROM stdin;\n",
            b"\x1f\x8b\x08\x00",
            b"-- job_manager backup\n-- format_version: 99999999999999999999\n",
        ] {
            assert!(verify_bytes(bytes, &auth).is_err());
        }
    }
}
