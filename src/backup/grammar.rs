//! The pieces of text a backup is made of, each as a parser and a renderer.
//!
//! Nothing read from a file is ever pasted into SQL: an identifier is parsed and quoted again,
//! a column type is parsed into one of the built-in types below and rendered from our own
//! strings, a number is parsed into an integer. A line is accepted only when rendering what was
//! parsed gives back exactly the same bytes, so a file that verifies holds only lines that
//! job_manager itself would write. None of this needs a database, which is what lets a fuzzer
//! drive it (`fuzz/`).

use std::fmt::Write as _;

/// Why a piece of text was refused (the caller adds the line number).
pub type Refusal = String;

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub const MAX_IDENT: usize = 63;
/// The most columns a PostgreSQL table can have: a file that lists more is not a backup (and
/// the bound keeps a crafted file from growing the reader's memory).
pub const MAX_COLUMNS: usize = 1600;

/// A column name, as PostgreSQL stores it (any characters but NUL and control characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// A name read from the catalog, checked for what a backup line can carry.
    pub fn new(name: &str) -> Result<Self, Refusal> {
        if name.is_empty() {
            return Err("an empty column name".into());
        }
        if name.len() > MAX_IDENT {
            return Err(format!(
                "a column name longer than {MAX_IDENT} bytes ({} bytes)",
                name.len()
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(
                "a column name with a control character (a line break, a tab, ...): rename the \
                 column to back it up"
                    .into(),
            );
        }
        Ok(Ident(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `"name"`, with inner quotes doubled: safe in any SQL position that takes a column.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }

    /// Parses a quoted identifier at the start of `s`; returns it and the rest of `s`.
    pub fn parse_quoted(s: &str) -> Result<(Self, &str), Refusal> {
        let body = s
            .strip_prefix('"')
            .ok_or_else(|| "a column name must be quoted".to_owned())?;
        let mut name = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if body[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return Ok((Ident::new(&name)?, &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        Err("a quoted column name is not closed".into())
    }

    /// Parses a name as pg_dump and format version 1 write it: unquoted when it is a plain
    /// lower-case identifier, else quoted. Returns it and the rest of `s`.
    pub fn parse_plain_or_quoted(s: &str) -> Result<(Self, &str), Refusal> {
        if s.starts_with('"') {
            return Self::parse_quoted(s);
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
            return Err("a malformed column name".into());
        }
        Ok((Ident::new(name)?, rest))
    }
}

/// The built-in types a backup may name, as `format_type()` spells them: (name, how many
/// modifiers it takes at most, what follows the modifiers).
const TYPES: &[(&str, usize, &str)] = &[
    ("smallint", 0, ""),
    ("integer", 0, ""),
    ("bigint", 0, ""),
    ("real", 0, ""),
    ("double precision", 0, ""),
    ("numeric", 2, ""),
    ("boolean", 0, ""),
    ("text", 0, ""),
    ("character varying", 1, ""),
    ("character", 1, ""),
    ("bytea", 0, ""),
    ("date", 0, ""),
    ("time", 1, " without time zone"),
    ("time", 1, " with time zone"),
    ("timestamp", 1, " without time zone"),
    ("timestamp", 1, " with time zone"),
    ("interval", 1, ""),
    ("json", 0, ""),
    ("jsonb", 0, ""),
    ("uuid", 0, ""),
    ("inet", 0, ""),
    ("cidr", 0, ""),
    ("macaddr", 0, ""),
    ("money", 0, ""),
    ("bit", 1, ""),
    ("bit varying", 1, ""),
    ("interval year", 0, ""),
    ("interval month", 0, ""),
    ("interval day", 0, ""),
    ("interval hour", 0, ""),
    ("interval minute", 0, ""),
    ("interval second", 1, ""),
    ("interval year to month", 0, ""),
    ("interval day to hour", 0, ""),
    ("interval day to minute", 0, ""),
    ("interval day to second", 1, ""),
    ("interval hour to minute", 0, ""),
    ("interval hour to second", 1, ""),
    ("interval minute to second", 1, ""),
    ("\"char\"", 0, ""),
    ("name", 0, ""),
    ("oid", 0, ""),
    ("xml", 0, ""),
    ("tsvector", 0, ""),
    ("tsquery", 0, ""),
    ("int4range", 0, ""),
    ("int8range", 0, ""),
    ("numrange", 0, ""),
    ("daterange", 0, ""),
    ("tsrange", 0, ""),
    ("tstzrange", 0, ""),
    ("point", 0, ""),
    ("line", 0, ""),
    ("lseg", 0, ""),
    ("box", 0, ""),
    ("path", 0, ""),
    ("polygon", 0, ""),
    ("circle", 0, ""),
    ("macaddr8", 0, ""),
];

/// The largest type modifier accepted (varchar's limit is 10,485,760).
const MAX_TYPMOD: i32 = 10_485_760;

/// A column type: one of [`TYPES`], its modifiers, and whether it is an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlType {
    base: usize,
    mods: Vec<i32>,
    array: bool,
}

impl SqlType {
    /// Parses a type exactly as `format_type()` writes it (`character varying(20)`,
    /// `timestamp(3) with time zone`, `numeric(10,2)`, `text[]`). Anything else, including a
    /// user-defined type, is refused: a backup must restore on a fresh database.
    pub fn parse(s: &str) -> Result<Self, Refusal> {
        let refuse = || {
            format!(
                "the column type {} is not a built-in type job_manager can recreate",
                clip(s)
            )
        };
        let (body, array) = match s.strip_suffix("[]") {
            Some(b) => (b, true),
            None => (s, false),
        };
        for (base, (name, max_mods, suffix)) in TYPES.iter().enumerate() {
            let Some(rest) = body.strip_prefix(name) else {
                continue;
            };
            let (mods, rest) = match rest.strip_prefix('(') {
                Some(inner) if *max_mods > 0 => {
                    let Some((list, rest)) = inner.split_once(')') else {
                        continue;
                    };
                    // numeric's scale may be negative (PostgreSQL 15+): numeric(5,-2).
                    let mods: Option<Vec<i32>> = list
                        .split(',')
                        .enumerate()
                        .map(|(i, m)| parse_typmod(m, *name == "numeric" && i == 1))
                        .collect();
                    match mods {
                        Some(m) if m.len() <= *max_mods => (m, rest),
                        _ => return Err(refuse()),
                    }
                }
                _ => (Vec::new(), rest),
            };
            if rest == *suffix {
                let t = SqlType { base, mods, array };
                debug_assert_eq!(t.render(), s);
                return Ok(t);
            }
        }
        Err(refuse())
    }

    /// The type as SQL, from our own strings and integers only.
    pub fn render(&self) -> String {
        let (name, _, suffix) = TYPES[self.base];
        let mut out = name.to_owned();
        if !self.mods.is_empty() {
            let mods: Vec<String> = self.mods.iter().map(i32::to_string).collect();
            let _ = write!(out, "({})", mods.join(","));
        }
        out.push_str(suffix);
        if self.array {
            out.push_str("[]");
        }
        out
    }
}

/// A type modifier: a decimal number without leading zeros, at most [`MAX_TYPMOD`]; negative
/// (down to -1000) only where `negative` allows it.
fn parse_typmod(s: &str, negative: bool) -> Option<i32> {
    let digits = s.strip_prefix('-').filter(|_| negative).unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.len() <= 8
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let v: i32 = parse_int(s).filter(|_| ok)?;
    (-1000..=MAX_TYPMOD).contains(&v).then_some(v)
}

/// A decimal integer as PostgreSQL prints it (optional minus, no leading zeros).
pub fn parse_int<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let v: T = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

/// Checks one line of COPY text data (without its newline) as `COPY ... TO STDOUT` writes
/// it: exactly `columns` fields separated by tabs, each `\N` or text in which a backslash
/// starts one of the escapes COPY writes (`\\ \b \f \n \r \t \v`), no raw carriage return, no
/// NUL. Such a line means the same to our restore, to psql and to the server.
pub fn check_copy_row(line: &[u8], columns: usize) -> Result<(), Refusal> {
    if line.contains(&0) {
        return Err("a NUL byte in COPY data".into());
    }
    let mut fields = 1;
    let mut field_start = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr3(b'\t', b'\\', b'\r', &line[i..]) {
        let at = i + off;
        match line[at] {
            b'\t' => {
                check_null_marker(&line[field_start..at])?;
                fields += 1;
                field_start = at + 1;
                i = at + 1;
            }
            b'\\' => {
                let next = line.get(at + 1).copied();
                match next {
                    Some(b'\\' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'N') => i = at + 2,
                    _ => return Err("an escape COPY does not write (a backslash followed by something other than \\, b, f, n, r, t, v or N)".into()),
                }
            }
            _ => return Err("a raw carriage return in COPY data".into()),
        }
        if fields > columns {
            return Err(format!(
                "a COPY row with more than {columns} fields where the table has {columns} columns"
            ));
        }
    }
    check_null_marker(&line[field_start..])?;
    if fields != columns {
        return Err(format!(
            "a COPY row with {fields} fields where the table has {columns} columns"
        ));
    }
    Ok(())
}

/// `\N` is the NULL marker only as a whole field; COPY never writes it inside text.
fn check_null_marker(field: &[u8]) -> Result<(), Refusal> {
    if field == b"\\N" {
        return Ok(());
    }
    let mut i = 0;
    while let Some(off) = field.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + off;
        if field.get(at + 1) == Some(&b'N') {
            return Err("a \\N inside a COPY field (COPY writes it only as a whole field)".into());
        }
        i = at + 2;
    }
    Ok(())
}

/// A timestamptz as `applied_at::text` prints it with DateStyle ISO:
/// `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]`.
pub fn check_iso_timestamptz(s: &str) -> Result<(), Refusal> {
    let refuse = || {
        format!(
            "{} is not an ISO timestamp: the backup was written with a DateStyle other than \
             ISO, so its dates are ambiguous; restore it with the DateStyle it was written in",
            clip(s)
        )
    };
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 22
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(refuse());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 6 {
            return Err(refuse());
        }
        rest = &frac[n..];
    }
    let Some(offset) = rest.strip_prefix(['+', '-']) else {
        return Err(refuse());
    };
    let parts: Vec<&str> = offset.split(':').collect();
    let ok = !parts.is_empty()
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|d| d.is_ascii_digit()));
    let date_ok = chrono::NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%d %H:%M:%S").is_ok();
    if ok && date_ok {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// Text of a header value: printable, no backslash, bounded.
pub fn check_header_text(s: &str) -> Result<(), Refusal> {
    if s.len() > 256 || s.chars().any(|c| c.is_control() || c == '\\') {
        return Err("a header value with control characters or a backslash".into());
    }
    Ok(())
}

/// Appends `text` to a COPY text row as one field: backslash, tab, newline and carriage
/// return escaped as COPY writes them.
fn push_copy_text(row: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => row.extend_from_slice(b"\\\\"),
            b'\t' => row.extend_from_slice(b"\\t"),
            b'\n' => row.extend_from_slice(b"\\n"),
            b'\r' => row.extend_from_slice(b"\\r"),
            _ => row.push(b),
        }
    }
}

/// Where the reading of one pg_dump `INSERT` statement's rows stands (`--inserts`,
/// `--column-inserts`, `--rows-per-insert`): rows are parsed one at a time from the
/// statement's text, so memory stays at the statement's size however many rows it holds.
#[derive(Debug, Clone, Copy)]
pub struct InsertCursor {
    /// Byte offset of what is left to read, after `VALUES`.
    pub pos: usize,
    after_row: bool,
    /// `standard_conforming_strings` was on where the dump was written (a backslash in a
    /// plain string is then an ordinary character).
    pub std_strings: bool,
}

impl InsertCursor {
    pub fn new(pos: usize, std_strings: bool) -> Self {
        InsertCursor {
            pos,
            after_row: false,
            std_strings,
        }
    }
}

/// The next row of an INSERT statement as a COPY text row (with its newline), or `None` after
/// its last row. Only pg_dump's literal syntax is accepted: `NULL`, numbers, `true`/`false`,
/// quoted strings with doubled quotes, and `E''` strings with `\\` and `\'`. Anything else (a
/// function call, a cast, a sub-select, a comment, a second statement) is refused: nothing
/// here is ever executed.
pub fn next_insert_row(
    text: &str,
    cursor: &mut InsertCursor,
    columns: usize,
) -> Result<Option<Vec<u8>>, Refusal> {
    let blanks = [' ', '\n', '\t'];
    let mut rest = text.get(cursor.pos..).unwrap_or("");
    if cursor.after_row {
        if rest == ";" {
            cursor.pos = text.len();
            return Ok(None);
        }
        rest = rest.strip_prefix(',').ok_or_else(|| {
            "a malformed INSERT statement (expected , or ; after a row)".to_owned()
        })?;
    }
    rest = rest
        .trim_start_matches(blanks)
        .strip_prefix('(')
        .ok_or_else(|| "an INSERT row must start with (".to_owned())?;
    let mut row = Vec::new();
    let mut fields = 0;
    loop {
        rest = rest.trim_start_matches(' ');
        if fields > 0 {
            row.push(b'\t');
        }
        rest = insert_value(rest, &mut row, cursor.std_strings)?;
        fields += 1;
        if fields > columns {
            break;
        }
        rest = rest.trim_start_matches(' ');
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix(')') {
            rest = r;
            break;
        } else {
            return Err("a malformed INSERT row (expected , or ))".into());
        }
    }
    if fields != columns {
        return Err(format!(
            "an INSERT row with {} values where the table has {columns} columns",
            if fields > columns {
                "more".to_owned()
            } else {
                fields.to_string()
            }
        ));
    }
    row.push(b'\n');
    cursor.pos = text.len() - rest.len();
    cursor.after_row = true;
    Ok(Some(row))
}

/// Every row of an INSERT statement's `VALUES` part (tests and small statements).
pub fn insert_rows(values: &str, columns: usize) -> Result<Vec<Vec<u8>>, Refusal> {
    let mut cursor = InsertCursor::new(0, true);
    let mut rows = Vec::new();
    while let Some(row) = next_insert_row(values, &mut cursor, columns)? {
        rows.push(row);
    }
    Ok(rows)
}

/// One literal at the start of `s`, appended to `row` as a COPY field; returns the rest.
fn insert_value<'a>(s: &'a str, row: &mut Vec<u8>, std_strings: bool) -> Result<&'a str, Refusal> {
    if let Some(rest) = s.strip_prefix("NULL") {
        row.extend_from_slice(b"\\N");
        return Ok(rest);
    }
    for (word, value) in [("true", b't'), ("false", b'f')] {
        if let Some(rest) = s.strip_prefix(word) {
            row.push(value);
            return Ok(rest);
        }
    }
    // With standard_conforming_strings off, pg_dump writes backslash escapes in plain strings.
    let escaped = s
        .strip_prefix("E'")
        .or_else(|| s.strip_prefix('\'').filter(|_| !std_strings));
    if let Some(body) = escaped {
        let mut text = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\\')) => text.push('\\'),
                    Some((_, '\'')) => text.push('\''),
                    _ => return Err("an escape pg_dump does not write in an E'' string".into()),
                },
                '\'' if body[i + 1..].starts_with('\'') => {
                    text.push('\'');
                    chars.next();
                }
                '\'' => {
                    push_copy_text(row, &text);
                    return Ok(&body[i + 1..]);
                }
                c => text.push(c),
            }
        }
        return Err("a string that is not closed".into());
    }
    if let Some(body) = s.strip_prefix('\'') {
        let mut text = String::new();
        let mut from = 0;
        loop {
            let Some(q) = body[from..].find('\'') else {
                return Err("a string that is not closed".into());
            };
            text.push_str(&body[from..from + q]);
            let after = from + q + 1;
            if body[after..].starts_with('\'') {
                text.push('\'');
                from = after + 1;
            } else {
                push_copy_text(row, &text);
                return Ok(&body[after..]);
            }
        }
    }
    // A number as pg_dump prints it: -12, 3.5, 1e-05, 1.5e+10.
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e')))
        .unwrap_or(s.len());
    let number = &s[..end];
    let valid = number.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && number.parse::<f64>().is_ok();
    if valid {
        row.extend_from_slice(number.as_bytes());
        return Ok(&s[end..]);
    }
    Err(format!(
        "a value that is not a literal pg_dump writes (NULL, a number, true/false or a quoted \
         string): {}",
        clip(s)
    ))
}

