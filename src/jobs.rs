//! The job queue: adding jobs, claiming them, moving them through their statuses.
//!
//! Each call is one statement (one round trip on a warm connection) except where noted. Claims
//! use `FOR UPDATE SKIP LOCKED` on the partial index `idx_jobs_claim`, so any number of workers
//! claim each job exactly once and a claim costs the same however many jobs are done.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Mutex, PoisonError};

use chrono::NaiveDateTime;
use postgres::Row;

use crate::errors::{Error, Result};
use crate::model::{check_id, check_opt_text, check_prompt, check_text, JobStatus, JobType};
use crate::pool::{Connection, Context, Deadline, LazyPool, Outcome};

/// A job as `get_job_by_id` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i32,
    pub prompt_text: String,
    pub status: String,
    pub job_type: String,
    pub local_path: Option<String>,
    pub gcs_uri: Option<String>,
    pub operation_id: Option<String>,
    pub error_message: Option<String>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

impl Job {
    fn from_row(r: &Row) -> Self {
        Job {
            id: r.get(0),
            prompt_text: r.get(1),
            status: r.get(2),
            job_type: r.get(3),
            local_path: r.get(4),
            gcs_uri: r.get(5),
            operation_id: r.get(6),
            error_message: r.get(7),
            created_at: r.get(8),
            updated_at: r.get(9),
        }
    }
}

/// A job as `get_and_lock_job` returns it (the old keys: id, prompt_text, job_type, created_at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i32,
    pub prompt_text: String,
    pub job_type: String,
    pub created_at: Option<NaiveDateTime>,
}

/// Prompts per statement in `add_jobs`.
const BATCH: usize = 10_000;

const ADD_JOB: &str = "
    WITH inserted AS (
        INSERT INTO jobs (prompt_text, job_type) VALUES ($1, $2)
        ON CONFLICT (prompt_text) DO NOTHING
        RETURNING id, job_type)
    SELECT id, job_type, true FROM inserted
    UNION ALL
    SELECT id, job_type, false FROM jobs WHERE prompt_text = $1
    LIMIT 1";
const FIND_BY_PROMPT: &str = "SELECT id, job_type, false FROM jobs WHERE prompt_text = $1";

/// Adds a job; returns its id, or the id of the job that already has this prompt.
pub fn add_job(pool: &LazyPool, prompt_text: &str, job_type: JobType) -> Result<i32> {
    check_prompt(prompt_text)?;
    // ON CONFLICT DO NOTHING: a repeat returns the same job's id, adds nothing.
    pool.run_idempotent(|c| {
        let row = match c.query_opt(ADD_JOB, &[&prompt_text, &job_type.as_str()]) {
            Ok(Some(row)) => row,
            // A concurrent transaction inserted the same prompt after our snapshot was taken:
            // a new statement sees it.
            Ok(None) => c
                .query_one(FIND_BY_PROMPT, &[&prompt_text])
                .context("adding a job")?,
            Err(e) => return Err(e).context("adding a job"),
        };
        Ok(report_added(&row, job_type))
    })
}

fn report_added(row: &Row, job_type: JobType) -> i32 {
    let (id, existing_type, inserted): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
    if inserted {
        log::info!("added job {id} ({job_type})");
    } else if existing_type == job_type.as_str() {
        log::warn!("a job with this prompt already exists: {id}");
    } else {
        log::warn!("a job with this prompt already exists: {id}, queued as {existing_type}, not {job_type}");
    }
    id
}

