//! The queue at a glance: counts per job type and status, and the old `show_stats` text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::errors::Result;
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

#[cfg(test)]
mod tests {
    use super::*;

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
