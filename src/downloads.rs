//! The download queue: files a job produced, to be fetched to local disk.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use postgres::error::SqlState;

use crate::errors::{Error, Result};
use crate::model::{
    check_id, check_non_negative, check_opt_text, check_text, DownloadStatus, FileType,
};
use crate::pool::{Context, LazyPool};

/// A pending download with its job's prompt and type (the old `d.*, j.prompt_text, j.job_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub id: i32,
    pub job_id: Option<i32>,
    pub remote_url: String,
    pub local_path: String,
    pub file_type: String,
    pub file_size: Option<i64>,
    pub status: String,
    pub priority: Option<i32>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i32>,
    pub error_message: Option<String>,
    pub started_at: Option<NaiveDateTime>,
    pub completed_at: Option<NaiveDateTime>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub prompt_text: Option<String>,
    pub job_type: Option<String>,
}

/// Adds a download for a job; returns the new download's id.
pub fn add_download_task(
    pool: &LazyPool,
    job_id: i64,
    remote_url: &str,
    local_path: &str,
    file_type: FileType,
    priority: i32,
) -> Result<i32> {
    let job_id = check_id("job_id", job_id)?;
    check_text("remote_url", remote_url)?;
    check_text("local_path", local_path)?;
    let id: i32 = pool.run(|c| {
        let row = c.query_one(
            "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, priority)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &job_id,
                &remote_url,
                &local_path,
                &file_type.as_str(),
                &priority,
            ],
        );
        match row {
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Err(Error::invalid(
                format!("job {job_id} does not exist; add the job before its download"),
            )),
            other => Ok(other.context("adding a download")?.get(0)),
        }
    })?;
    log::info!("added download {id} for job {job_id}");
    Ok(id)
}

/// Pending downloads that have attempts left, highest priority first, then oldest.
pub fn get_pending_downloads(
    pool: &LazyPool,
    limit: i64,
    file_type: Option<FileType>,
) -> Result<Vec<Download>> {
    let limit = check_non_negative("limit", limit)?;
    let file_type = file_type.map(FileType::as_str);
    let rows = pool.run_idempotent(|c| {
        c.query(
            "SELECT d.id, d.job_id, d.remote_url, d.local_path, d.file_type, d.file_size,
                    d.status, d.priority, d.attempts, d.max_attempts, d.error_message,
                    d.started_at, d.completed_at, d.created_at, d.updated_at,
                    j.prompt_text, j.job_type
             FROM download_queue d LEFT JOIN jobs j ON d.job_id = j.id
             WHERE d.status = 'pending' AND d.attempts < d.max_attempts
               AND ($2::text IS NULL OR d.file_type = $2)
             ORDER BY d.priority DESC, d.created_at, d.id
             LIMIT $1",
            &[&limit, &file_type],
        )
        .context("reading pending downloads")
    })?;
    let downloads: Vec<Download> = rows
        .iter()
        .map(|r| Download {
            id: r.get(0),
            job_id: r.get(1),
            remote_url: r.get(2),
            local_path: r.get(3),
            file_type: r.get(4),
            file_size: r.get(5),
            status: r.get(6),
            priority: r.get(7),
            attempts: r.get(8),
            max_attempts: r.get(9),
            error_message: r.get(10),
            started_at: r.get(11),
            completed_at: r.get(12),
            created_at: r.get(13),
            updated_at: r.get(14),
            prompt_text: r.get(15),
            job_type: r.get(16),
        })
        .collect();
    log::info!("{} pending downloads", downloads.len());
    Ok(downloads)
}

const COMPLETE_DOWNLOAD: &str = "
    WITH d AS (
        UPDATE download_queue
        SET status = 'completed', completed_at = CURRENT_TIMESTAMP, file_size = $2,
            updated_at = CURRENT_TIMESTAMP
        WHERE id = $1
        RETURNING job_id, local_path),
    j AS (
        UPDATE jobs SET status = 'completed', local_path = d.local_path
        FROM d WHERE jobs.id = d.job_id
        RETURNING jobs.id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM j)";