const ADD_JOBS: &str = "
    INSERT INTO jobs (prompt_text, job_type)
    SELECT p, $2 FROM unnest($1::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n
    ON CONFLICT (prompt_text) DO NOTHING";
const EXISTING_PROMPTS: &str = "SELECT prompt_text FROM jobs WHERE prompt_text = ANY($1::text[])";

/// Adds many jobs. Returns how many were new (prompts already queued, and repeats within
/// `prompts`, are skipped). Each attempt is one transaction: all or nothing.
///
/// New prompts (checked on a sample of the batch) are streamed straight into the table with
/// COPY, PostgreSQL's bulk path. When some are already queued, one indexed lookup per 10,000
/// finds them and COPY streams the rest; a COPY that meets a queued prompt anyway (the sample
/// missed it, or a concurrent writer queued it) rolls back, and the next way is taken, the
/// last being `INSERT ... ON CONFLICT DO NOTHING`. After a load that is large for the table,
/// `ANALYZE` refreshes the planner's statistics so claims use the claim index at once rather
/// than after autovacuum's next visit.
pub fn add_jobs(pool: &LazyPool, prompts: &[String], job_type: JobType) -> Result<u64> {
    for p in prompts {
        check_prompt(p)?;
    }
    if prompts.is_empty() {
        return Ok(0);
    }
    let mut seen = HashSet::with_capacity(prompts.len());
    let unique: Vec<&str> = prompts
        .iter()
        .map(String::as_str)
        .filter(|p| seen.insert(*p))
        .collect();
    let added = pool.run(|c| add_unique(c, &unique, job_type))?;
    log::info!("added {added} of {} jobs ({job_type})", prompts.len());
    if added >= 1000 {
        pool.run_long(|c| analyze_if_grown(c, added))?;
    }
    Ok(added)
}

/// Prompts of a batch checked before COPY is tried on the whole batch.
const SAMPLE: usize = 64;
const ANY_QUEUED: &str = "SELECT EXISTS (SELECT 1 FROM jobs WHERE prompt_text = ANY($1::text[]))";

fn add_unique(c: &mut Connection, unique: &[&str], job_type: JobType) -> Result<u64> {
    let step = unique.len().div_ceil(SAMPLE);
    let sample: Vec<&str> = unique.iter().step_by(step).copied().collect();
    let sample_queued: bool = c
        .query_one(ANY_QUEUED, &[&sample])
        .context("adding jobs")?
        .get(0);
    if !sample_queued {
        if let Some(added) = copy_prompts(c, unique, job_type)? {
            return Ok(added);
        }
        log::debug!("some of these prompts were queued already; looking them up");
    }
    let mut existing = HashSet::new();
    for chunk in unique.chunks(BATCH) {
        for row in c
            .query(EXISTING_PROMPTS, &[&chunk])
            .context("adding jobs")?
        {
            existing.insert(row.get::<_, String>(0));
        }
    }
    let fresh: Vec<&str> = unique
        .iter()
        .copied()
        .filter(|p| !existing.contains(*p))
        .collect();
    if let Some(added) = copy_prompts(c, &fresh, job_type)? {
        return Ok(added);
    }
    log::info!("a concurrent writer queued some of these prompts; adding with ON CONFLICT");
    insert_on_conflict(c, unique, job_type)
}

/// COPYs `prompts` into `jobs` in one transaction. `None` (and nothing added) when one of them
/// is queued already: the unique index refused it.
fn copy_prompts(c: &mut Connection, prompts: &[&str], job_type: JobType) -> Result<Option<u64>> {
    if prompts.is_empty() {
        return Ok(Some(0));
    }
    let mut tx = c.client().transaction().context("adding jobs")?;
    let mut writer = tx
        .copy_in("COPY jobs (prompt_text, job_type) FROM STDIN")
        .context("adding jobs")?;
    let mut block = Vec::with_capacity(1 << 17);
    for (i, p) in prompts.iter().enumerate() {
        copy_escape(p, &mut block);
        block.push(b'\t');
        block.extend_from_slice(job_type.as_str().as_bytes());
        block.push(b'\n');
        if block.len() >= 1 << 16 || i + 1 == prompts.len() {
            if let Err(e) = writer.write_all(&block) {
                let db = e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<postgres::Error>());
                if db.is_some_and(is_unique_violation) {
                    return Ok(None);
                }
                return Err(Error::Unavailable(format!("adding jobs: {e}")));
            }
            block.clear();
        }
    }
    match writer.finish() {
        Ok(added) => {
            tx.commit().context("adding jobs")?;
            Ok(Some(added))
        }
        Err(e) if is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e).context("adding jobs"),
    }
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn insert_on_conflict(c: &mut Connection, prompts: &[&str], job_type: JobType) -> Result<u64> {
    let mut tx = c.client().transaction().context("adding jobs")?;
    let mut added = 0;
    for chunk in prompts.chunks(BATCH) {
        added += tx
            .execute(ADD_JOBS, &[&chunk, &job_type.as_str()])
            .context("adding jobs")?;
    }
    tx.commit().context("adding jobs")?;
    Ok(added)
}

