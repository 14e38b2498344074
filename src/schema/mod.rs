//! Versioned, embedded, additive schema migrations.
//!
//! Migrations are `migrations/V{n}__{name}.sql`, compiled into the wheel. Each applied one is
//! recorded in `job_manager_schema_history` with the SHA-256 of its text; an applied migration
//! whose text changed is an error, never a silent re-run. A run is one transaction holding a
//! transaction-level advisory lock, so any number of processes may call `init_database` at once:
//! one applies, the others wait and find nothing left to do. DDL runs under a `lock_timeout`, so
//! a table held by another session gives a clear error instead of queueing every later query.

use std::time::{Duration, Instant};

use postgres::{Client, Transaction};
use sha2::{Digest, Sha256};

use crate::errors::{Error, Result};
use crate::model::{check_text, JobStatus, LEGACY_STATUS_MAP};
use crate::pool::{Context, LazyPool};

/// The table that records applied migrations.
pub const HISTORY_TABLE: &str = "job_manager_schema_history";

/// Key of the advisory lock held while migrating ("job_mgr_" in ASCII).
const LOCK_KEY: i64 = 0x6a6f_625f_6d67_725f;

/// Code run inside the migration's transaction, before its SQL.
type Hook = fn(&mut Transaction<'_>) -> Result<()>;

/// One embedded migration.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    hook: Option<Hook>,
}

impl Migration {
    /// `V{version}__{name}`, as the file is named.
    pub fn label(&self) -> String {
        format!("V{}__{}", self.version, self.name)
    }

    /// SHA-256 of the SQL text, hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Every migration, in order.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "baseline",
        sql: include_str!("migrations/V1__baseline.sql"),
        hook: None,
    },
    Migration {
        version: 2,
        name: "job_status_values",
        sql: include_str!("migrations/V2__job_status_values.sql"),
        hook: Some(map_legacy_statuses),
    },
    Migration {
        version: 3,
        name: "queue_indexes_and_error_message",
        sql: include_str!("migrations/V3__queue_indexes_and_error_message.sql"),
        hook: None,
    },
    Migration {
        version: 4,
        name: "queue_autovacuum",
        sql: include_str!("migrations/V4__queue_autovacuum.sql"),
        hook: None,
    },
    Migration {
        version: 5,
        name: "claim_token",
        sql: include_str!("migrations/V5__claim_token.sql"),
        hook: None,
    },
    Migration {
        version: 6,
        name: "notify_pending",
        sql: include_str!("migrations/V6__notify_pending.sql"),
        hook: None,
    },
    Migration {
        version: 7,
        name: "dashboard_indexes",
        sql: include_str!("migrations/V7__dashboard_indexes.sql"),
        hook: None,
    },
];

/// The newest version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// A row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: String,
    pub checksum: String,
}

/// How long `init_database` may wait, for the migration lock and for table locks.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    /// Longest wait for another process's migration run to finish.
    pub migration_lock_wait: Duration,
    /// Longest wait for a lock on a table that DDL needs (PostgreSQL `lock_timeout`).
    pub lock_timeout: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            migration_lock_wait: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// What the history says must still run. Errors when an applied migration was changed.
pub fn plan<'a>(
    applied: &[AppliedMigration],
    known: &'a [Migration],
) -> Result<Vec<&'a Migration>> {
    for row in applied {
        match known.iter().find(|m| m.version == row.version) {
            Some(m) if m.checksum() != row.checksum => {
                return Err(Error::Schema(format!(
                    "migration {} was changed after it was applied to this database (checksum \
                     {} recorded, {} embedded); install the job_manager version that applied \
                     it, or restore the migration's original text",
                    m.label(),
                    short(&row.checksum),
                    short(&m.checksum())
                )));
            }
            Some(_) => {}
            None => log::warn!(
                "the database has migration V{}__{} which this job_manager does not know; \
                 it was applied by a newer version",
                row.version,
                row.name
            ),
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// The applied migrations, or `None` when the history table does not exist.
pub fn read_history(
    client: &mut impl postgres::GenericClient,
) -> Result<Option<Vec<AppliedMigration>>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('job_manager_schema_history') IS NOT NULL",
            &[],
        )
        .context("reading the schema history")?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM job_manager_schema_history ORDER BY version",
            &[],
        )
        .context("reading the schema history")?;
    Ok(Some(
        rows.iter()
            .map(|r| AppliedMigration {
                version: r.get(0),
                name: r.get(1),
                checksum: r.get(2),
            })
            .collect(),
    ))
}