/// A CSV record being read (PostgreSQL's CSV: `,` between fields, `"` quotes with `""`
/// inside, a record ends at a newline outside quotes). Unquoted empty fields are NULL, as
/// psql's `\copy ... CSV` writes them; quoted ones are the empty string.
#[derive(Debug, Default)]
pub struct CsvRecord {
    fields: Vec<Option<String>>,
    field: String,
    quoted: bool,
    in_quotes: bool,
    after_quote: bool,
}

impl CsvRecord {
    /// Feeds one line (with its newline). `Ok(Some(fields))` when the line completes a
    /// record; `Ok(None)` when a quoted field goes on to the next line.
    pub fn feed(&mut self, line: &str) -> Result<Option<Vec<Option<String>>>, Refusal> {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if self.in_quotes {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        self.field.push('"');
                    } else {
                        self.in_quotes = false;
                        self.after_quote = true;
                    }
                } else {
                    self.field.push(c);
                }
                continue;
            }
            match c {
                ',' => self.end_field(),
                '\n' => {
                    self.end_field();
                    return Ok(Some(std::mem::take(&mut self.fields)));
                }
                '\r' => return Err("a carriage return outside quotes in the CSV".into()),
                _ if self.after_quote => {
                    return Err("text after a closing quote in the CSV".into());
                }
                '"' if self.field.is_empty() => {
                    self.quoted = true;
                    self.in_quotes = true;
                }
                '"' => return Err("a quote inside an unquoted CSV field".into()),
                c => self.field.push(c),
            }
            if self.fields.len() > MAX_COLUMNS {
                return Err(format!("a CSV record with more than {MAX_COLUMNS} fields"));
            }
        }
        if self.in_quotes {
            return Ok(None);
        }
        Err("the CSV file does not end with a newline".into())
    }

    fn end_field(&mut self) {
        let text = std::mem::take(&mut self.field);
        let value = (self.quoted || !text.is_empty()).then_some(text);
        self.fields.push(value);
        self.quoted = false;
        self.after_quote = false;
    }

    /// A quoted field is open: the record goes on.
    pub fn is_open(&self) -> bool {
        self.in_quotes
    }
}