/// `ANALYZE jobs` when `added` is at least a tenth of the rows the planner believes it has.
fn analyze_if_grown(c: &mut Connection, added: u64) -> Result<()> {
    let estimate: f32 = c
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass",
            &[],
        )
        .context("reading table statistics")?
        .get(0);
    if estimate < 0.0 || (added as f32) * 10.0 >= estimate {
        // The columns the claim's plan depends on (statistics of long prompts are costly).
        crate::planner::analyze_after_load(c.client(), &["jobs (job_type, status, created_at)"])?;
        log::debug!("analyzed jobs after adding {added} rows (estimate was {estimate})");
    }
    Ok(())
}

/// COPY text format: backslash, tab, newline and carriage return are escaped.
fn copy_escape(text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

const COUNT_QUEUED: &str = "
    SELECT count(*) FROM unnest($1::text[]) AS u(p) JOIN jobs j ON j.prompt_text = u.p
    WHERE j.job_type = $2";

/// The old `add_test_jobs`: adds IMAGE_TEST jobs and returns how many of the given prompts are
/// now queued as IMAGE_TEST (new or already there), counting each prompt as given.
pub fn add_test_jobs(pool: &LazyPool, prompts: &[String]) -> Result<u64> {
    add_jobs(pool, prompts, JobType::ImageTest)?;
    if prompts.is_empty() {
        return Ok(0);
    }
    let queued = pool.run_idempotent(|c| {
        let mut total = 0;
        for chunk in prompts.chunks(BATCH) {
            let row = c
                .query_one(COUNT_QUEUED, &[&chunk, &JobType::ImageTest.as_str()])
                .context("counting queued jobs")?;
            total += row.get::<_, i64>(0);
        }
        Ok(total)
    })?;
    let queued = u64::try_from(queued).unwrap_or_default();
    log::info!("{queued}/{} test jobs queued", prompts.len());
    Ok(queued)
}

const CLAIM: &str = "
    UPDATE jobs SET status = 'processing', claim_token = $2
    WHERE id = (
        SELECT id FROM jobs
        WHERE status = 'pending' AND job_type = $1
        ORDER BY created_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at";

/// The same claim, starting the index scan after this process's previous claim.
const CLAIM_AFTER: &str = "
    UPDATE jobs SET status = 'processing', claim_token = $4
    WHERE id = (
        SELECT id FROM jobs
        WHERE status = 'pending' AND job_type = $1 AND (created_at, id) > ($2, $3)
        ORDER BY created_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at";

/// A scan from the head of the claim index at least this often, so that a job re-queued
/// behind the cursor waits at most this many claims of this process.
const FULL_SCAN_EVERY: u32 = 1000;

/// Where a JobManager's last claim of each job type was.
///
/// A claim leaves the job's entry in the partial claim index (`status = 'pending'`) until
/// VACUUM removes it, and every later claim that starts at the head of the index steps over
/// all of them: on a busy queue claims slow down as jobs are processed. Starting just after
/// the previous claim skips them. When the forward scan finds nothing, and every
/// [`FULL_SCAN_EVERY`] claims, the claim starts at the head again, so a job put back to
/// `pending` behind the cursor (reset_stuck_jobs) is still claimed, in FIFO order from there.
#[derive(Debug, Default)]
pub struct ClaimCursor {
    positions: Mutex<HashMap<JobType, Position>>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    created_at: NaiveDateTime,
    id: i32,
    since_full_scan: u32,
}

impl ClaimCursor {
    fn start(&self, job_type: JobType) -> Option<Position> {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        positions
            .get(&job_type)
            .copied()
            .filter(|p| p.since_full_scan < FULL_SCAN_EVERY)
    }

    fn record(&self, job_type: JobType, claimed: Option<&ClaimedJob>, full_scan: bool) {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let since = if full_scan {
            0
        } else {
            positions
                .get(&job_type)
                .map_or(0, |p| p.since_full_scan + 1)
        };
        match claimed.and_then(|j| j.created_at.map(|t| (t, j.id))) {
            Some((created_at, id)) => {
                positions.insert(
                    job_type,
                    Position {
                        created_at,
                        id,
                        since_full_scan: since,
                    },
                );
            }
            None => {
                positions.remove(&job_type);
            }
        }
    }
}

/// The job a claim with this token took, if that claim took effect.
const CLAIMED_WITH: &str = "
    SELECT id, prompt_text, job_type, created_at FROM jobs
    WHERE claim_token = $1 AND status = 'processing'";

/// A fresh random claim token (128 bits, hex).
fn claim_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Unavailable(format!("no random bytes for a claim token: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Claims the oldest pending job of a type: it becomes `processing` and is returned to this
/// caller only. `None` when no job of that type is pending.
///
/// The claim carries a token of its own. If the connection breaks after the claim was sent
/// (the reply lost: the job may be claimed or not), the token is looked up on another
/// connection: the caller receives the job its claim took, or, when the claim did not take
/// effect, the claim is made again with the same token. So every job in `processing` has been
/// handed to a caller, and a caller never holds two.
pub fn get_and_lock_job(
    pool: &LazyPool,
    job_type: JobType,
    cursor: &ClaimCursor,
) -> Result<Option<ClaimedJob>> {
    Ok(claim(pool, job_type, cursor, Claim::One)?.pop())
}

/// The most jobs one batch claim takes.
pub const MAX_BATCH: i64 = 10_000;

const CLAIM_BATCH: &str = "
    UPDATE jobs SET status = 'processing', claim_token = $2
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'pending' AND job_type = $1
        ORDER BY created_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at";

const CLAIM_BATCH_AFTER: &str = "
    UPDATE jobs SET status = 'processing', claim_token = $4
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'pending' AND job_type = $1 AND (created_at, id) > ($2, $3)
        ORDER BY created_at, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at";

/// Claims up to `limit` of the oldest pending jobs of a type in one statement (one round trip;
/// two when the scan after this process's previous claim finds fewer than `limit` and the head
/// of the queue is scanned for the rest). The same guarantees as [`get_and_lock_job`]: SKIP
/// LOCKED, each job to one caller, a lost reply recovered by the claim's token. The jobs come
/// back oldest first; an empty list when none is pending.
pub fn get_and_lock_jobs(
    pool: &LazyPool,
    job_type: JobType,
    cursor: &ClaimCursor,
    limit: i64,
) -> Result<Vec<ClaimedJob>> {
    if !(1..=MAX_BATCH).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be from 1 to {MAX_BATCH} jobs per claim, got {limit}; claim more in \
             several calls"
        )));
    }
    claim(pool, job_type, cursor, Claim::Batch(limit))
}

#[derive(Debug, Clone, Copy)]
enum Claim {
    /// The single claim's own statements (`get_and_lock_job`, unchanged).
    One,
    Batch(i64),
}

/// The claim of [`get_and_lock_job`] and [`get_and_lock_jobs`]: the statements, the cursor,
/// and the recovery of a lost reply by the claim's token.
fn claim(
    pool: &LazyPool,
    job_type: JobType,
    cursor: &ClaimCursor,
    how: Claim,
) -> Result<Vec<ClaimedJob>> {
    let start = cursor.start(job_type);
    let token = claim_token()?;
    let what = match how {
        Claim::One => "claiming a job",
        Claim::Batch(_) => "claiming jobs",
    };
    let claim = |c: &mut Connection| -> Result<(Vec<Row>, bool)> {
        let t = job_type.as_str();
        let mut rows = Vec::new();
        if let Some(p) = start {
            rows = match how {
                Claim::One => c
                    .query_opt(CLAIM_AFTER, &[&t, &p.created_at, &p.id, &token])
                    .context(what)?
                    .into_iter()
                    .collect(),
                Claim::Batch(n) => c
                    .query(CLAIM_BATCH_AFTER, &[&t, &p.created_at, &p.id, &token, &n])
                    .context(what)?,
            };
            let wanted = match how {
                Claim::One => 1,
                Claim::Batch(n) => n,
            };
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= wanted {
                return Ok((rows, false));
            }
        }
        let more = match how {
            Claim::One => c
                .query_opt(CLAIM, &[&t, &token])
                .context(what)?
                .into_iter()
                .collect(),
            Claim::Batch(n) => {
                let rest = n - i64::try_from(rows.len()).unwrap_or(0);
                c.query(CLAIM_BATCH, &[&t, &token, &rest]).context(what)?
            }
        };
        rows.extend(more);
        Ok((rows, true))
    };
    let mut outcome = pool.run_outcome(Deadline::Ordinary, claim)?;
    let mut recovered = 0;
    let (rows, full_scan) = loop {
        let lost = match outcome {
            Outcome::Done(done) => break done,
            Outcome::Unknown(e) => e,
        };
        log::warn!("{lost}; looking for the jobs this claim took");
        let found = pool.run_idempotent(|c| {
            c.query(CLAIMED_WITH, &[&token])
                .context("looking up a claim whose reply was lost")
        })?;
        if !found.is_empty() {
            log::info!("the lost claim had taken effect: returning its jobs");
            break (found, true);
        }
        recovered += 1;
        if recovered > 2 {
            return Err(lost);
        }
        outcome = pool.run_outcome(Deadline::Ordinary, claim)?;
    };
    let mut jobs: Vec<ClaimedJob> = rows
        .iter()
        .map(|r| ClaimedJob {
            id: r.get(0),
            prompt_text: r.get(1),
            job_type: r.get(2),
            created_at: r.get(3),
        })
        .collect();
    // RETURNING follows no order: oldest first, as the claim chose them.
    jobs.sort_by_key(|j| (j.created_at, j.id));
    cursor.record(job_type, jobs.last(), full_scan);
    match jobs.as_slice() {
        [] => {}
        [j] => log::info!("claimed job {} ({})", j.id, j.job_type),
        [first, .., last] => log::info!(
            "claimed {} jobs ({job_type}), ids {} to {}",
            jobs.len(),
            first.id,
            last.id
        ),
    }
    Ok(jobs)
}

/// Ids given twice in one batch ending: refused, since the two entries could disagree.
fn check_unique_ids(ids: &[i32]) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(Error::invalid(format!(
            "job id {dup} is given more than once; give each job once per call"
        )));
    }
    Ok(())
}