/// Migrations that `init_database` would apply now.
pub fn pending(client: &mut Client) -> Result<Vec<String>> {
    pending_after(&read_history(client)?.unwrap_or_default())
}

/// Labels of the migrations still to apply after `applied`.
pub fn pending_after(applied: &[AppliedMigration]) -> Result<Vec<String>> {
    Ok(plan(applied, MIGRATIONS)?
        .iter()
        .map(|m| m.label())
        .collect())
}

/// Whether a table of this name exists in the current schema. The name is a parameter: any
/// string is just a name, which may not exist.
pub fn table_exists(pool: &LazyPool, name: &str) -> Result<bool> {
    check_text("table_name", name)?;
    pool.run(|c| {
        let row = c
            .query_one(
                "SELECT EXISTS (
                     SELECT 1 FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relname::text = $1::text
                       AND c.relkind IN ('r', 'p'))",
                &[&name],
            )
            .context("checking whether a table exists")?;
        Ok(row.get(0))
    })
}

/// Applies what is missing; returns the labels of the migrations applied (empty when current).
pub fn init_database(client: &mut Client, options: InitOptions) -> Result<Vec<String>> {
    // Fast path, no lock: the schema is current.
    if let Some(applied) = read_history(client)? {
        if plan(&applied, MIGRATIONS)?.is_empty() {
            log::debug!("schema is current (V{})", latest_version());
            return Ok(Vec::new());
        }
    }

    let mut tx = client
        .transaction()
        .context("starting the migration transaction")?;
    set_lock_timeout(&mut tx, options.migration_lock_wait)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .map_err(
            |e| match Error::from_postgres("waiting for another init_database run", &e) {
                Error::Schema(_) => Error::Schema(format!(
                    "another process has been running init_database for more than {}s; retry \
                 when it has finished",
                    options.migration_lock_wait.as_secs()
                )),
                other => other,
            },
        )?;
    set_lock_timeout(&mut tx, options.lock_timeout)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS job_manager_schema_history (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             execution_ms integer NOT NULL
         )",
    )
    .context("creating the schema history table")?;

    // Under the lock, with a fresh snapshot: what is still missing?
    let applied = read_history(&mut tx)?.unwrap_or_default();
    let todo = plan(&applied, MIGRATIONS)?;
    let mut labels = Vec::with_capacity(todo.len());
    for m in todo {
        let label = m.label();
        let started = Instant::now();
        if let Some(hook) = m.hook {
            hook(&mut tx)?;
        }
        tx.batch_execute(m.sql)
            .context(&format!("applying migration {label}"))?;
        let ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO job_manager_schema_history (version, name, checksum, execution_ms)
             VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &m.checksum(), &ms],
        )
        .context(&format!("recording migration {label}"))?;
        log::info!("applied migration {label} in {ms} ms");
        labels.push(label);
    }
    tx.commit().context("committing the migrations")?;
    Ok(labels)
}

fn set_lock_timeout(tx: &mut Transaction<'_>, wait: Duration) -> Result<()> {
    // SET does not take parameters; the value is a number we format ourselves.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        wait.as_millis().max(1)
    ))
    .context("setting lock_timeout")
}