/// A CSV record as a COPY text row (with its newline).
pub fn csv_row(fields: &[Option<String>]) -> Vec<u8> {
    let mut row = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            row.push(b'\t');
        }
        match f {
            None => row.extend_from_slice(b"\\N"),
            Some(text) => push_copy_text(&mut row, text),
        }
    }
    row.push(b'\n');
    row
}

/// Where a scan of SQL text stands: outside quotes, or inside a `'...'` or `E'...'` string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Quote {
    #[default]
    Outside,
    Plain,
    Escaped,
}

/// Scans one line of a statement (pg_dump's `INSERT`, whose strings may hold line breaks),
/// keeping track of quotes across lines. True when the line ends the statement: its last
/// character outside quotes, blanks aside, is `;`.
pub fn scan_statement_line(line: &str, quote: &mut Quote, std_strings: bool) -> bool {
    let mut ends = false;
    let mut prev = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match *quote {
            Quote::Outside => match c {
                '\'' => {
                    ends = false;
                    *quote = if matches!(prev, 'E' | 'e') || !std_strings {
                        Quote::Escaped
                    } else {
                        Quote::Plain
                    };
                }
                ';' => ends = true,
                c if c.is_whitespace() => {}
                _ => ends = false,
            },
            Quote::Plain | Quote::Escaped => {
                if c == '\\' && *quote == Quote::Escaped {
                    chars.next();
                } else if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        *quote = Quote::Outside;
                    }
                }
            }
        }
        prev = c;
    }
    ends && *quote == Quote::Outside
}

