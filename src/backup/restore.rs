//! Restoring: in ONE transaction the owned tables are replaced by the file's rows and the
//! sequences set, or nothing changes. Nothing else in the database is touched.
//!
//! The file has been verified in full before this runs; while streaming it into COPY the
//! checksum is computed again and compared before COMMIT, so a file changed in between is
//! refused too. Rows are streamed, never held in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::Path;

use postgres::{Client, Transaction};
use sha2::{Digest, Sha256};

use super::dump::{add_columns_sql, copy_columns, quote_ident, setval_sql};
use super::format::{
    check_identifier, check_type, copy_target, corrupt, open, text, Lines, Verified, DATA_TABLES,
    TRAILER,
};
use crate::errors::{Error, Result};
use crate::model::LEGACY_STATUS_MAP;
use crate::pool::Context;

/// How long the restore waits for the locks on the owned tables.
const LOCK_TIMEOUT: &str =
    "SET LOCAL lock_timeout = '30s'; SET LOCAL client_min_messages = warning;";

fn begin(client: &mut Client) -> Result<Transaction<'_>> {
    let mut tx = client.transaction().context("starting the restore")?;
    tx.batch_execute(LOCK_TIMEOUT)
        .context("starting the restore")?;
    Ok(tx)
}

/// Sets the owned tables' constraints and indexes aside for the load and returns the
/// statements that put them back, in order: loading then indexing is much faster than
/// loading into indexes, and it is what pg_dump's files do. Foreign keys go first and come
/// back last (validating every row); primary and unique keys come back before the other
/// indexes, which are built in name order, as in pg_dump's files. When a table job_manager
/// does not own references ours, the keys stay in place: only the plain indexes are set
/// aside. All of it happens inside the restore's transaction.
fn set_aside_indexes(tx: &mut Transaction<'_>) -> Result<Vec<String>> {
    let what = "setting the indexes aside during the restore";
    let referenced_from_outside: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint
                 WHERE contype = 'f'
                   AND confrelid IN ('jobs'::regclass, 'download_queue'::regclass)
                   AND conrelid NOT IN ('jobs'::regclass, 'download_queue'::regclass))",
            &[],
        )
        .context(what)?
        .get(0);
    let mut drops = Vec::new();
    let (mut keys, mut foreign) = (Vec::new(), Vec::new());
    if !referenced_from_outside {
        for row in tx
            .query(
                "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid),
                        contype = 'f'
                 FROM pg_constraint
                 WHERE conrelid IN ('jobs'::regclass, 'download_queue'::regclass)
                   AND contype IN ('p', 'u', 'f')
                 ORDER BY contype = 'f' DESC",
                &[],
            )
            .context(what)?
        {
            let (table, name, definition, is_fk): (String, String, String, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let name = quote_ident(&name);
            drops.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
            let add = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}");
            if is_fk {
                foreign.push(add);
            } else {
                keys.push(add);
            }
        }
    }
    let mut indexes = Vec::new();
    for row in tx
        .query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i
             WHERE i.indrelid IN ('jobs'::regclass, 'download_queue'::regclass)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
             ORDER BY i.indexrelid::regclass::text",
            &[],
        )
        .context(what)?
    {
        let (name, definition): (String, String) = (row.get(0), row.get(1));
        drops.push(format!("DROP INDEX {name}"));
        indexes.push(definition);
    }
    for statement in &drops {
        tx.batch_execute(statement).context(what)?;
    }
    Ok(keys.into_iter().chain(indexes).chain(foreign).collect())
}

/// Runs the statements of [`set_aside_indexes`] with the server's own `maintenance_work_mem`,
/// as psql and pg_restore do. (Measured: raising it to 256MB made building the unique prompt
/// index of 1,000,000 jobs 0.6 s slower, 2.0 s instead of 1.4 s: the larger in-memory sort
/// of long strings runs out of CPU cache.)
fn rebuild_indexes(tx: &mut Transaction<'_>, statements: &[String]) -> Result<()> {
    for statement in statements {
        tx.batch_execute(statement)
            .context("rebuilding the indexes and keys")?;
    }
    Ok(())
}

