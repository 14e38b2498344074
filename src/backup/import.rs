//! `import_jobs`: bring historical rows into a queue that is in use.
//!
//! Any file the readers accept (our backups, pg_dump files with COPY or INSERT statements, a
//! CSV export of jobs) is staged into temporary tables, in one transaction, from the same
//! descriptor that was verified. Merging adds the jobs whose prompts are not queued yet (the
//! old id where it is free, a new one from the sequence where it is taken), re-points their
//! downloads to the new ids, and leaves every existing row as it was. Replacing is a restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use postgres::{Client, Transaction};

use super::format::setval_sql;
use super::grammar::Ident;
use super::reader::{Auth, BackupFile, Verified};
use super::restore::{self, status_mapping};
use super::Kind;
use crate::errors::{Error, Result};
use crate::pool::{Context, LazyPool};
use crate::schema::{self, InitOptions};

/// How an import treats the rows already in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Add the file's jobs whose prompts are not present; touch nothing that is.
    Merge,
    /// Replace every row (a restore).
    Replace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Merge => "merge",
            Mode::Replace => "replace",
        }
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportInfo {
    pub path: PathBuf,
    pub mode: Mode,
    pub kind: Kind,
    /// Rows added per table.
    pub added: BTreeMap<String, u64>,
    /// Rows of the file not added per table: jobs whose prompt was present (or repeated in
    /// the file), downloads of such jobs.
    pub skipped: BTreeMap<String, u64>,
    /// Rows added under a new id because their id was taken.
    pub remapped: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub safety_backup: Option<PathBuf>,
}

/// Imports `path` in `mode` (see the module documentation).
pub fn import_jobs(
    pool: &LazyPool,
    path: &Path,
    mode: Mode,
    safety_dir: Option<&Path>,
    auth: &Auth,
) -> Result<ImportInfo> {
    if mode == Mode::Replace {
        let r = super::restore_database(pool, path, safety_dir, auth)?;
        return Ok(ImportInfo {
            path: r.path,
            mode,
            kind: r.kind,
            added: r.rows,
            skipped: BTreeMap::new(),
            remapped: BTreeMap::new(),
            duration_s: r.duration_s,
            safety_backup: r.safety_backup,
        });
    }
    let started = Instant::now();
    let file = BackupFile::open(path)?;
    let verified = file.verify(auth)?;
    pool.run(|c| {
        if super::owned_tables_exist(c.client())? {
            restore::check_no_outside_effects(c.client(), false)?;
        }
        Ok(())
    })?;
    pool.run_long(|c| schema::init_database(c.client(), InitOptions::default()))?;
    let (added, skipped, remapped, safety_backup) =
        pool.run_long(|c| merge(c.client(), &file, auth, &verified, safety_dir))?;
    super::analyze_loaded(pool)?;
    let duration_s = started.elapsed().as_secs_f64();
    log::info!(
        "imported {} (merge) in {duration_s:.1}s: added {added:?}, skipped {skipped:?}, \
         new ids {remapped:?}",
        path.display()
    );
    Ok(ImportInfo {
        path: path.to_path_buf(),
        mode,
        kind: verified.kind,
        added,
        skipped,
        remapped,
        duration_s,
        safety_backup,
    })
}

type Counts = BTreeMap<String, u64>;

/// What a merge added, skipped and gave new ids, per table.
#[derive(Default)]
struct Tally {
    added: Counts,
    skipped: Counts,
    remapped: Counts,
}

impl Tally {
    /// Inserts a table's staged rows through its id map (`jm_job_map`, `jm_download_map`)
    /// and counts what happened to the `staged` rows.
    fn load(
        &mut self,
        tx: &mut Transaction<'_>,
        table: &str,
        cols: &[Ident],
        staged: u64,
        what: &str,
    ) -> Result<()> {
        let map = if table == "jobs" {
            "jm_job_map"
        } else {
            "jm_download_map"
        };
        let n = insert_mapped(tx, table, cols, map, what)?;
        let remapped = count(
            tx,
            &format!("SELECT count(*) FROM {map} WHERE old_id IS DISTINCT FROM new_id"),
            what,
        )?;
        self.added.insert(table.into(), n);
        self.skipped.insert(table.into(), staged - n);
        self.remapped.insert(table.into(), remapped);
        Ok(())
    }
}