/// `numeric` as PostgreSQL prints it: `-?(0|[1-9][0-9]*)(.[0-9]+)?`, never a negative zero,
/// bounded in length (a longer value stays text).
fn printed_numeric(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let negative_zero = s.starts_with('-') && body.bytes().all(|b| b == b'0' || b == b'.');
    s.len() <= 1000
        && digits(int)
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(digits)
        && !negative_zero
}

/// A `date` as PostgreSQL prints it with DateStyle ISO, AD: `YYYY-MM-DD`, a real day of year
/// 0001-9999.
fn printed_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && &s[..4] != "0000"
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// A timestamp as PostgreSQL prints it with DateStyle ISO, AD: a [`printed_date`], a space,
/// `HH:MM:SS` (second 00-59) and at most 6 fraction digits without a trailing zero. Returns
/// what follows (the time zone offset of a `timestamptz`, or nothing).
fn printed_timestamp(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() < 19 || !s.is_char_boundary(10) || !printed_date(&s[..10]) || b[10] != b' ' {
        return None;
    }
    let two = |at: usize, max: u8| {
        b[at].is_ascii_digit()
            && b[at + 1].is_ascii_digit()
            && (b[at] - b'0') * 10 + (b[at + 1] - b'0') <= max
    };
    if !(two(11, 23) && b[13] == b':' && two(14, 59) && b[16] == b':' && two(17, 59)) {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 6 || frac.as_bytes()[n - 1] == b'0' {
            return None;
        }
        rest = &frac[n..];
    }
    Some(rest)
}

