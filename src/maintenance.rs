//! Database upkeep and monitoring: ANALYZE/VACUUM of the owned tables, sizes, per-table
//! health, and one JSON-serialisable health report with human-readable problems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup;
use crate::errors::{Error, Result};
use crate::pool::{Context, LazyPool};
use crate::schema;
use crate::stats::{self, JobStats};

/// The tables job_manager owns, maintained by analyze/vacuum.
pub const OWNED_TABLES: [&str; 3] = ["jobs", "download_queue", schema::HISTORY_TABLE];

/// Runs `ANALYZE` on each owned table (`only`: just these; an error names any other); returns
/// the tables analyzed. `dry_run`: run nothing and return the tables it would analyze.
pub fn analyze_tables(
    pool: &LazyPool,
    only: Option<&[String]>,
    dry_run: bool,
) -> Result<Vec<String>> {
    check_owned(only)?;
    each_table(pool, "ANALYZE", only, dry_run)
}

fn check_owned(only: Option<&[String]>) -> Result<()> {
    if let Some(other) = only
        .unwrap_or_default()
        .iter()
        .find(|n| !OWNED_TABLES.contains(&n.as_str()))
    {
        return Err(Error::invalid(format!(
            "{other:?} is not a table job_manager owns; choose from {}",
            OWNED_TABLES.join(", ")
        )));
    }
    Ok(())
}

/// Runs `VACUUM (ANALYZE)` on each owned table (`VACUUM (FULL, ANALYZE)` with `full`, which
/// rewrites the table under an exclusive lock).
///
/// `only`: just these owned tables (an error names any other); `dry_run`: run nothing and
/// return the tables it would vacuum.
pub fn vacuum_tables(
    pool: &LazyPool,
    full: bool,
    only: Option<&[String]>,
    dry_run: bool,
) -> Result<Vec<String>> {
    check_owned(only)?;
    let command = if full {
        "VACUUM (FULL, ANALYZE)"
    } else {
        "VACUUM (ANALYZE)"
    };
    each_table(pool, command, only, dry_run)
}

/// Whether the current role may ANALYZE/VACUUM `table`: its owner (or a member of the
/// owning role), a superuser, or (PostgreSQL 17+) a role granted MAINTAIN on it. For any other
/// role PostgreSQL only warns and skips, so such a table is left out of what is reported done.
fn may_maintain(pool: &LazyPool, table: &str) -> Result<bool> {
    pool.run(|c| {
        Ok(c.query_one(
            "SELECT pg_has_role(c.relowner, 'USAGE')
                 OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                 OR CASE WHEN current_setting('server_version_num')::int >= 170000
                         THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&table],
        )
        .context("checking who may maintain the tables")?
        .get(0))
    })
}

fn each_table(
    pool: &LazyPool,
    command: &str,
    only: Option<&[String]>,
    dry_run: bool,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for table in OWNED_TABLES {
        if only.is_some_and(|names| !names.iter().any(|n| n == table)) {
            continue;
        }
        if !schema::table_exists(pool, table)? {
            continue;
        }
        if !may_maintain(pool, table)? {
            log::warn!(
                "{command} {table} skipped: only its owner (or, from PostgreSQL 17, a role \
                 granted MAINTAIN) may run it; autovacuum still does"
            );
            continue;
        }
        if dry_run {
            done.push(table.to_owned());
            continue;
        }
        // VACUUM cannot run in a transaction block: one simple statement at a time.
        pool.run(|c| {
            c.client()
                .batch_execute(&format!("{command} {table}"))
                .context(&format!("{command} {table}"))
        })?;
        done.push(table.to_owned());
    }
    if dry_run {
        log::info!(
            "{command} (dry run, nothing ran) would run on: {}",
            done.join(", ")
        );
    } else {
        log::info!("{command}: {}", done.join(", "));
    }
    Ok(done)
}

/// `pg_database_size` of the current database, in bytes.
pub fn database_size(pool: &LazyPool) -> Result<i64> {
    pool.run(|c| {
        Ok(
            c.query_one("SELECT pg_database_size(current_database())", &[])
                .context("reading the database size")?
                .get(0),
        )
    })
}

/// One index of a table.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    pub name: String,
    pub scans: i64,
    pub bytes: i64,
}