fn merge(
    client: &mut Client,
    file: &BackupFile,
    auth: &Auth,
    v: &Verified,
    safety_dir: Option<&Path>,
) -> Result<(Counts, Counts, Counts, Option<PathBuf>)> {
    let mut tx = restore::begin(client, false)?;
    let safety = restore::safety_backup(&mut tx, safety_dir, auth)?;
    let (staged, _sequences) = restore::stage_file(&mut tx, file, auth, v)?;
    let Some(job_cols) = staged.get("jobs") else {
        return Err(Error::Backup("the file holds no rows for jobs".into()));
    };
    let what = "merging the file's jobs";
    let staged_jobs = count(&mut tx, "SELECT count(*) FROM jm_restore_jobs", what)?;
    // New ids come after every id in the table, in the file and ever drawn from the
    // sequence, so an id kept from the file never meets a new one; the sequence itself is
    // moved only once the rows are in, never by a merge that is refused.
    let base = id_base(&mut tx, "jobs", true, what)?;
    restore::number_rows_without_id(&mut tx, "jobs", base)?;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE jm_job_map ON COMMIT DROP AS
         WITH fresh AS (
             SELECT DISTINCT ON (s.prompt_text) s.ctid AS row_ref, s.id AS old_id
             FROM jm_restore_jobs s
             WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.prompt_text = s.prompt_text)
             ORDER BY s.prompt_text, s.id
         ), ranked AS (
             SELECT row_ref, old_id,
                    row_number() OVER (PARTITION BY old_id ORDER BY row_ref) AS n
             FROM fresh
         )
         , decided AS (
             SELECT row_ref, old_id,
                    (n = 1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = old_id)) AS keep
             FROM ranked
         )
         SELECT row_ref, old_id,
                CASE WHEN keep THEN old_id
                     ELSE ({base} + row_number() OVER (PARTITION BY keep ORDER BY row_ref))::integer
                END AS new_id
         FROM decided"
    ))
    .context(what)?;
    let mut tally = Tally::default();
    tally.load(&mut tx, "jobs", job_cols, staged_jobs, what)?;
    if let Some(dl_cols) = staged.get("download_queue") {
        let what = "merging the file's downloads";
        let staged_dls = count(
            &mut tx,
            "SELECT count(*) FROM jm_restore_download_queue",
            what,
        )?;
        let base = id_base(&mut tx, "download_queue", true, what)?;
        restore::number_rows_without_id(&mut tx, "download_queue", base)?;
        // Only the downloads of jobs this import added, pointed at those jobs' new ids.
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE jm_download_map ON COMMIT DROP AS
             WITH jobs_added AS (
                 SELECT DISTINCT ON (old_id) old_id, new_id FROM jm_job_map
                 WHERE old_id IS NOT NULL ORDER BY old_id, new_id
             ), fresh AS (
                 SELECT d.ctid AS row_ref, d.id AS old_id, m.new_id AS job_id,
                        row_number() OVER (PARTITION BY d.id ORDER BY d.ctid) AS n
                 FROM jm_restore_download_queue d JOIN jobs_added m ON m.old_id = d.job_id
             )
             , decided AS (
                 SELECT row_ref, old_id, job_id,
                        (n = 1 AND NOT EXISTS (SELECT 1 FROM download_queue q
                                               WHERE q.id = old_id)) AS keep
                 FROM fresh
             )
             SELECT row_ref, old_id, job_id,
                    CASE WHEN keep THEN old_id
                         ELSE ({base} + row_number() OVER (PARTITION BY keep ORDER BY row_ref))::integer
                    END AS new_id
             FROM decided"
        ))
        .context(what)?;
        tally.load(&mut tx, "download_queue", dl_cols, staged_dls, what)?;
    }
    // Never backwards: ids drawn before stay drawn (a deleted job's id is not handed out again).
    for table in ["jobs", "download_queue"] {
        let last = id_base(&mut tx, table, false, "setting the id sequences")?;
        tx.batch_execute(&setval_sql(table, last, true))
            .context("setting the id sequences")?;
    }
    tx.commit().context("committing the import")?;
    Ok((tally.added, tally.skipped, tally.remapped, safety))
}

/// The largest id in the table, in its sequence's past and (with `staged`) in the file.
fn id_base(tx: &mut Transaction<'_>, table: &str, staged: bool, what: &str) -> Result<i64> {
    let stage = if staged {
        format!("(SELECT max(id) FROM jm_restore_{table})")
    } else {
        "0".to_owned()
    };
    let sql = format!(
        "SELECT GREATEST(
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 0),
             (SELECT coalesce(max(id), 0) FROM {table}),
             coalesce({stage}, 0))::bigint"
    );
    Ok(tx.query_one(&sql, &[]).context(what)?.get(0))
}

/// `INSERT INTO table (id, cols...) SELECT map.new_id, ... FROM stage JOIN map`: the file's
/// columns by their quoted names, the id (and a download's job id) from the map, legacy
/// statuses mapped.
fn insert_mapped(
    tx: &mut Transaction<'_>,
    table: &str,
    cols: &[Ident],
    map: &str,
    what: &str,
) -> Result<u64> {
    let mut names = vec!["\"id\"".to_owned()];
    let mut values = vec!["m.new_id".to_owned()];
    for c in cols.iter().filter(|c| c.as_str() != "id") {
        names.push(c.quoted());
        values.push(match (table, c.as_str()) {
            ("jobs", "status") => status_mapping().replace("\"status\"", "s.\"status\""),
            ("download_queue", "job_id") => "m.job_id".to_owned(),
            _ => format!("s.{}", c.quoted()),
        });
    }
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM jm_restore_{table} s JOIN {map} m \
         ON s.ctid = m.row_ref",
        names.join(", "),
        values.join(", ")
    );
    tx.execute(&sql, &[]).context(what)
}

fn count(tx: &mut Transaction<'_>, sql: &str, what: &str) -> Result<u64> {
    let n: i64 = tx.query_one(sql, &[]).context(what)?.get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}