/// Streams the data lines of one COPY block into `COPY sql FROM STDIN`; returns the rows.
/// Lines are gathered into 256 KiB blocks, hashed and sent a block at a time.
fn stream_copy(
    tx: &mut Transaction<'_>,
    lines: &mut Lines<Box<dyn BufRead>>,
    hasher: &mut Sha256,
    sql: &str,
    what: &str,
) -> Result<u64> {
    const BLOCK: usize = 1 << 18;
    let mut writer = tx.copy_in(sql).context(what)?;
    let mut block = Vec::with_capacity(2 * BLOCK);
    let mut ended = false;
    while !ended {
        let Some(line) = lines.next_line()? else {
            return Err(corrupt("the file ends inside a COPY block (truncated)"));
        };
        ended = line == b"\\.\n";
        if !ended {
            block.extend_from_slice(line);
        }
        if ended || block.len() >= BLOCK {
            hasher.update(&block);
            writer
                .write_all(&block)
                .map_err(|e| Error::Unavailable(format!("{what}: {e}")))?;
            block.clear();
        }
    }
    hasher.update(b"\\.\n");
    writer.finish().context(what)
}

/// Restores a job_manager backup. The schema is current (migrations ran first).
pub fn restore_ours(
    client: &mut Client,
    path: &Path,
    v: &Verified,
) -> Result<BTreeMap<String, u64>> {
    let header = &v.header;
    let mut tx = begin(client)?;
    for (table, columns) in &header.columns {
        tx.batch_execute(&add_columns_sql(table, columns))
            .context("adding the backup's columns")?;
    }
    tx.batch_execute("TRUNCATE TABLE download_queue, jobs")
        .context("emptying the owned tables")?;
    let indexes = set_aside_indexes(&mut tx)?;

    let mut lines = open(path)?;
    let mut hasher = Sha256::new();
    let mut rows = BTreeMap::new();
    let mut trailer = None;
    while let Some(line) = lines.next_line()? {
        let s = text(line)?;
        if let Some(hex) = s.strip_prefix(TRAILER) {
            trailer = Some(hex.trim_end().to_owned());
            break;
        }
        hasher.update(line);
        let Some((table, cols)) = copy_target(s.trim_end_matches('\n')) else {
            continue;
        };
        let table = table.to_owned();
        let expected = copy_columns(&header.columns[&table]);
        if cols != expected {
            return Err(corrupt(format!(
                "{table}: the COPY columns differ from the header's"
            )));
        }
        let what = format!("restoring {table}");
        let n = stream_copy(
            &mut tx,
            &mut lines,
            &mut hasher,
            // FREEZE: the table was emptied in this transaction, so the rows can be written
            // frozen and all-visible; nobody reads or vacuums them again after the restore.
            &format!("COPY {table} {expected} FROM STDIN WITH (FREEZE)"),
            &what,
        )?;
        rows.insert(table, n);
    }
    if trailer.as_deref() != Some(hex::encode(hasher.finalize()).as_str()) {
        return Err(corrupt(
            "the file changed between verification and restore; nothing was restored",
        ));
    }
    rebuild_indexes(&mut tx, &indexes)?;
    for (table, (value, called)) in &header.sequences {
        tx.batch_execute(&setval_sql(table, *value, *called))
            .context("setting the id sequences")?;
    }
    tx.commit().context("committing the restore")?;
    Ok(rows)
}

/// A column definition line of pg_dump's `CREATE TABLE public.x (` block: (name, type).
fn column_definition(line: &str) -> Option<(String, String)> {
    let line = line.trim().trim_end_matches(',');
    if line.starts_with("CONSTRAINT ") || line.is_empty() {
        return None;
    }
    let (name, rest) = line.split_once(' ')?;
    let end = [" DEFAULT ", " NOT NULL", " COLLATE ", " GENERATED "]
        .iter()
        .filter_map(|k| rest.find(k))
        .min()
        .unwrap_or(rest.len());
    let ty = rest[..end].trim();
    (check_identifier(name).is_ok() && check_type(ty).is_ok())
        .then(|| (name.to_owned(), ty.to_owned()))
}