/// One batch ending: `sql` takes `$1` ids (int4[]) and `$2` texts (text[]), locks the rows
/// (`FOR UPDATE` in a subquery, so RETURNING shows each job's status before this update) and
/// returns `id, old status`. Returns the ids updated, in the order given. Warns, as the single
/// endings do, for ids with no job, and for jobs that were not `processing` (updated anyway,
/// as the single endings update them).
fn end_jobs(
    pool: &LazyPool,
    what: &str,
    sql: &'static str,
    items: &[(i64, Option<String>)],
) -> Result<Vec<i32>> {
    if items.len() > usize::try_from(MAX_BATCH).unwrap_or(usize::MAX) {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH} jobs per call, got {}; split the list",
            items.len()
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut texts: Vec<Option<&str>> = Vec::with_capacity(items.len());
    for (id, text) in items {
        ids.push(check_id("job_id", *id)?);
        check_opt_text("text", text.as_deref())?;
        texts.push(text.as_deref());
    }
    check_unique_ids(&ids)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Setting the same values again changes nothing: safe to repeat after a lost reply.
    let rows = pool.run_idempotent(|c| c.query(sql, &[&ids, &texts]).context(what))?;
    let mut old: HashMap<i32, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !old.contains_key(id))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        log::warn!(
            "jobs {} do not exist; nothing was updated for them ({what})",
            missing.join(", ")
        );
    }
    let mut elsewhere: Vec<String> = ids
        .iter()
        .filter_map(|id| {
            old.get(id)
                .filter(|s| s.as_str() != JobStatus::Processing.as_str())
                .map(|s| format!("{id} ({s})"))
        })
        .collect();
    elsewhere.truncate(100);
    if !elsewhere.is_empty() {
        log::warn!(
            "jobs not in processing were {what} anyway: {}",
            elsewhere.join(", ")
        );
    }
    let updated: Vec<i32> = ids
        .into_iter()
        .filter(|id| old.remove(id).is_some())
        .collect();
    log::info!("{} jobs {what}", updated.len());
    Ok(updated)
}

