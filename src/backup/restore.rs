//! Restoring: in ONE transaction the owned tables are replaced by the file's rows and the
//! sequences set, or nothing changes. Nothing else in the database is touched.
//!
//! The file has been verified in full before this runs, through the same descriptor; the
//! restore reads it again with the same reader (every line parsed and checked again) and
//! compares the SHA-256 of what it loaded with the one verified before COMMIT, so a file
//! changed in between is refused. Rows are streamed, never held in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use postgres::{Client, Transaction};

use super::format::{
    add_columns_sql, copy_columns, corrupt, pinned_settings_sql, setval_sql, Column, Compression,
    NO_SERVER_TIMEOUTS_SQL, TRUNCATE_SQL,
};
use super::grammar::Ident;
use super::reader::{Auth, BackupFile, Event, Reader, Verified};
use crate::errors::{Error, Result};
use crate::model::LEGACY_STATUS_MAP;
use crate::pool::Context;

/// The triggers job_manager's schema puts on its tables. A restore's COPY would fire only
/// `job_manager_notify_insert` (V6); the restore sets it aside for the load and sends its
/// notifications itself ([`quiet_insert_notify`]): waiting consumers wake for the restored
/// pending jobs, and no row is changed.
const OUR_TRIGGERS: [&str; 4] = [
    "update_jobs_updated_at",
    "update_download_queue_updated_at",
    "job_manager_notify_insert",
    "job_manager_notify_requeue",
];

/// Starts the restore's transaction: session settings pinned as the backup's were, a bound on
/// lock waits, and the owned tables locked so nothing can change the checks below.
/// `replacing`: the rows are replaced (restore), not only added to (merge), so a table that
/// refers to them is in the way too.
pub(super) fn begin(client: &mut Client, replacing: bool) -> Result<Transaction<'_>> {
    let mut tx = client.transaction().context("starting the restore")?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '30s'; SET LOCAL client_min_messages = warning; {}
         SET LOCAL row_security = off; {NO_SERVER_TIMEOUTS_SQL}
         LOCK TABLE jobs, download_queue IN ACCESS EXCLUSIVE MODE;",
        pinned_settings_sql()
    ))
    .context("starting the restore")?;
    check_no_outside_effects(&mut tx, replacing)?;
    Ok(tx)
}

/// The safety backup of the rows a restore or import is about to change, written from its
/// own transaction after the owned tables are locked: no row can be added between the
/// safety backup and the load.
pub(super) fn safety_backup(
    tx: &mut Transaction<'_>,
    dir: Option<&Path>,
    auth: &Auth,
) -> Result<Option<PathBuf>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    super::files::ensure_dir(dir)?;
    let (path, _, _) = super::write_backup_file(tx, dir, Compression::None, auth, None)?;
    log::info!(
        "safety backup of the rows before the restore: {}",
        path.display()
    );
    Ok(Some(path))
}

/// A restore would change what it does not own if a table outside refers to the owned rows
/// or inherits from the owned tables (`replacing`: rows are deleted), or if a trigger, a rule
/// or an event trigger someone added would run on the load: it is refused before anything
/// changes, naming what is in the way.
pub fn check_no_outside_effects(
    client: &mut impl postgres::GenericClient,
    replacing: bool,
) -> Result<()> {
    if replacing {
        check_no_references(client)?;
        refuse_if_any(
            client,
            "SELECT format('%s inherits from %s', inhrelid::regclass::text,
                           inhparent::regclass::text)
             FROM pg_inherits
             WHERE inhparent IN ('jobs'::regclass, 'download_queue'::regclass) ORDER BY 1",
            "tables inherit from the owned tables",
            "a restore empties the owned tables only, but their children would then hold rows \
             no backup of job_manager holds; detach them first (ALTER TABLE ... NO INHERIT ...)",
        )?;
    }
    check_no_foreign_triggers(client)?;
    refuse_if_any(
        client,
        "SELECT format('%s on %s', rulename, ev_class::regclass::text) FROM pg_rewrite
         WHERE ev_class IN ('jobs'::regclass, 'download_queue'::regclass)
           AND rulename <> '_RETURN' ORDER BY 1",
        "the owned tables carry rules that job_manager did not create",
        "a restore would run them; drop them (DROP RULE ...) first",
    )?;
    refuse_if_any(
        client,
        "SELECT evtname::text FROM pg_event_trigger WHERE evtenabled <> 'D' ORDER BY 1",
        "the database has enabled event triggers",
        "they would run on the DDL a restore performs; disable them for the restore \
         (ALTER EVENT TRIGGER ... DISABLE)",
    )
}