fn ident_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// pg_dump's `(id, prompt_text, ...)`.
fn dump_columns(cols: &str) -> Result<Vec<String>> {
    let inner = cols
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .ok_or_else(|| corrupt("malformed COPY column list"))?;
    inner
        .split(", ")
        .map(|c| check_identifier(c).map(|()| c.to_owned()))
        .collect()
}

fn current_columns(tx: &mut Transaction<'_>, table: &str) -> Result<Vec<String>> {
    Ok(tx
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .context("reading the table layout")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Restores the `jobs` and `download_queue` rows of a plain pg_dump of the replaced system.
///
/// Rows are staged in temporary tables (pg_dump writes download_queue before jobs, and the
/// oldest layout's statuses must be mapped), then inserted into the real tables.
pub fn restore_pg_dump(
    client: &mut Client,
    path: &Path,
    v: &Verified,
) -> Result<BTreeMap<String, u64>> {
    let mut tx = begin(client)?;
    tx.batch_execute("TRUNCATE TABLE download_queue, jobs")
        .context("emptying the owned tables")?;
    let mut lines = open(path)?;
    let mut hasher = Sha256::new();
    let mut definitions: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut in_create: Option<String> = None;
    let mut staged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sequences: BTreeMap<String, i64> = BTreeMap::new();
    while let Some(line) = lines.next_line()? {
        hasher.update(line);
        let s = text(line)?.trim_end_matches('\n').to_owned();
        if let Some(table) = &in_create {
            if s == ");" {
                in_create = None;
            } else if let Some(def) = column_definition(&s) {
                definitions.entry(table.clone()).or_default().push(def);
            }
            continue;
        }
        if let Some(t) = s
            .strip_prefix("CREATE TABLE public.")
            .and_then(|r| r.strip_suffix(" ("))
        {
            if DATA_TABLES.contains(&t) {
                in_create = Some(t.to_owned());
            }
            continue;
        }
        if let Some((table, value)) = parse_setval(&s) {
            sequences.insert(table, value);
            continue;
        }
        let Some((table, cols)) = copy_target(&s) else {
            continue;
        };
        if !DATA_TABLES.contains(&table) {
            skip_copy(&mut lines, &mut hasher)?;
            continue;
        }
        let table = table.to_owned();
        let cols = dump_columns(cols)?;
        stage_copy(
            &mut tx,
            &mut lines,
            &mut hasher,
            &table,
            &cols,
            &definitions,
        )?;
        staged.insert(table, cols);
    }
    if hex::encode(hasher.finalize()) != v.sha256 {
        return Err(corrupt(
            "the file changed between verification and restore; nothing was restored",
        ));
    }
    if !staged.contains_key("jobs") {
        return Err(Error::Backup(
            "the pg_dump file holds no COPY data for jobs (a --inserts or data-less dump?); \
             restore it with psql instead"
                .into(),
        ));
    }
    let indexes = set_aside_indexes(&mut tx)?;
    let rows = insert_staged(&mut tx, &staged)?;
    rebuild_indexes(&mut tx, &indexes)?;
    for table in DATA_TABLES {
        let value = sequences.get(table).copied().unwrap_or(1);
        tx.batch_execute(&setval_sql(table, value, true))
            .context("setting the id sequences")?;
    }
    tx.commit().context("committing the restore")?;
    Ok(rows)
}

/// Moves the staged rows into the real tables, parents first, mapping legacy statuses.
fn insert_staged(
    tx: &mut Transaction<'_>,
    staged: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, u64>> {
    let mut rows = BTreeMap::new();
    for table in DATA_TABLES {
        let Some(cols) = staged.get(table) else {
            continue;
        };
        let list = ident_list(cols);
        let select = cols
            .iter()
            .map(|c| {
                if table == "jobs" && c == "status" {
                    status_mapping()
                } else {
                    quote_ident(c)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let n = tx
            .execute(
                &format!("INSERT INTO {table} ({list}) SELECT {select} FROM jm_restore_{table}"),
                &[],
            )
            .context(&format!("restoring {table}"))?;
        rows.insert(table.to_owned(), n);
    }
    Ok(rows)
}

/// Stages one COPY block of the dump in a temporary table shaped like the real one, adding
/// the dump's columns that the schema lacks (with their types from the dump's CREATE TABLE).
fn stage_copy(
    tx: &mut Transaction<'_>,
    lines: &mut Lines<Box<dyn BufRead>>,
    hasher: &mut Sha256,
    table: &str,
    cols: &[String],
    definitions: &BTreeMap<String, Vec<(String, String)>>,
) -> Result<()> {
    // Columns of the dump that this schema lacks are added (additive: nothing is lost).
    let have = current_columns(tx, table)?;
    let missing: Vec<(String, String)> = cols
        .iter()
        .filter(|c| !have.contains(c))
        .map(|c| {
            definitions
                .get(table)
                .and_then(|defs| defs.iter().find(|(n, _)| n == c))
                .cloned()
                .ok_or_else(|| {
                    corrupt(format!(
                        "{table}.{c} is in the data but its type is not in the dump"
                    ))
                })
        })
        .collect::<Result<_>>()?;
    if !missing.is_empty() {
        tx.batch_execute(&add_columns_sql(table, &missing))
            .context("adding the dump's columns")?;
    }
    let stage = format!("jm_restore_{table}");
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
    ))
    .context("staging the dump's rows")?;
    let list = ident_list(cols);
    stream_copy(
        tx,
        lines,
        hasher,
        &format!("COPY {stage} ({list}) FROM STDIN"),
        &format!("reading {table} from the dump"),
    )?;
    Ok(())
}

fn skip_copy(lines: &mut Lines<Box<dyn BufRead>>, hasher: &mut Sha256) -> Result<()> {
    while let Some(line) = lines.next_line()? {
        hasher.update(line);
        if line == b"\\.\n" {
            return Ok(());
        }
    }
    Err(corrupt("the file ends inside a COPY block (truncated)"))
}

/// `SELECT pg_catalog.setval('public.jobs_id_seq', 3, true);` -> ("jobs", 3).
fn parse_setval(line: &str) -> Option<(String, i64)> {
    let rest = line.strip_prefix("SELECT pg_catalog.setval('public.")?;
    let (seq, rest) = rest.split_once("', ")?;
    let table = seq.strip_suffix("_id_seq")?;
    let value = rest.split(',').next()?.trim().parse().ok()?;
    DATA_TABLES
        .contains(&table)
        .then(|| (table.to_owned(), value))
}

fn status_mapping() -> String {
    let mut cases = String::new();
    for (old, new) in LEGACY_STATUS_MAP {
        let _ = write!(cases, " WHEN '{old}' THEN '{new}'");
    }
    format!("CASE \"status\"{cases} ELSE \"status\" END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_definitions_of_pg_dump() {
        assert_eq!(
            column_definition("    id integer NOT NULL,"),
            Some(("id".into(), "integer".into()))
        );
        assert_eq!(
            column_definition("    status text DEFAULT 'pending'::text NOT NULL,"),
            Some(("status".into(), "text".into()))
        );
        assert_eq!(
            column_definition("    submitted_at timestamp without time zone,"),
            Some(("submitted_at".into(), "timestamp without time zone".into()))
        );
        assert_eq!(
            column_definition("    CONSTRAINT jobs_check CHECK ((x))"),
            None
        );
        assert_eq!(column_definition("    evil text; DROP TABLE x,"), None);
    }

    #[test]
    fn setval_lines() {
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.jobs_id_seq', 3, true);"),
            Some(("jobs".into(), 3))
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.log_id_seq', 9, true);"),
            None
        );
    }

    #[test]
    fn status_mapping_covers_the_legacy_statuses() {
        let sql = status_mapping();
        for (old, new) in LEGACY_STATUS_MAP {
            assert!(sql.contains(&format!("WHEN '{old}' THEN '{new}'")));
        }
    }
}
