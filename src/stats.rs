//! The queue at a glance: counts per job type and status, the old `show_stats` text, and
//! throughput over time (jobs added and finished per hour or per day).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::errors::{Error, Result};
use crate::pool::{Context, LazyPool};

/// `{job_type: {status: count}}`, ordered by type then status.
pub type JobStats = BTreeMap<String, BTreeMap<String, i64>>;

/// Counts jobs per type and status. One GROUP BY, served by the `(job_type, status)` index.
pub fn get_job_stats(pool: &LazyPool) -> Result<JobStats> {
    let rows = pool.run_idempotent(|c| {
        c.query(
            "SELECT job_type, status, count(*) FROM jobs
             GROUP BY job_type, status ORDER BY job_type, status",
            &[],
        )
        .context("counting jobs")
    })?;
    let mut stats = JobStats::new();
    for r in &rows {
        stats
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), r.get(2));
    }
    Ok(stats)
}

/// The replaced `show_stats` output, byte for byte (without the final newline `print` adds).
pub fn format_stats(stats: &JobStats) -> String {
    if stats.is_empty() {
        return "数据库中没有作业".to_owned();
    }
    let mut out = String::from("\n=== 作业统计信息 ===");
    for (job_type, statuses) in stats {
        let _ = write!(out, "\n\n{job_type}:");
        for (status, count) in statuses {
            let _ = write!(out, "\n  {status}: {count}");
        }
        let _ = write!(out, "\n  总计: {}", statuses.values().sum::<i64>());
    }
    out
}

/// The width of a throughput bucket, and how many of them a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// 24 buckets of one hour, the newest being the current (partial) hour.
    Hour,
    /// 30 buckets of one day, the newest being today (partial).
    Day,
}

impl Granularity {
    /// `hour` or `day` (the `date_trunc` unit); anything else is an error.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "hour" | "hours" => Ok(Granularity::Hour),
            "day" | "days" => Ok(Granularity::Day),
            _ => Err(Error::invalid(format!(
                "unknown throughput granularity {name:?}; use \"hour\" (24 hours) or \"day\" \
                 (30 days)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// How many buckets a report holds.
    pub fn buckets(self) -> i32 {
        match self {
            Granularity::Hour => 24,
            Granularity::Day => 30,
        }
    }
}

/// Jobs added and finished in one bucket. Times are the database's local time, like the
/// `created_at` / `updated_at` columns (`timestamp without time zone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub start: NaiveDateTime,
    /// Jobs whose `created_at` falls in the bucket.
    pub added: i64,
    /// Jobs now `completed` whose last change (`updated_at`) falls in the bucket.
    pub completed: i64,
    /// Jobs now `failed` whose last change (`updated_at`) falls in the bucket.
    pub failed: i64,
}

/// Throughput over the last 24 hours or 30 days, oldest bucket first, every bucket present.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub granularity: &'static str,
    pub buckets: Vec<Bucket>,
}

/// The statement for one granularity (`$unit`, buckets - 1). Both ranges are bounded by
/// `LOCALTIMESTAMP` (stable in a statement), so each half is an index range scan:
/// `idx_jobs_created_at` (V1) for jobs added, `idx_jobs_finished_updated_at` (V7, partial on
/// completed/failed, status included) for jobs finished; index-only once vacuumed.
macro_rules! throughput_sql {
    ($unit:literal, $span:literal) => {
        concat!(
            "WITH series AS (
                 SELECT generate_series(date_trunc('",
            $unit,
            "', LOCALTIMESTAMP)
                                            - interval '",
            $span,
            " ",
            $unit,
            "',
                                        date_trunc('",
            $unit,
            "', LOCALTIMESTAMP),
                                        interval '1 ",
            $unit,
            "') AS start
             ), added AS (
                 SELECT date_trunc('",
            $unit,
            "', created_at) AS start, count(*) AS n FROM jobs
                 WHERE created_at >= date_trunc('",
            $unit,
            "', LOCALTIMESTAMP)
                                      - interval '",
            $span,
            " ",
            $unit,
            "'
                 GROUP BY 1
             ), finished AS (
                 SELECT date_trunc('",
            $unit,
            "', updated_at) AS start,
                        count(*) FILTER (WHERE status = 'completed') AS completed,
                        count(*) FILTER (WHERE status = 'failed') AS failed
                 FROM jobs
                 WHERE status IN ('completed', 'failed')
                   AND updated_at >= date_trunc('",
            $unit,
            "', LOCALTIMESTAMP)
                                     - interval '",
            $span,
            " ",
            $unit,
            "'
                 GROUP BY 1
             )
             SELECT s.start, COALESCE(a.n, 0), COALESCE(f.completed, 0), COALESCE(f.failed, 0)
             FROM series s LEFT JOIN added a USING (start) LEFT JOIN finished f USING (start)
             ORDER BY s.start"
        )
    };
}

fn throughput_sql(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => throughput_sql!("hour", "23"),
        Granularity::Day => throughput_sql!("day", "29"),
    }
}

/// Jobs added and finished (completed / failed) per hour over the last 24 hours, or per day
/// over the last 30 days. Read-only; one statement.
pub fn throughput(pool: &LazyPool, g: Granularity) -> Result<Throughput> {
    let sql = throughput_sql(g);
    let rows = pool.run_idempotent(|c| c.query(sql, &[]).context("reading throughput"))?;
    let buckets = rows
        .iter()
        .map(|r| Bucket {
            start: r.get(0),
            added: r.get(1),
            completed: r.get(2),
            failed: r.get(3),
        })
        .collect();
    Ok(Throughput {
        granularity: g.as_str(),
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities() {
        assert_eq!(Granularity::parse("hour").unwrap(), Granularity::Hour);
        assert_eq!(Granularity::parse("days").unwrap(), Granularity::Day);
        let err = Granularity::parse("week").unwrap_err().to_string();
        assert!(err.contains("\"hour\" (24 hours)"), "{err}");
        assert!(throughput_sql(Granularity::Hour).contains("interval '23 hour'"));
        assert!(throughput_sql(Granularity::Day).contains("interval '29 day'"));
    }

    #[test]
    fn empty_database_message() {
        assert_eq!(format_stats(&JobStats::new()), "数据库中没有作业");
    }

    #[test]
    fn same_layout_as_the_old_print_calls() {
        let mut stats = JobStats::new();
        stats
            .entry("IMAGE_TEST".into())
            .or_default()
            .insert("completed".into(), 3);
        stats
            .entry("IMAGE_TEST".into())
            .or_default()
            .insert("pending".into(), 2);
        stats
            .entry("VIDEO_PROD".into())
            .or_default()
            .insert("failed".into(), 1);
        // What print("\n=== 作业统计信息 ===") / print(f"\n{job_type}:") / ... wrote.
        let expected =
            "\n=== 作业统计信息 ===\n\nIMAGE_TEST:\n  completed: 3\n  pending: 2\n  总计: 5\
                        \n\nVIDEO_PROD:\n  failed: 1\n  总计: 1";
        assert_eq!(format_stats(&stats), expected);
    }
}