const COMPLETE_JOBS: &str = "
    UPDATE jobs j SET status = 'completed', local_path = COALESCE(o.text, j.local_path)
    FROM (SELECT x.id, x.status, u.text
          FROM unnest($1::int4[], $2::text[]) AS u(id, text)
          JOIN jobs x ON x.id = u.id
          FOR UPDATE OF x) AS o
    WHERE j.id = o.id
    RETURNING j.id, o.status";

const FAIL_JOBS: &str = "
    UPDATE jobs j SET status = 'failed', error_message = o.text
    FROM (SELECT x.id, x.status, u.text
          FROM unnest($1::int4[], $2::text[]) AS u(id, text)
          JOIN jobs x ON x.id = u.id
          FOR UPDATE OF x) AS o
    WHERE j.id = o.id
    RETURNING j.id, o.status";

/// Marks many jobs completed in one statement, each with its `local_path` (kept as it was
/// where `None`). Returns the ids updated.
pub fn mark_jobs_completed(pool: &LazyPool, items: &[(i64, Option<String>)]) -> Result<Vec<i32>> {
    end_jobs(pool, "marked completed", COMPLETE_JOBS, items)
}

/// Marks many jobs failed in one statement, each with its error message. Returns the ids
/// updated.
pub fn mark_jobs_failed(pool: &LazyPool, items: &[(i64, Option<String>)]) -> Result<Vec<i32>> {
    end_jobs(pool, "marked failed", FAIL_JOBS, items)
}