/// What the values of a column a dump gives no type for look like, to give the column a type
/// when a restore must add it (a data-only dump of the oldest layout's `submitted_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guess {
    /// Only NULLs so far.
    #[default]
    Null,
    BigInt,
    Numeric,
    Date,
    Timestamp,
    TimestampTz,
    Text,
}

impl Guess {
    /// The guess for one COPY text field. A type is guessed only from the exact form in which
    /// PostgreSQL prints a value of that type (as pg_dump wrote it): a value in any other form
    /// ("007", "-0", "1e5", "1.", a seventh fraction digit, second 60, year 0) came from a
    /// text column, and loading it as a number or a time would rewrite or refuse it.
    pub fn of(field: &[u8]) -> Guess {
        if field == b"\\N" {
            return Guess::Null;
        }
        let Ok(s) = std::str::from_utf8(field) else {
            return Guess::Text;
        };
        if parse_int::<i64>(s).is_some() {
            Guess::BigInt
        } else if printed_numeric(s) {
            Guess::Numeric
        } else if printed_date(s) {
            Guess::Date
        } else {
            match printed_timestamp(s) {
                Some("") => Guess::Timestamp,
                Some(_) if check_iso_timestamptz(s).is_ok() => Guess::TimestampTz,
                _ => Guess::Text,
            }
        }
    }

    /// The guess that fits both.
    #[must_use]
    pub fn and(self, other: Guess) -> Guess {
        match (self, other) {
            (Guess::Null, g) | (g, Guess::Null) => g,
            (a, b) if a == b => a,
            (Guess::BigInt | Guess::Numeric, Guess::BigInt | Guess::Numeric) => Guess::Numeric,
            _ => Guess::Text,
        }
    }

    pub fn sql_type(self) -> SqlType {
        let name = match self {
            Guess::BigInt => "bigint",
            Guess::Numeric => "numeric",
            Guess::Date => "date",
            Guess::Timestamp => "timestamp without time zone",
            Guess::TimestampTz => "timestamp with time zone",
            Guess::Null | Guess::Text => "text",
        };
        SqlType::parse(name).expect("a built-in type")
    }
}

/// Tracks strings, dollar-quoted bodies and comments across the lines of the SQL statements
/// of a pg_dump that are not data (a function's body may hold lines that look like `COPY` or
/// `INSERT INTO public.jobs`): while a line starts inside such a body it means nothing.
#[derive(Debug, Clone, Default)]
pub struct SqlScan {
    quote: Quote,
    dollar: Option<Vec<u8>>,
}