/// Refuses when `sql` returns rows (one text column naming each obstacle).
fn refuse_if_any(
    client: &mut impl postgres::GenericClient,
    sql: &str,
    what: &str,
    fix: &str,
) -> Result<()> {
    let rows = client
        .query(sql, &[])
        .context("checking what a restore would touch")?;
    if rows.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Err(Error::Backup(format!(
        "restore refused, nothing was changed: {what} ({}); {fix}, then restore",
        list.join(", ")
    )))
}

/// No table job_manager does not own has a foreign key to the owned tables.
pub fn check_no_references(client: &mut impl postgres::GenericClient) -> Result<()> {
    let what = "checking what refers to the owned tables";
    let references = client
        .query(
            "SELECT format('%s (constraint %I on %s)', confrelid::regclass::text, conname,
                           conrelid::regclass::text)
             FROM pg_constraint
             WHERE contype = 'f'
               AND confrelid IN ('jobs'::regclass, 'download_queue'::regclass)
               AND conrelid NOT IN ('jobs'::regclass, 'download_queue'::regclass)
             ORDER BY 1",
            &[],
        )
        .context(what)?;
    if !references.is_empty() {
        let list: Vec<String> = references.iter().map(|r| r.get(0)).collect();
        return Err(Error::Backup(format!(
            "restore refused, nothing was changed: a table job_manager does not own refers to \
             its rows ({}); replacing them would change that table too. Drop or change that \
             foreign key first (ALTER TABLE ... DROP CONSTRAINT ...), then restore",
            list.join(", ")
        )));
    }
    Ok(())
}

/// No trigger job_manager did not create would fire when rows are loaded (a disabled one
/// would not).
pub fn check_no_foreign_triggers(client: &mut impl postgres::GenericClient) -> Result<()> {
    let what = "checking the owned tables' triggers";
    let triggers = client
        .query(
            "SELECT format('%s on %s', tgname, tgrelid::regclass::text) FROM pg_trigger
             WHERE tgrelid IN ('jobs'::regclass, 'download_queue'::regclass)
               AND NOT tgisinternal AND NOT (tgname::text = ANY ($1))
               -- only those that fire in this session: not disabled, and of its
               -- session_replication_role (ENABLE REPLICA fires only in 'replica')
               AND CASE current_setting('session_replication_role')
                       WHEN 'replica' THEN tgenabled IN ('R', 'A')
                       ELSE tgenabled IN ('O', 'A') END
             ORDER BY 1",
            &[&&OUR_TRIGGERS[..]],
        )
        .context(what)?;
    if !triggers.is_empty() {
        let list: Vec<String> = triggers.iter().map(|r| r.get(0)).collect();
        return Err(Error::Backup(format!(
            "restore refused, nothing was changed: the owned tables carry triggers that \
             job_manager did not create ({}), which a restore would fire; drop or disable them \
             (ALTER TABLE ... DISABLE TRIGGER ...) first, then restore",
            list.join(", ")
        )));
    }
    Ok(())
}