/// Whether a job of this type is pending now (what a waiter checks before and after waking).
pub fn has_pending(pool: &LazyPool, job_type: JobType) -> Result<bool> {
    pool.run_idempotent(|c| {
        Ok(c.query_one(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'pending' AND job_type = $1)",
            &[&job_type.as_str()],
        )
        .context("looking for pending jobs")?
        .get(0))
    })
}

/// Runs one single-row UPDATE by job id; `true` when the job exists.
fn update_job(
    pool: &LazyPool,
    what: &str,
    sql: &'static str,
    job_id: i64,
    extra: &[Option<&str>],
) -> Result<bool> {
    let id = check_id("job_id", job_id)?;
    // Setting the same values again changes nothing: safe to repeat after a lost reply.
    let n = pool.run_idempotent(|c: &mut Connection| {
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id];
        params.extend(
            extra
                .iter()
                .map(|v| v as &(dyn postgres::types::ToSql + Sync)),
        );
        c.execute(sql, &params).context(what)
    })?;
    if n == 0 {
        log::warn!("job {job_id} does not exist; nothing was updated ({what})");
    } else {
        log::info!("job {job_id}: {what}");
    }
    Ok(n > 0)
}

/// Marks a job completed, setting `local_path` and `gcs_uri` where given.
pub fn mark_completed(
    pool: &LazyPool,
    job_id: i64,
    local_path: Option<&str>,
    gcs_uri: Option<&str>,
) -> Result<bool> {
    check_opt_text("local_path", local_path)?;
    check_opt_text("gcs_uri", gcs_uri)?;
    update_job(
        pool,
        "marked completed",
        "UPDATE jobs SET status = 'completed', local_path = COALESCE($2, local_path),
             gcs_uri = COALESCE($3, gcs_uri) WHERE id = $1",
        job_id,
        &[local_path, gcs_uri],
    )
}

/// Marks a job failed and stores the reason.
pub fn mark_failed(pool: &LazyPool, job_id: i64, error_message: Option<&str>) -> Result<bool> {
    check_opt_text("error_message", error_message)?;
    if let Some(m) = error_message {
        log::warn!("job {job_id} failed: {m}");
    }
    update_job(
        pool,
        "marked failed",
        "UPDATE jobs SET status = 'failed', error_message = $2 WHERE id = $1",
        job_id,
        &[error_message],
    )
}

/// Marks a job as waiting for a retry.
pub fn mark_awaiting_retry(pool: &LazyPool, job_id: i64) -> Result<bool> {
    update_job(
        pool,
        "marked awaiting_retry",
        "UPDATE jobs SET status = 'awaiting_retry' WHERE id = $1",
        job_id,
        &[],
    )
}

/// Marks a job's generation successful (the file exists remotely and awaits download).
pub fn mark_generation_successful(pool: &LazyPool, job_id: i64, gcs_uri: &str) -> Result<bool> {
    check_text("gcs_uri", gcs_uri)?;
    update_job(
        pool,
        "marked generation_successful",
        "UPDATE jobs SET status = 'generation_successful', gcs_uri = $2 WHERE id = $1",
        job_id,
        &[Some(gcs_uri)],
    )
}

/// Records the remote operation id of a job.
pub fn update_operation_id(pool: &LazyPool, job_id: i64, operation_id: &str) -> Result<bool> {
    check_text("operation_id", operation_id)?;
    update_job(
        pool,
        "operation_id updated",
        "UPDATE jobs SET operation_id = $2 WHERE id = $1",
        job_id,
        &[Some(operation_id)],
    )
}

/// Records the GCS URI of a job.
pub fn update_gcs_uri(pool: &LazyPool, job_id: i64, gcs_uri: &str) -> Result<bool> {
    check_text("gcs_uri", gcs_uri)?;
    update_job(
        pool,
        "gcs_uri updated",
        "UPDATE jobs SET gcs_uri = $2 WHERE id = $1",
        job_id,
        &[Some(gcs_uri)],
    )
}