/// V2's hook: lift the old status constraint and map the oldest layout's statuses.
fn map_legacy_statuses(tx: &mut Transaction<'_>) -> Result<()> {
    tx.batch_execute("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check")
        .context("lifting the old jobs status constraint")?;
    // A mapped row keeps its updated_at: it tells reset_stuck_jobs how long a job has been
    // stuck, and the mapping is not an event in the job's life.
    let trigger: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger
                            WHERE tgrelid = 'jobs'::regclass AND tgname = 'update_jobs_updated_at')",
            &[],
        )
        .context("looking for the updated_at trigger")?
        .get(0);
    if trigger {
        tx.batch_execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
            .context("pausing the updated_at trigger")?;
    }
    for (old, new) in LEGACY_STATUS_MAP {
        let n = tx
            .execute(
                "UPDATE jobs SET status = $1 WHERE status = $2",
                &[&new.as_str(), old],
            )
            .context(&format!("mapping legacy status {old}"))?;
        if n > 0 {
            log::info!("mapped {n} jobs from legacy status '{old}' to '{new}'");
        }
    }
    if trigger {
        tx.batch_execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")
            .context("resuming the updated_at trigger")?;
    }
    let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let unknown = tx
        .query(
            "SELECT status, count(*) FROM jobs WHERE NOT (status = ANY($1)) GROUP BY status",
            &[&known],
        )
        .context("checking job statuses")?;
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|r| format!("'{}' ({} rows)", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        return Err(Error::Schema(format!(
            "jobs has statuses job_manager does not know: {}; update them to one of {} and run \
             init_database again (nothing was changed)",
            list.join(", "),
            known.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(m: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: m.version,
            name: m.name.to_owned(),
            checksum: m.checksum(),
        }
    }

    #[test]
    fn versions_are_contiguous_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(m.version).unwrap(), i + 1, "{}", m.label());
        }
        assert_eq!(latest_version(), 7);
    }

    #[test]
    fn labels_match_the_embedded_file_names() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/schema/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let labels: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.label()))
            .collect();
        assert_eq!(files, labels);
    }

    #[test]
    fn checksums_are_stable_sha256() {
        for m in MIGRATIONS {
            assert_eq!(m.checksum().len(), 64);
            assert_eq!(m.checksum(), m.checksum());
        }
        let a = Migration {
            version: 9,
            name: "x",
            sql: "SELECT 1",
            hook: None,
        };
        assert_eq!(
            a.checksum(),
            "e004ebd5b5532a4b85984a62f8ad48a81aa3460c1ca07701f386135d72cdecf5"
        );
    }

    #[test]
    fn plan_on_empty_history_is_everything() {
        let todo = plan(&[], MIGRATIONS).unwrap();
        assert_eq!(todo.len(), MIGRATIONS.len());
    }

    #[test]
    fn plan_skips_applied_and_keeps_order() {
        let todo = plan(&[applied(&MIGRATIONS[0])], MIGRATIONS).unwrap();
        let versions: Vec<i32> = todo.iter().map(|m| m.version).collect();
        let expected: Vec<i32> = MIGRATIONS[1..].iter().map(|m| m.version).collect();
        assert_eq!(versions, expected);
        assert_eq!(versions.first(), Some(&2));
        let all: Vec<_> = MIGRATIONS.iter().map(applied).collect();
        assert!(plan(&all, MIGRATIONS).unwrap().is_empty());
    }

    #[test]
    fn a_changed_applied_migration_is_an_error() {
        let mut row = applied(&MIGRATIONS[1]);
        row.checksum = "0".repeat(64);
        let err = plan(&[row], MIGRATIONS).unwrap_err();
        assert!(matches!(err, Error::Schema(_)));
        assert!(err.to_string().contains("V2__job_status_values"), "{err}");
    }

    #[test]
    fn unknown_newer_migrations_are_tolerated() {
        let mut all: Vec<_> = MIGRATIONS.iter().map(applied).collect();
        all.push(AppliedMigration {
            version: 99,
            name: "future".into(),
            checksum: "f".into(),
        });
        assert!(plan(&all, MIGRATIONS).unwrap().is_empty());
    }
}
