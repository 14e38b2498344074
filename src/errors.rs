//! The crate's one error type.
//!
//! Every failure is a variant here; the binding layer maps each variant to one Python class of
//! the `job_manager.exceptions` hierarchy. Messages say what went wrong and what to do, and never
//! carry a password: connections are described by `Settings::redacted_dsn`, which is built from
//! the parsed user, hosts, ports and database (never by searching text for the password, which
//! would also mangle every word that happens to contain it). The one exception is pg_dump's
//! stderr, text from a program that was handed the password: [`Error::scrub`] masks it there.

/// The result type used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in job_manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DSN or environment is wrong (bad syntax, authentication refused, missing database).
    #[error("{0}")]
    Configuration(String),
    /// The server cannot be reached (refused, timed out, unresolvable, gone mid-call).
    #[error("{0}")]
    Unavailable(String),
    /// The schema is not what this version expects (a migration failed, a lock timed out).
    #[error("{0}")]
    Schema(String),
    /// An argument is not acceptable (unknown job type, NUL byte, negative age, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The server refused a statement for a reason that is not one of the above.
    #[error("{0}")]
    Database(String),
    /// A backup, restore or retention step failed (I/O, pg_dump, refused input).
    #[error("{0}")]
    Backup(String),
    /// A backup file is truncated, edited or not a backup.
    #[error("{0}")]
    BackupCorrupt(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// The message with every occurrence of `secret` replaced by `***`. Only for text that
    /// came from a program that was given the password (pg_dump's stderr): job_manager's own
    /// messages are redacted by structure (`Settings::redacted_dsn`) and never pass here.
    #[must_use]
    pub fn scrub(self, secret: Option<&str>) -> Self {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return self;
        };
        let clean = |m: String| m.replace(secret, "***");
        match self {
            Error::Configuration(m) => Error::Configuration(clean(m)),
            Error::Unavailable(m) => Error::Unavailable(clean(m)),
            Error::Schema(m) => Error::Schema(clean(m)),
            Error::InvalidArgument(m) => Error::InvalidArgument(clean(m)),
            Error::Database(m) => Error::Database(clean(m)),
            Error::Backup(m) => Error::Backup(clean(m)),
            Error::BackupCorrupt(m) => Error::BackupCorrupt(clean(m)),
        }
    }

    /// Classifies a driver error by its SQLSTATE (or its absence), with `context` naming what
    /// was being done.
    pub fn from_postgres(context: &str, err: &postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code();
            let detail = describe_db_error(db);
            return match code {
                // invalid_authorization_specification, invalid_password
                "28000" | "28P01" => Error::Configuration(format!(
                    "{context}: the server refused the login ({detail}); check the user and \
                     password in JOB_MANAGER_DSN or POSTGRES_USER/POSTGRES_PASSWORD"
                )),
                // invalid_catalog_name
                "3D000" => Error::Configuration(format!(
                    "{context}: {detail}; create it or fix the database name in the DSN"
                )),
                // lock_not_available (lock_timeout)
                "55P03" => Error::Schema(format!(
                    "{context}: a table is locked by another session and the lock was not \
                     granted in time ({detail}); find the holder in pg_stat_activity/pg_locks \
                     and retry when it is idle"
                )),
                // admin_shutdown, crash_shutdown, cannot_connect_now
                "57P01" | "57P02" | "57P03" => Error::Unavailable(format!(
                    "{context}: the server is shutting down or starting up ({detail})"
                )),
                // program_limit_exceeded: e.g. a prompt too long for the unique btree index
                "54000" => Error::InvalidArgument(format!(
                    "{context}: a value is too large for the database ({detail})"
                )),
                // undefined_table
                "42P01" => Error::Schema(format!(
                    "{context}: {detail}; run JobManager().init_database() (or \
                     `python -m job_manager init`) first"
                )),
                _ if code.starts_with("08") => {
                    Error::Unavailable(format!("{context}: connection failure ({detail})"))
                }
                _ => Error::Database(format!("{context}: {detail}")),
            };
        }
        // No SQLSTATE: an I/O, protocol or closed-connection error, or a conversion error.
        let text = error_chain(err);
        if err.is_closed() || err.source_is_io() {
            Error::Unavailable(format!(
                "{context}: lost the connection to the server ({text})"
            ))
        } else {
            Error::Database(format!("{context}: {text}"))
        }
    }
}

/// `message (SQLSTATE xxxxx)`, plus the server's detail and hint when it sent them.
fn describe_db_error(db: &postgres::error::DbError) -> String {
    let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(d) = db.detail() {
        s.push_str("; ");
        s.push_str(d);
    }
    if let Some(h) = db.hint() {
        s.push_str("; hint: ");
        s.push_str(h);
    }
    s
}

/// The error and its sources, joined by `: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let piece = s.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = s.source();
    }
    text
}

trait SourceIsIo {
    fn source_is_io(&self) -> bool;
}

impl SourceIsIo for postgres::Error {
    fn source_is_io(&self) -> bool {
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            if s.is::<std::io::Error>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_sources_once() {
        let io = std::io::Error::other("inner");
        assert_eq!(error_chain(&io), "inner");
    }
}