/// Size and upkeep of one owned table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    pub table: String,
    /// The planner's estimate (None before the first ANALYZE).
    pub rows_estimate: Option<i64>,
    /// `count(*)`, only when asked for (it reads the whole table).
    pub rows_exact: Option<i64>,
    pub total_bytes: i64,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    pub last_vacuum: Option<DateTime<Utc>>,
    pub last_autovacuum: Option<DateTime<Utc>>,
    pub last_analyze: Option<DateTime<Utc>>,
    pub last_autoanalyze: Option<DateTime<Utc>>,
    /// Index scans per index: an index never scanned stands out.
    pub indexes: Vec<IndexStats>,
}

pub fn table_stats(pool: &LazyPool, exact: bool) -> Result<Vec<TableStats>> {
    let mut out = Vec::new();
    for table in OWNED_TABLES {
        if !schema::table_exists(pool, table)? {
            continue;
        }
        out.push(pool.run(|c| {
            let what = "reading table statistics";
            let r = c
                .query_one(
                    "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid),
                            pg_relation_size(c.oid), pg_indexes_size(c.oid),
                            s.n_live_tup, s.n_dead_tup, s.last_vacuum, s.last_autovacuum,
                            s.last_analyze, s.last_autoanalyze
                     FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                     WHERE c.oid = $1::text::regclass",
                    &[&table],
                )
                .context(what)?;
            let estimate: i64 = r.get(0);
            let rows_exact = if exact {
                Some(
                    c.client()
                        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                        .context(what)?
                        .get(0),
                )
            } else {
                None
            };
            let indexes = c
                .query(
                    "SELECT indexrelname::text, idx_scan, pg_relation_size(indexrelid)
                     FROM pg_stat_user_indexes WHERE relid = $1::text::regclass
                     ORDER BY indexrelname",
                    &[&table],
                )
                .context(what)?
                .iter()
                .map(|i| IndexStats {
                    name: i.get(0),
                    scans: i.get(1),
                    bytes: i.get(2),
                })
                .collect();
            Ok(TableStats {
                table: table.to_owned(),
                rows_estimate: (estimate >= 0).then_some(estimate),
                rows_exact,
                total_bytes: r.get(1),
                table_bytes: r.get(2),
                index_bytes: r.get(3),
                live_tuples: r.get(4),
                dead_tuples: r.get(5),
                last_vacuum: r.get(6),
                last_autovacuum: r.get(7),
                last_analyze: r.get(8),
                last_autoanalyze: r.get(9),
                indexes,
            })
        })?);
    }
    Ok(out)
}

/// The largest threshold accepted (seconds: about 31,700 years), so that no value can
/// overflow PostgreSQL's interval arithmetic.
pub const MAX_THRESHOLD: f64 = 1e12;

/// Limits beyond which the health report lists a problem. Every field can be overridden.
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    /// A job processing for longer than this is stuck.
    pub stuck_after_s: f64,
    /// The oldest pending job should not wait longer than this.
    pub max_pending_age_s: f64,
    /// Downloads that used all their attempts, tolerated.
    pub max_exhausted_downloads: f64,
    /// The newest backup should be younger than this.
    pub max_backup_age_s: f64,
    /// Dead tuples as a share of live + dead, above which a table wants VACUUM...
    pub max_dead_ratio: f64,
    /// ...once it has at least this many dead tuples.
    pub min_dead_tuples: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            stuck_after_s: 3600.0,
            max_pending_age_s: 86_400.0,
            max_exhausted_downloads: 0.0,
            max_backup_age_s: 26.0 * 3600.0,
            max_dead_ratio: 0.2,
            min_dead_tuples: 1000.0,
        }
    }
}