impl SqlScan {
    /// The next line starts inside a string or a dollar-quoted body.
    pub fn inside(&self) -> bool {
        self.quote != Quote::Outside || self.dollar.is_some()
    }

    pub fn feed(&mut self, line: &str, std_strings: bool) {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if let Some(tag) = &self.dollar {
                if b[i..].starts_with(tag) {
                    i += tag.len();
                    self.dollar = None;
                } else {
                    i += 1;
                }
                continue;
            }
            match self.quote {
                Quote::Plain | Quote::Escaped => {
                    let escape = b[i] == b'\\' && self.quote == Quote::Escaped;
                    if escape || (b[i] == b'\'' && b.get(i + 1) == Some(&b'\'')) {
                        i += 2;
                    } else {
                        if b[i] == b'\'' {
                            self.quote = Quote::Outside;
                        }
                        i += 1;
                    }
                    continue;
                }
                Quote::Outside => {}
            }
            match b[i] {
                b'-' if b.get(i + 1) == Some(&b'-') => return,
                b'\'' => {
                    let e = i > 0 && matches!(b[i - 1], b'E' | b'e');
                    self.quote = if e || !std_strings {
                        Quote::Escaped
                    } else {
                        Quote::Plain
                    };
                    i += 1;
                }
                b'$' if i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') => {
                    match dollar_tag_len(&b[i..]) {
                        Some(len) => {
                            self.dollar = Some(b[i..i + len].to_vec());
                            i += len;
                        }
                        None => i += 1,
                    }
                }
                _ => i += 1,
            }
        }
    }
}

/// The length of a dollar-quote tag at the start of `b` (`$$`, `$body$`), if there is one.
fn dollar_tag_len(b: &[u8]) -> Option<usize> {
    let rest = b.get(1..)?;
    let name = rest
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if name > 0 && rest[0].is_ascii_digit() {
        return None;
    }
    (rest.get(name) == Some(&b'$')).then_some(name + 2)
}

/// A CSV field that looks like a date written with a DateStyle other than ISO
/// (`05/11/2026`, `05.11.2026`, `11-05-2026`): which of day and month comes first cannot be
/// known, so it is refused rather than guessed.
pub fn is_ambiguous_date(field: &str) -> bool {
    let b = field.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let sep = |i: usize| matches!(b.get(i), Some(b'/' | b'.' | b'-'));
    // d/m/y with one- or two-digit day and month, or y/m/d with slashes or dots.
    for (first, second) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let s1 = first;
        let s2 = first + 1 + second;
        if digits(0..first)
            && sep(s1)
            && digits(s1 + 1..s2)
            && b.get(s2) == b.get(s1)
            && digits(s2 + 1..s2 + 3)
        {
            return true;
        }
    }
    digits(0..4) && matches!(b.get(4), Some(b'/' | b'.')) && digits(5..6)
}