/// Sets the owned tables' constraints and indexes aside for the load and returns the
/// statements that put them back, in order: loading then indexing is much faster than
/// loading into indexes, and it is what pg_dump's files do. Foreign keys go first and come
/// back last (validating every row); primary and unique keys come back before the other
/// indexes, which are built in name order, as in pg_dump's files. (No table outside refers
/// to ours: [`check_no_outside_effects`] ran first.) All of it happens inside the restore's
/// transaction; the statements come from the server's own catalog functions.
fn set_aside_indexes(tx: &mut Transaction<'_>) -> Result<Vec<String>> {
    let what = "setting the indexes aside during the restore";
    // What a rebuild from pg_get_indexdef / pg_get_constraintdef would not carry over: then
    // the rows are loaded into the indexes as they are.
    let safe: bool = tx
        .query_one(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid IN ('jobs'::regclass, 'download_queue'::regclass)
                   AND (i.indisreplident OR i.indisclustered OR c.reltablespace <> 0
                        OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL))
             AND NOT EXISTS (
                 SELECT 1 FROM pg_constraint
                 WHERE conrelid IN ('jobs'::regclass, 'download_queue'::regclass)
                   AND obj_description(oid, 'pg_constraint') IS NOT NULL)
             AND NOT EXISTS (
                 SELECT 1 FROM pg_class
                 WHERE oid IN ('jobs'::regclass, 'download_queue'::regclass)
                   AND relreplident = 'i')",
            &[],
        )
        .context(what)?
        .get(0);
    if !safe {
        log::info!(
            "loading into the existing indexes: an index is clustered, a replica identity, in \
             its own tablespace or commented, which a rebuild would not keep"
        );
        return Ok(Vec::new());
    }
    let mut drops = Vec::new();
    let (mut keys, mut foreign) = (Vec::new(), Vec::new());
    for row in tx
        .query(
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid),
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
        drops.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
        let add = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}");
        if is_fk {
            foreign.push(add);
        } else {
            keys.push(add);
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

/// Sets V6's insert trigger aside for the load when it is on as job_manager created it
/// (`tgenabled = 'O'`), and returns whether it did. Left on, it would copy every loaded row
/// into its transition table (spilling the whole table to a temporary file) only to find
/// the job types with pending rows; [`notify_restored`] sends the same notifications from the
/// loaded table. A trigger the operator disabled, or set to fire always or on replicas only,
/// is left as it is. Inside the restore's transaction: a failed restore leaves it on.
fn quiet_insert_notify(tx: &mut Transaction<'_>) -> Result<bool> {
    let what = "setting the insert notification aside during the restore";
    let on: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'jobs'::regclass
                            AND tgname = 'job_manager_notify_insert' AND tgenabled = 'O')",
            &[],
        )
        .context(what)?
        .get(0);
    if on {
        tx.batch_execute("ALTER TABLE jobs DISABLE TRIGGER job_manager_notify_insert")
            .context(what)?;
    }
    Ok(on)
}