impl Thresholds {
    /// Applies overrides by name; an unknown name or a negative value is an error.
    pub fn with_overrides(mut self, overrides: &BTreeMap<String, f64>) -> Result<Self> {
        for (key, value) in overrides {
            if !(value.is_finite() && (0.0..=MAX_THRESHOLD).contains(value)) {
                return Err(Error::invalid(format!(
                    "threshold {key} must be a number from 0 to {MAX_THRESHOLD:e}, got {}",
                    crate::logs::shown_number(*value)
                )));
            }
            let slot = match key.as_str() {
                "stuck_after_s" => &mut self.stuck_after_s,
                "max_pending_age_s" => &mut self.max_pending_age_s,
                "max_exhausted_downloads" => &mut self.max_exhausted_downloads,
                "max_backup_age_s" => &mut self.max_backup_age_s,
                "max_dead_ratio" => &mut self.max_dead_ratio,
                "min_dead_tuples" => &mut self.min_dead_tuples,
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown threshold {key:?}; known: stuck_after_s, max_pending_age_s, \
                         max_exhausted_downloads, max_backup_age_s, max_dead_ratio, \
                         min_dead_tuples"
                    )))
                }
            };
            *slot = *value;
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DownloadHealth {
    pub pending: i64,
    pub failed: i64,
    /// Pending or failed downloads that used all their attempts.
    pub exhausted: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaHealth {
    pub version: Option<i32>,
    pub latest: i32,
    pub pending_migrations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupHealth {
    pub dir: PathBuf,
    pub newest: Option<PathBuf>,
    pub age_s: Option<f64>,
    pub verified: Option<bool>,
    pub problem: Option<String>,
    pub count: usize,
}

/// Everything an operator wants at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub generated_at: DateTime<Utc>,
    pub jobs: JobStats,
    pub jobs_total: i64,
    pub oldest_pending_age_s: Option<f64>,
    pub stuck_processing: i64,
    pub downloads: DownloadHealth,
    pub database_size_bytes: i64,
    pub tables: Vec<TableStats>,
    pub schema: SchemaHealth,
    pub backup: Option<BackupHealth>,
    pub thresholds: Thresholds,
    pub problems: Vec<String>,
}

fn hours(s: f64) -> String {
    format!("{:.1}h", s / 3600.0)
}

pub fn health_report(
    pool: &LazyPool,
    backup_dir: Option<&Path>,
    thresholds: Thresholds,
) -> Result<HealthReport> {
    let mut problems = Vec::new();
    let applied = pool.run(|c| schema::read_history(c.client()))?;
    let version = applied
        .as_ref()
        .and_then(|h| h.iter().map(|m| m.version).max());
    let pending_migrations = schema::pending_after(applied.as_deref().unwrap_or_default())?;
    let ready =
        schema::table_exists(pool, "jobs")? && schema::table_exists(pool, "download_queue")?;
    if !pending_migrations.is_empty() {
        problems.push(format!(
            "the schema is behind: {} pending ({}); run init_database()",
            pending_migrations.len(),
            pending_migrations.join(", ")
        ));
    }
    let (jobs, oldest_pending_age_s, stuck_processing, downloads) = if ready {
        queue_health(pool, &thresholds, &mut problems)?
    } else {
        (JobStats::new(), None, 0, DownloadHealth::default())
    };
    let tables = table_stats(pool, false)?;
    for t in &tables {
        let total = (t.live_tuples + t.dead_tuples) as f64;
        let dead = t.dead_tuples as f64;
        if dead >= thresholds.min_dead_tuples
            && total > 0.0
            && dead / total > thresholds.max_dead_ratio
        {
            problems.push(format!(
                "{} has {:.0}% dead rows ({} of {}); run vacuum_tables()",
                t.table,
                100.0 * dead / total,
                t.dead_tuples,
                t.live_tuples + t.dead_tuples
            ));
        }
    }
    let backup = backup_dir
        .map(|dir| backup_health(dir, &thresholds, &mut problems))
        .transpose()?;
    let report = HealthReport {
        generated_at: Utc::now(),
        jobs_total: jobs.values().flat_map(BTreeMap::values).sum(),
        jobs,
        oldest_pending_age_s,
        stuck_processing,
        downloads,
        database_size_bytes: database_size(pool)?,
        tables,
        schema: SchemaHealth {
            version,
            latest: schema::latest_version(),
            pending_migrations,
        },
        backup,
        thresholds,
        problems,
    };
    for p in &report.problems {
        log::warn!("health: {p}");
    }
    Ok(report)
}

type QueueHealth = (JobStats, Option<f64>, i64, DownloadHealth);

fn queue_health(
    pool: &LazyPool,
    thresholds: &Thresholds,
    problems: &mut Vec<String>,
) -> Result<QueueHealth> {
    let jobs = stats::get_job_stats(pool)?;
    let (oldest, stuck, downloads) = pool.run(|c| {
        let what = "reading queue health";
        let oldest: Option<f64> = c
            .query_one(
                "SELECT EXTRACT(EPOCH FROM (LOCALTIMESTAMP - min(created_at)))::float8
                 FROM jobs WHERE status = 'pending'",
                &[],
            )
            .context(what)?
            .get(0);
        let stuck: i64 = c
            .query_one(
                "SELECT count(*) FROM jobs WHERE status = 'processing'
                   AND updated_at < LOCALTIMESTAMP - make_interval(secs => $1)",
                &[&thresholds.stuck_after_s],
            )
            .context(what)?
            .get(0);
        let d = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'pending'),
                        count(*) FILTER (WHERE status = 'failed'),
                        count(*) FILTER (WHERE attempts >= max_attempts)
                 FROM download_queue WHERE status IN ('pending', 'failed')",
                &[],
            )
            .context(what)?;
        Ok((
            oldest,
            stuck,
            DownloadHealth {
                pending: d.get(0),
                failed: d.get(1),
                exhausted: d.get(2),
            },
        ))
    })?;
    if stuck > 0 {
        problems.push(format!(
            "{stuck} jobs have been processing for more than {} (stuck?); run reset_stuck_jobs()",
            hours(thresholds.stuck_after_s)
        ));
    }
    if let Some(age) = oldest.filter(|a| *a > thresholds.max_pending_age_s) {
        problems.push(format!(
            "the oldest pending job has waited {} (more than {}); are the workers running?",
            hours(age),
            hours(thresholds.max_pending_age_s)
        ));
    }
    if downloads.exhausted as f64 > thresholds.max_exhausted_downloads {
        problems.push(format!(
            "{} downloads used all their attempts and will not be retried",
            downloads.exhausted
        ));
    }
    Ok((jobs, oldest, stuck, downloads))
}