/// Up to 40 characters of `s`, escaped, for a message (never more of a file's content).
pub fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    format!("{t:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip() {
        for t in [
            "integer",
            "text",
            "text[]",
            "character varying",
            "character varying(255)",
            "character(1)",
            "numeric",
            "numeric(10)",
            "numeric(10,2)",
            "timestamp without time zone",
            "timestamp(3) without time zone",
            "timestamp with time zone",
            "time(0) with time zone",
            "double precision",
            "jsonb",
            "bit varying(8)",
            "interval(3)",
            "interval day to second(3)",
            "interval hour",
            "\"char\"",
            "xml",
            "int4range",
            "numeric(5,-2)",
            "point[]",
        ] {
            assert_eq!(SqlType::parse(t).unwrap().render(), t);
        }
    }

    #[test]
    fn hostile_and_foreign_types_are_refused() {
        for t in [
            "",
            "text, ADD CONSTRAINT c FOREIGN KEY (operation_id) REFERENCES dag (dag_id)",
            "text, SET UNLOGGED",
            "text, ADD CONSTRAINT c CHECK (query_to_xml(prompt_text,true,true,''))",
            "text DEFAULT pg_terminate_backend(pg_backend_pid())",
            "public.mood",
            "mood",
            "integer[][]",
            "numeric(1,2,3)",
            "numeric(01)",
            "numeric(99999999999)",
            "character varying(-1)",
            "numeric(-5,2)",
            "interval day to hour(3)",
            "text ",
            " text",
            "TEXT",
            "timestamp(3)",
            "integer(4)",
            "text;",
        ] {
            assert!(SqlType::parse(t).is_err(), "{t:?} was accepted");
        }
    }

    #[test]
    fn identifiers_quote_and_parse_back() {
        for name in [
            "id",
            "reviewed by",
            "备注",
            "say \"hi\"",
            "a'b",
            "$x",
            "Upper",
        ] {
            let id = Ident::new(name).unwrap();
            let q = id.quoted();
            let line = format!("{q} text");
            let (back, rest) = Ident::parse_quoted(&line).unwrap();
            assert_eq!(back, id);
            assert_eq!(rest, " text");
        }
        assert!(Ident::new("a\nb").is_err());
        assert!(Ident::new("").is_err());
        assert!(Ident::new(&"x".repeat(64)).is_err());
        assert!(Ident::parse_quoted("\"open").is_err());
        assert!(Ident::parse_quoted("plain").is_err());
        assert_eq!(
            Ident::parse_plain_or_quoted("prompt_text, x").unwrap(),
            (Ident::new("prompt_text").unwrap(), ", x")
        );
        assert!(Ident::parse_plain_or_quoted("1abc").is_err());
        assert!(Ident::parse_plain_or_quoted("").is_err());
    }

    #[test]
    fn copy_rows() {
        assert!(check_copy_row(b"1\thello\\tworld \\\\ x\t\\N", 3).is_ok());
        assert!(check_copy_row(b"", 1).is_ok());
        assert!(check_copy_row(b"1\t2", 3).is_err());
        assert!(check_copy_row(b"1\t2\t3\t4", 3).is_err());
        assert!(check_copy_row(b"1\t\\x41\t3", 3).is_err());
        assert!(check_copy_row(b"1\tab\\Ncd\t3", 3).is_err());
        assert!(check_copy_row(b"1\ta\rb\t3", 3).is_err());
        assert!(check_copy_row(b"1\ta\0b\t3", 3).is_err());
        assert!(check_copy_row(b"1\tab\\", 2).is_err());
        assert!(check_copy_row(b"\\.", 1).is_err());
        // Found by the pg_dump fuzzer: a field ending in a backslash beyond the last column.
        assert!(check_copy_row(b"1\t2\t\\", 2).is_err());
        assert!(check_null_marker(b"\\").is_ok());
    }

    #[test]
    fn iso_timestamps() {
        assert!(check_iso_timestamptz("2026-11-24 08:19:40.41387+00").is_ok());
        assert!(check_iso_timestamptz("2026-11-24 08:19:40+05:30").is_ok());
        assert!(check_iso_timestamptz("2026-11-24 08:19:40-03").is_ok());
        assert!(check_iso_timestamptz("24/11/2026 08:19:40.41387 UTC").is_err());
        assert!(check_iso_timestamptz("2026-13-24 08:19:40+00").is_err());
        assert!(check_iso_timestamptz("2026-11-24 08:19:40.1234567+00").is_err());
        assert!(check_iso_timestamptz("2026-11-24 08:19:40+00'); DROP").is_err());
    }

    #[test]
    fn integers_must_be_canonical() {
        assert_eq!(parse_int::<i64>("42"), Some(42));
        assert_eq!(parse_int::<i64>("-1"), Some(-1));
        assert_eq!(parse_int::<i64>("042"), None);
        assert_eq!(parse_int::<i64>("+1"), None);
        assert_eq!(parse_int::<i64>(" 1"), None);
    }
    #[test]
    fn insert_statements_become_copy_rows() {
        let rows = insert_rows(
            "(1, 'a''b', NULL, true, -1.5e-05, E'back\\\\slash ''q''', 'tab\there\nline');",
            7,
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![b"1\ta'b\t\\N\tt\t-1.5e-05\tback\\\\slash 'q'\ttab\\there\\nline\n".to_vec()]
        );
        let many = insert_rows("\n\t(1, 'x'),\n\t(2, 'y');", 2).unwrap();
        assert_eq!(many, vec![b"1\tx\n".to_vec(), b"2\ty\n".to_vec()]);
        for hostile in [
            "(1, pg_sleep(10));",
            "(1, 'x'::text);",
            "(1, (SELECT 1));",
            "(1, 'open);",
            "(1, 2, 3);",
            "(1);",
            "(1, 'x'); DROP TABLE dag;",
            "(1, E'\\x41');",
            "(1, --comment\n 2);",
            "(1, 1e);",
            "(1, 'x')",
        ] {
            assert!(insert_rows(hostile, 2).is_err(), "{hostile:?} was accepted");
        }
        // standard_conforming_strings off: backslashes escape in plain strings.
        let mut cursor = InsertCursor::new(0, false);
        assert_eq!(
            next_insert_row("(1, 'C:\\\\path it\\'s');", &mut cursor, 2).unwrap(),
            Some(b"1\tC:\\\\path it's\n".to_vec())
        );
    }

    #[test]
    fn function_bodies_and_strings_are_tracked_across_lines() {
        let mut scan = SqlScan::default();
        scan.feed("CREATE FUNCTION f() RETURNS void AS $body$", true);
        assert!(scan.inside());
        scan.feed("INSERT INTO public.jobs (prompt_text) VALUES ('x');", true);
        assert!(scan.inside());
        scan.feed("$body$;", true);
        assert!(!scan.inside());
        scan.feed("SELECT 'it''s -- not a comment", true);
        assert!(scan.inside());
        scan.feed("'; -- a comment 'with a quote", true);
        assert!(!scan.inside());
        scan.feed("SELECT $1, a$b$c", true);
        assert!(!scan.inside());
    }

    #[test]
    fn ambiguous_dates() {
        for d in [
            "05/11/2026 10:00:00",
            "5.11.2026",
            "11-05-2026",
            "2026/11/05",
        ] {
            assert!(is_ambiguous_date(d), "{d}");
        }
        for d in [
            "2026-11-05 10:00:00",
            "12",
            "1.5",
            "a/b/c",
            "IMAGE_TEST",
            "10-20",
        ] {
            assert!(!is_ambiguous_date(d), "{d}");
        }
    }

    #[test]
    fn csv_records() {
        let mut r = CsvRecord::default();
        assert_eq!(
            r.feed("1,\"a,b\",,\"\",x\n").unwrap(),
            Some(vec![
                Some("1".into()),
                Some("a,b".into()),
                None,
                Some(String::new()),
                Some("x".into())
            ])
        );
        assert_eq!(r.feed("2,\"multi\n").unwrap(), None);
        assert!(r.is_open());
        assert_eq!(
            r.feed("line \"\"q\"\"\",z\n").unwrap(),
            Some(vec![
                Some("2".into()),
                Some("multi\nline \"q\"".into()),
                Some("z".into())
            ])
        );
        assert_eq!(
            csv_row(&[Some("a\tb\\".into()), None]),
            b"a\\tb\\\\\t\\N\n".to_vec()
        );
        for bad in ["a\"b\n", "\"a\"b\n", "a\r\n", "a,b"] {
            assert!(CsvRecord::default().feed(bad).is_err(), "{bad:?}");
        }
    }
    #[test]
    fn statements_end_only_outside_quotes() {
        let mut q = Quote::default();
        assert!(scan_statement_line(
            "INSERT INTO t VALUES (1, 'a;');",
            &mut q,
            true
        ));
        assert!(!scan_statement_line(
            "INSERT INTO t VALUES (1, 'line one;",
            &mut q,
            true
        ));
        assert_eq!(q, Quote::Plain);
        assert!(!scan_statement_line("it''s; still', 2)", &mut q, true));
        assert!(scan_statement_line(";", &mut q, true));
        let mut e = Quote::default();
        assert!(!scan_statement_line(
            "INSERT INTO t VALUES (E'a\\';",
            &mut e,
            true
        ));
        assert!(scan_statement_line("b');", &mut e, true));
    }
    #[test]
    fn guesses_for_columns_without_a_type() {
        let g = |fields: &[&str]| {
            fields
                .iter()
                .fold(Guess::Null, |acc, f| acc.and(Guess::of(f.as_bytes())))
                .sql_type()
                .render()
        };
        assert_eq!(
            g(&["2025-07-19 04:58:03.482205", "\\N"]),
            "timestamp without time zone"
        );
        assert_eq!(g(&["2025-07-19 04:58:03+00"]), "timestamp with time zone");
        assert_eq!(g(&["1", "-2"]), "bigint");
        assert_eq!(g(&["1", "2.5"]), "numeric");
        assert_eq!(g(&["2025-07-19"]), "date");
        assert_eq!(g(&["2025-07-19", "x"]), "text");
        assert_eq!(g(&["\\N"]), "text");
        // Only the forms PostgreSQL prints: anything else came from a text column.
        for text in [
            "007",
            "-0",
            "-0.00",
            "1e5",
            "1.",
            ".5",
            "+1",
            "1e1000000",
            "0000-01-01",
            "0000-01-01 00:00:00",
            "2025-02-30",
            "2016-12-31 23:59:60",
            "2025-01-01 24:00:00",
            "2025-01-01 12:00:00.1234567",
            "2025-01-01 12:00:00.10",
            "2025-01-01 12:00:00.",
            "2025-01-01T12:00:00",
            "2025-01-01 12:00",
            "2025-01-01 12:00:0",
            "2025-01-01 12:0::00",
            "2025-01-01 1::00:00",
            "2025-01-01 12:00:00 UTC",
            "2025-01-01 12:00:00+5",
            "2025-01-01 BC",
            "NaN",
            "Infinity",
        ] {
            assert_eq!(g(&[text]), "text", "{text}");
        }
        assert_eq!(g(&["0", "-1.50", "10.0"]), "numeric");
        assert_eq!(g(&["2024-02-29 23:59:59.5"]), "timestamp without time zone");
        assert_eq!(g(&["2024-02-29 23:59:59"]), "timestamp without time zone");
        assert_eq!(
            g(&["2024-02-29 23:59:59.000001-03:30"]),
            "timestamp with time zone"
        );
    }
}