/// The operation id of a job; `None` when the job has none or does not exist.
pub fn get_operation_id(pool: &LazyPool, job_id: i64) -> Result<Option<String>> {
    let id = check_id("job_id", job_id)?;
    let row = pool.run_idempotent(|c| {
        c.query_opt("SELECT operation_id FROM jobs WHERE id = $1", &[&id])
            .context("reading a job's operation_id")
    })?;
    Ok(row.and_then(|r| r.get(0)))
}

/// A job by id; `None` when it does not exist.
pub fn get_job_by_id(pool: &LazyPool, job_id: i64) -> Result<Option<Job>> {
    let id = check_id("job_id", job_id)?;
    let row = pool.run_idempotent(|c| {
        c.query_opt(
            "SELECT id, prompt_text, status, job_type, local_path, gcs_uri, operation_id,
                    error_message, created_at, updated_at
             FROM jobs WHERE id = $1",
            &[&id],
        )
        .context("reading a job")
    })?;
    Ok(row.as_ref().map(Job::from_row))
}

/// The jobs `reset_stuck_jobs` resets (`$1` job type or NULL, `$2` seconds): one text for the
/// reset and its dry run.
macro_rules! stuck {
    () => {
        "status = 'processing'
         AND ($1::text IS NULL OR job_type = $1)
         AND updated_at < LOCALTIMESTAMP - make_interval(secs => $2)"
    };
}

/// Checks the age threshold shared by `reset_stuck_jobs` and its dry run.
fn check_older_than(older_than_seconds: f64) -> Result<()> {
    if !(older_than_seconds.is_finite() && older_than_seconds >= 0.0) {
        return Err(Error::invalid(format!(
            "older_than_seconds must be zero or more, got {older_than_seconds}"
        )));
    }
    Ok(())
}

/// Puts jobs that have been `processing` for longer than `older_than_seconds` back to
/// `pending`; returns how many.
pub fn reset_stuck_jobs(
    pool: &LazyPool,
    job_type: Option<JobType>,
    older_than_seconds: f64,
) -> Result<u64> {
    check_older_than(older_than_seconds)?;
    let job_type = job_type.map(JobType::as_str);
    let n = pool.run(|c| {
        c.execute(
            concat!("UPDATE jobs SET status = 'pending' WHERE ", stuck!()),
            &[&job_type, &older_than_seconds],
        )
        .context("resetting stuck jobs")
    })?;
    log::info!("reset {n} stuck jobs to {}", JobStatus::Pending);
    Ok(n)
}

/// How many jobs `reset_stuck_jobs` with these arguments would reset now (its dry run).
pub fn count_stuck_jobs(
    pool: &LazyPool,
    job_type: Option<JobType>,
    older_than_seconds: f64,
) -> Result<u64> {
    check_older_than(older_than_seconds)?;
    let job_type = job_type.map(JobType::as_str);
    let n: i64 = pool.run_idempotent(|c| {
        Ok(c.query_one(
            concat!("SELECT count(*) FROM jobs WHERE ", stuck!()),
            &[&job_type, &older_than_seconds],
        )
        .context("counting stuck jobs")?
        .get(0))
    })?;
    Ok(n.unsigned_abs())
}

/// How many of `prompts` are queued already, per job type (what `add_jobs` skips).
pub fn queued_job_types(pool: &LazyPool, prompts: &[String]) -> Result<HashMap<String, u64>> {
    let mut unique: Vec<&str> = prompts.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut counts = HashMap::new();
    pool.run_idempotent(|c| {
        counts.clear();
        for chunk in unique.chunks(BATCH) {
            for row in c
                .query(
                    "SELECT job_type, count(*) FROM jobs
                     WHERE prompt_text = ANY($1::text[]) GROUP BY job_type",
                    &[&chunk],
                )
                .context("looking up queued prompts")?
            {
                let n: i64 = row.get(1);
                *counts.entry(row.get::<_, String>(0)).or_insert(0) += n.unsigned_abs();
            }
        }
        Ok(())
    })?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::copy_escape;

    #[test]
    fn copy_escaping() {
        let mut out = Vec::new();
        copy_escape("a\tb\nc\\d\re \\. 中文", &mut out);
        assert_eq!(
            out,
            b"a\\tb\\nc\\\\d\\re \\\\. \xe4\xb8\xad\xe6\x96\x87".to_vec()
        );
    }
}
