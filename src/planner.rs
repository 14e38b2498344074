//! Planner statistics after bulk loads, shared by the queue (`add_jobs`), restores and
//! imports, and kept apart from `maintenance` (which reports on backups) so that neither the
//! backup code nor the queue depends on the upkeep module.

use crate::errors::Result;
use crate::pool::Context;

/// Statistics for the queue's plans right after a large load (`ANALYZE` of `targets`, e.g.
/// `"jobs (job_type, status)"`): a 3,000-row sample (statistics target 10) costs a few
/// milliseconds where the default 30,000-row one reads most of a large table, and is plenty
/// for columns of a few values. The load changed far more than the 2% that makes autovacuum
/// analyze the queue tables (migration V4), so full detail follows at its next visit.
pub fn analyze_after_load(client: &mut postgres::Client, targets: &[&str]) -> Result<()> {
    let what = "refreshing statistics after a bulk load";
    let mut sql = String::from("SET LOCAL default_statistics_target = 10;");
    for t in targets {
        sql.push_str(" ANALYZE ");
        sql.push_str(t);
        sql.push(';');
    }
    // In a transaction of its own: the setting ends with it, and an error rolls it back.
    let mut tx = client.transaction().context(what)?;
    tx.batch_execute(&sql).context(what)?;
    tx.commit().context(what)
}