/// Puts back what [`quiet_insert_notify`] set aside and sends what the trigger would have
/// sent for the load: one notification per job type with pending rows, delivered at COMMIT.
/// The job types are found by skipping through the claim index (one probe per type), not by
/// reading the rows.
fn notify_restored(tx: &mut Transaction<'_>, was_on: bool) -> Result<()> {
    if !was_on {
        return Ok(());
    }
    tx.batch_execute(
        "ALTER TABLE jobs ENABLE TRIGGER job_manager_notify_insert;
         WITH RECURSIVE types(job_type) AS (
             (SELECT job_type FROM jobs WHERE status = 'pending' ORDER BY job_type LIMIT 1)
             UNION ALL
             SELECT (SELECT j.job_type FROM jobs j
                     WHERE j.status = 'pending' AND j.job_type > types.job_type
                     ORDER BY j.job_type LIMIT 1)
             FROM types WHERE types.job_type IS NOT NULL)
         SELECT pg_notify('job_manager_jobs', job_type) FROM types WHERE job_type IS NOT NULL",
    )
    .context("notifying waiting consumers of the restored jobs")
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

/// Streams the rows of the COPY block the reader just opened into `COPY sql FROM STDIN`;
/// returns the rows. Rows are gathered into 256 KiB blocks and sent a block at a time.
fn stream_copy(
    tx: &mut Transaction<'_>,
    reader: &mut Reader,
    sql: &str,
    what: &str,
) -> Result<u64> {
    const BLOCK: usize = 1 << 18;
    let mut writer = tx.copy_in(sql).context(what)?;
    let mut block = Vec::with_capacity(2 * BLOCK);
    loop {
        let event = reader.next_event()?;
        if event == Event::Row {
            block.extend_from_slice(reader.row());
        }
        if event != Event::Row || block.len() >= BLOCK {
            writer
                .write_all(&block)
                .map_err(|e| Error::Unavailable(format!("{what}: {e}")))?;
            block.clear();
        }
        match event {
            Event::Row => {}
            Event::CopyEnd => break,
            _ => return Err(corrupt("a COPY block does not end with \\.")),
        }
    }
    writer.finish().context(what)
}

/// The second pass must load exactly the bytes the first one verified.
pub(super) fn check_same_file(first: &Verified, second: &Verified) -> Result<()> {
    if first.sha256 == second.sha256 {
        Ok(())
    } else {
        Err(corrupt(
            "the file changed between verification and restore; nothing was restored",
        ))
    }
}

/// Restores a job_manager backup. The schema is current (migrations ran first).
pub fn restore_ours(
    client: &mut Client,
    file: &BackupFile,
    auth: &Auth,
    v: &Verified,
    safety_dir: Option<&Path>,
) -> Result<(BTreeMap<String, u64>, Option<PathBuf>)> {
    let header = &v.header;
    let mut tx = begin(client, true)?;
    let safety = safety_backup(&mut tx, safety_dir, auth)?;
    for (table, columns) in &header.columns {
        add_missing_columns(&mut tx, table, columns)?;
    }
    tx.batch_execute(TRUNCATE_SQL)
        .context("emptying the owned tables")?;
    let indexes = set_aside_indexes(&mut tx)?;
    let notify = quiet_insert_notify(&mut tx)?;
    let mut reader = file.reader_for_load(auth)?;
    let mut rows = BTreeMap::new();
    loop {
        match reader.next_event()? {
            Event::Copy { table, columns } => {
                // FREEZE: the table was emptied in this transaction, so the rows can be written
                // frozen and all-visible; nobody reads or vacuums them again after the restore.
                let sql = format!(
                    "COPY {table} {} FROM STDIN WITH (FREEZE)",
                    copy_columns(&columns)
                );
                let n = stream_copy(&mut tx, &mut reader, &sql, &format!("restoring {table}"))?;
                rows.insert(table.to_owned(), n);
            }
            Event::End => break,
            Event::Row | Event::CopyEnd => return Err(corrupt("COPY data outside a COPY block")),
        }
    }
    check_same_file(v, &reader.finish()?)?;
    rebuild_indexes(&mut tx, &indexes)?;
    notify_restored(&mut tx, notify)?;
    for (table, (value, called)) in &header.sequences {
        tx.batch_execute(&setval_sql(table, *value, *called))
            .context("setting the id sequences")?;
    }
    tx.commit().context("committing the restore")?;
    Ok((rows, safety))
}

/// Adds the columns of the file that the table lacks (only those: a statement that changes
/// nothing is not run).
fn add_missing_columns(tx: &mut Transaction<'_>, table: &str, columns: &[Column]) -> Result<()> {
    let have = current_columns(tx, table)?;
    let missing: Vec<Column> = columns
        .iter()
        .filter(|(name, _)| !have.iter().any(|h| h == name.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        tx.batch_execute(&add_columns_sql(table, &missing))
            .context("adding the file's columns")?;
    }
    Ok(())
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

/// Restores the `jobs` and `download_queue` rows of a plain pg_dump of the replaced system
/// (COPY or INSERT statements) or of a CSV export of jobs.
///
/// Rows are staged in temporary tables (pg_dump writes download_queue before jobs, and the
/// oldest layout's statuses must be mapped), then inserted into the real tables.
pub fn restore_staged(
    client: &mut Client,
    file: &BackupFile,
    auth: &Auth,
    v: &Verified,
    safety_dir: Option<&Path>,
) -> Result<(BTreeMap<String, u64>, Option<PathBuf>)> {
    if !v.rows.contains_key("jobs") {
        return Err(Error::Backup(
            "the file holds no rows for jobs; nothing was restored".into(),
        ));
    }
    let mut tx = begin(client, true)?;
    let safety = safety_backup(&mut tx, safety_dir, auth)?;
    tx.batch_execute(TRUNCATE_SQL)
        .context("emptying the owned tables")?;
    let (staged, sequences) = stage_file(&mut tx, file, auth, v)?;
    for table in staged.keys() {
        number_rows_without_id(&mut tx, table, 0)?;
    }
    let indexes = set_aside_indexes(&mut tx)?;
    let notify = quiet_insert_notify(&mut tx)?;
    let rows = insert_staged(&mut tx, &staged)?;
    rebuild_indexes(&mut tx, &indexes)?;
    notify_restored(&mut tx, notify)?;
    for table in super::format::DATA_TABLES {
        let value = sequences.get(table).copied().unwrap_or(1);
        tx.batch_execute(&setval_sql(table, value, true))
            .context("setting the id sequences")?;
    }
    tx.commit().context("committing the restore")?;
    Ok((rows, safety))
}

/// Gives the staged rows that have no id (a CSV without an `id` column) ids after `base` and
/// after every staged id, without drawing from the table's sequence: a refused load leaves
/// the sequence as it was. Returns nothing; the sequence is set once the rows are in.
pub(super) fn number_rows_without_id(
    tx: &mut Transaction<'_>,
    table: &str,
    base: i64,
) -> Result<()> {
    tx.batch_execute(&format!(
        "UPDATE jm_restore_{table} s SET id = n.id
         FROM (SELECT ctid AS row_ref,
                      GREATEST({base}, (SELECT coalesce(max(id), 0) FROM jm_restore_{table}))
                      + row_number() OVER (ORDER BY ctid) AS id
               FROM jm_restore_{table} WHERE id IS NULL) n
         WHERE s.ctid = n.row_ref"
    ))
    .context("numbering the rows without an id")
}

/// Reads the file again (the same descriptor) into temporary tables `jm_restore_<table>`,
/// checking that it is the file verified; returns the columns staged per table and the
/// sequences a pg_dump sets.
pub(super) fn stage_file(
    tx: &mut Transaction<'_>,
    file: &BackupFile,
    auth: &Auth,
    v: &Verified,
) -> Result<(Staged, BTreeMap<&'static str, i64>)> {
    let mut reader = file.reader_for_load(auth)?;
    let mut staged = Staged::new();
    loop {
        match reader.next_event()? {
            Event::Copy { table, columns } => {
                stage_copy(tx, &mut reader, v, table, &columns)?;
                staged.insert(table, columns);
            }
            Event::End => break,
            Event::Row | Event::CopyEnd => return Err(corrupt("COPY data outside a COPY block")),
        }
    }
    let sequences = reader.dump_sequences();
    check_same_file(v, &reader.finish()?)?;
    Ok((staged, sequences))
}

/// The columns staged per table.
pub(super) type Staged = BTreeMap<&'static str, Vec<Ident>>;

/// Moves the staged rows into the real tables, parents first, mapping legacy statuses.
fn insert_staged(
    tx: &mut Transaction<'_>,
    staged: &BTreeMap<&'static str, Vec<Ident>>,
) -> Result<BTreeMap<String, u64>> {
    let mut rows = BTreeMap::new();
    for table in super::format::DATA_TABLES {
        let Some(cols) = staged.get(table) else {
            continue;
        };
        let id = Ident::new("id").expect("a valid name");
        let cols: Vec<Ident> = std::iter::once(id.clone())
            .chain(cols.iter().filter(|c| **c != id).cloned())
            .collect();
        let list = copy_columns(&cols);
        let select = cols
            .iter()
            .map(|c| {
                if table == "jobs" && c.as_str() == "status" {
                    status_mapping()
                } else {
                    c.quoted()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let n = tx
            .execute(
                &format!("INSERT INTO {table} {list} SELECT {select} FROM jm_restore_{table}"),
                &[],
            )
            .context(&format!("restoring {table}"))?;
        rows.insert(table.to_owned(), n);
    }
    Ok(rows)
}

/// Stages one block of rows in a temporary table shaped like the real one, adding the file's
/// columns that the schema lacks: with their types from the dump's CREATE TABLE (parsed: only
/// built-in types are accepted), or, in a data-only dump, the type their values fit (see
/// `Verified::inferred`). A CSV's unknown column is refused.
fn stage_copy(
    tx: &mut Transaction<'_>,
    reader: &mut Reader,
    v: &Verified,
    table: &'static str,
    cols: &[Ident],
) -> Result<()> {
    let have = current_columns(tx, table)?;
    let missing = cols
        .iter()
        .filter(|c| !have.iter().any(|h| h == c.as_str()))
        .map(|c| {
            let guessed = [&v.header.columns, &v.inferred]
                .into_iter()
                .find_map(|known| known.get(table)?.iter().find(|(n, _)| n == c));
            match guessed {
                Some((_, ty)) => Ok((c.clone(), ty.clone())),
                None => Ok((c.clone(), reader.dump_column_type(table, c)?)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if !missing.is_empty() {
        tx.batch_execute(&add_columns_sql(table, &missing))
            .context("adding the dump's columns")?;
    }
    let stage = format!("jm_restore_{table}");
    // No id default: staging must never draw from the table's sequence.
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP;
         ALTER TABLE {stage} ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id DROP NOT NULL"
    ))
    .context("staging the file's rows")?;
    stream_copy(
        tx,
        reader,
        &format!("COPY {stage} {} FROM STDIN", copy_columns(cols)),
        &format!("reading {table} from the dump"),
    )?;
    Ok(())
}

pub(super) fn status_mapping() -> String {
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
    fn status_mapping_covers_the_legacy_statuses() {
        let sql = status_mapping();
        for (old, new) in LEGACY_STATUS_MAP {
            assert!(sql.contains(&format!("WHEN '{old}' THEN '{new}'")));
        }
    }
}