fn backup_health(
    dir: &Path,
    thresholds: &Thresholds,
    problems: &mut Vec<String>,
) -> Result<BackupHealth> {
    if !dir.is_dir() {
        problems.push(format!(
            "no backup directory {}: no backups taken yet",
            dir.display()
        ));
        return Ok(BackupHealth {
            dir: dir.to_path_buf(),
            newest: None,
            age_s: None,
            verified: None,
            problem: None,
            count: 0,
        });
    }
    let listed = backup::list_backups(dir, &backup::Auth::from_env()?)?;
    let newest = listed.first();
    let age_s = newest
        .and_then(|b| b.created_at)
        .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0);
    match newest {
        None => problems.push(format!("no backups in {}", dir.display())),
        Some(b) if b.problem.is_some() => problems.push(format!(
            "the newest backup {} does not verify: {}",
            b.path.display(),
            b.problem.as_deref().unwrap_or_default()
        )),
        Some(_) => {}
    }
    if let Some(age) = age_s.filter(|a| *a > thresholds.max_backup_age_s) {
        problems.push(format!(
            "the newest backup is {} old (more than {})",
            hours(age),
            hours(thresholds.max_backup_age_s)
        ));
    }
    Ok(BackupHealth {
        dir: dir.to_path_buf(),
        newest: newest.map(|b| b.path.clone()),
        age_s,
        verified: newest.map(|b| b.problem.is_none()),
        problem: newest.and_then(|b| b.problem.clone()),
        count: listed.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_override_by_name() {
        let mut o = BTreeMap::new();
        o.insert("stuck_after_s".to_owned(), 60.0);
        let t = Thresholds::default().with_overrides(&o).unwrap();
        assert!((t.stuck_after_s - 60.0).abs() < f64::EPSILON);
        o.insert("nope".to_owned(), 1.0);
        assert!(Thresholds::default().with_overrides(&o).is_err());
        let mut neg = BTreeMap::new();
        neg.insert("max_dead_ratio".to_owned(), -1.0);
        assert!(Thresholds::default().with_overrides(&neg).is_err());
        for huge in [1e300, f64::INFINITY, f64::NAN] {
            let mut o = BTreeMap::new();
            o.insert("stuck_after_s".to_owned(), huge);
            let e = Thresholds::default().with_overrides(&o).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{huge}");
        }
    }
}