/// Moves a download to a new status; completing it also completes its job (atomically, in one
/// statement). `true` when the download exists.
pub fn update_download_status(
    pool: &LazyPool,
    download_id: i64,
    status: DownloadStatus,
    error_message: Option<&str>,
    file_size: Option<i64>,
) -> Result<bool> {
    let id = check_id("download_id", download_id)?;
    check_opt_text("error_message", error_message)?;
    if let Some(size) = file_size {
        check_non_negative("file_size", size)?;
    }
    let n =
        pool.run(|c| {
            let what = "updating a download's status";
            match status {
            DownloadStatus::Downloading => c
                .execute(
                    "UPDATE download_queue SET status = 'downloading',
                         started_at = CURRENT_TIMESTAMP, attempts = attempts + 1,
                         updated_at = CURRENT_TIMESTAMP
                     WHERE id = $1",
                    &[&id],
                )
                .context(what),
            DownloadStatus::Completed => {
                let row = c.query_one(COMPLETE_DOWNLOAD, &[&id, &file_size]).context(what)?;
                let (downloads, jobs): (i64, i64) = (row.get(0), row.get(1));
                if downloads > 0 {
                    log::info!("download {id} completed; {jobs} job(s) completed with it");
                }
                Ok(u64::try_from(downloads).unwrap_or_default())
            }
            DownloadStatus::Failed => c
                .execute(
                    "UPDATE download_queue SET status = 'failed', error_message = $2,
                         updated_at = CURRENT_TIMESTAMP
                     WHERE id = $1",
                    &[&id, &error_message],
                )
                .context(what),
            DownloadStatus::Pending => c
                .execute(
                    "UPDATE download_queue SET status = 'pending', updated_at = CURRENT_TIMESTAMP
                     WHERE id = $1",
                    &[&id],
                )
                .context(what),
        }
        })?;
    if n == 0 {
        log::warn!("download {download_id} does not exist; nothing was updated");
    } else {
        log::info!("download {download_id} is now {status}");
    }
    Ok(n > 0)
}

/// Downloads per status (count and bytes), per file type and status, and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadStats {
    pub by_status: BTreeMap<String, (i64, i64)>,
    pub by_type: BTreeMap<String, BTreeMap<String, i64>>,
    pub total_files: i64,
    pub total_downloaded_size: i64,
}

/// Downloads per status, nothing else: an index-only scan of `idx_download_queue_status`
/// (`get_download_stats` also sums sizes and so reads every row).
pub fn download_counts(pool: &LazyPool) -> Result<BTreeMap<String, i64>> {
    let rows = pool.run_idempotent(|c| {
        c.query(
            "SELECT status, count(*) FROM download_queue GROUP BY status ORDER BY status",
            &[],
        )
        .context("counting downloads")
    })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub fn get_download_stats(pool: &LazyPool) -> Result<DownloadStats> {
    pool.run_idempotent(|c| {
        let what = "reading download statistics";
        let mut stats = DownloadStats::default();
        for r in c
            .query(
                "SELECT status, count(*), COALESCE(sum(file_size), 0)::bigint
                 FROM download_queue GROUP BY status ORDER BY status",
                &[],
            )
            .context(what)?
        {
            let (status, count, size): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
            stats.total_files += count;
            if status == DownloadStatus::Completed.as_str() {
                stats.total_downloaded_size += size;
            }
            stats.by_status.insert(status, (count, size));
        }
        for r in c
            .query(
                "SELECT file_type, status, count(*) FROM download_queue
                 GROUP BY file_type, status ORDER BY file_type, status",
                &[],
            )
            .context(what)?
        {
            stats
                .by_type
                .entry(r.get(0))
                .or_default()
                .insert(r.get(1), r.get(2));
        }
        Ok(stats)
    })
}

/// The downloads `cleanup_old_downloads` deletes (`$1` days): one text for it and its dry run.
macro_rules! old_downloads {
    () => {
        "status = 'completed' AND completed_at < LOCALTIMESTAMP - make_interval(days => $1)"
    };
}

/// Deletes completed downloads older than `days`; returns how many.
pub fn cleanup_old_downloads(pool: &LazyPool, days: i64) -> Result<u64> {
    let days = i32::try_from(check_non_negative("days", days)?)
        .map_err(|_| Error::invalid(format!("days is too large: {days}")))?;
    let n = pool.run(|c| {
        c.execute(
            concat!("DELETE FROM download_queue WHERE ", old_downloads!()),
            &[&days],
        )
        .context("deleting old downloads")
    })?;
    log::info!("deleted {n} completed downloads older than {days} days");
    Ok(n)
}

/// How many downloads `cleanup_old_downloads(days)` would delete now (its dry run).
pub fn count_old_downloads(pool: &LazyPool, days: i64) -> Result<u64> {
    let days = i32::try_from(check_non_negative("days", days)?)
        .map_err(|_| Error::invalid(format!("days is too large: {days}")))?;
    let n: i64 = pool.run_idempotent(|c| {
        Ok(c.query_one(
            concat!(
                "SELECT count(*) FROM download_queue WHERE ",
                old_downloads!()
            ),
            &[&days],
        )
        .context("counting old downloads")?
        .get(0))
    })?;
    Ok(n.unsigned_abs())
}
