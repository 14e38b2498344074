//! Where the database is, and how many connections to keep.
//!
//! The DSN is taken, in order, from the argument, from `JOB_MANAGER_DSN`, or built from the
//! `POSTGRES_*` variables the replaced system read. Parsing is the driver's own
//! (`postgres::Config::from_str`), so URL and key=value DSNs are both accepted. Nothing here does
//! I/O, and nothing here ever prints the password.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;

use crate::errors::{Error, Result};

/// Default size of the connection pool.
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Default time allowed to open a connection, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 10.0;
const MAX_POOL_SIZE: u32 = 1000;

/// A validated connection configuration.
#[derive(Clone)]
pub struct Settings {
    pg: postgres::Config,
    redacted: String,
    pool_size: u32,
    connect_timeout: Duration,
}

impl Settings {
    /// Resolves the DSN (argument, then `JOB_MANAGER_DSN`, then `POSTGRES_*`) and validates
    /// everything. `env` looks a variable up; production passes `std::env::var`.
    pub fn resolve(
        dsn: Option<&str>,
        pool_size: u32,
        connect_timeout_s: f64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let pg = match dsn.map(str::to_owned).or_else(|| env("JOB_MANAGER_DSN")) {
            Some(text) => parse_dsn(&text)?,
            None => from_postgres_env(&env)?,
        };
        Self::new(pg, pool_size, connect_timeout_s)
    }

    fn new(mut pg: postgres::Config, pool_size: u32, connect_timeout_s: f64) -> Result<Self> {
        if !(1..=MAX_POOL_SIZE).contains(&pool_size) {
            return Err(Error::Configuration(format!(
                "pool_size must be between 1 and {MAX_POOL_SIZE}, got {pool_size}"
            )));
        }
        if !(connect_timeout_s.is_finite() && connect_timeout_s > 0.0) {
            return Err(Error::Configuration(format!(
                "connect_timeout must be a positive number of seconds, got {connect_timeout_s}"
            )));
        }
        if pg.get_hosts().is_empty() {
            return Err(Error::Configuration(
                "the DSN names no host; add one, e.g. postgresql://user:password@HOST:5432/db"
                    .into(),
            ));
        }
        if pg.get_user().is_none() {
            return Err(Error::Configuration(
                "the DSN names no user; add one, e.g. postgresql://USER:password@host:5432/db"
                    .into(),
            ));
        }
        let connect_timeout = Duration::from_secs_f64(connect_timeout_s);
        pg.connect_timeout(connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("job_manager");
        }
        let redacted = redact(&pg);
        Ok(Settings {
            pg,
            redacted,
            pool_size,
            connect_timeout,
        })
    }

    pub fn pg(&self) -> &postgres::Config {
        &self.pg
    }

    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The DSN as a URL with the password replaced by `***`: safe to log and to show.
    pub fn redacted_dsn(&self) -> &str {
        &self.redacted
    }

    /// The password, for scrubbing it out of messages that came from elsewhere.
    pub fn password(&self) -> Option<&str> {
        self.pg
            .get_password()
            .and_then(|p| std::str::from_utf8(p).ok())
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("dsn", &self.redacted)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

fn parse_dsn(text: &str) -> Result<postgres::Config> {
    if text.trim().is_empty() {
        return Err(Error::Configuration(
            "the DSN is empty; pass e.g. postgresql://user:password@host:5432/db".into(),
        ));
    }
    postgres::Config::from_str(text).map_err(|e| {
        // The driver's parse errors name the option, never its value; the DSN itself (which
        // may hold a password) is never echoed.
        Error::Configuration(format!(
            "invalid DSN ({e}); expected postgresql://user:password@host:port/dbname or \
             'host=... port=... dbname=... user=... password=...'"
        ))
    })
}

/// The replaced system's variables: `POSTGRES_HOST` (default `postgres`), `POSTGRES_PORT`
/// (5432), `POSTGRES_DB`, `POSTGRES_USER`, `POSTGRES_PASSWORD` (each default `airflow`).
fn from_postgres_env(env: &impl Fn(&str) -> Option<String>) -> Result<postgres::Config> {
    let get = |name: &str, default: &str| env(name).unwrap_or_else(|| default.to_owned());
    let port_text = get("POSTGRES_PORT", "5432");
    let port: u16 = port_text.trim().parse().map_err(|_| {
        Error::Configuration(format!(
            "POSTGRES_PORT must be a port number (1-65535), got {port_text:?}"
        ))
    })?;
    let mut pg = postgres::Config::new();
    pg.host(&get("POSTGRES_HOST", "postgres"))
        .port(port)
        .dbname(&get("POSTGRES_DB", "airflow"))
        .user(&get("POSTGRES_USER", "airflow"))
        .password(get("POSTGRES_PASSWORD", "airflow"));
    Ok(pg)
}

fn redact(pg: &postgres::Config) -> String {
    let user = pg.get_user().unwrap_or("");
    let secret = if pg.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let db = pg.get_dbname().unwrap_or(user);
    format!("postgresql://{user}{secret}@{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn url_dsn_is_parsed_and_redacted() {
        let s = Settings::resolve(
            Some("postgresql://bob:hunter2@db.example:6543/queue"),
            4,
            10.0,
            no_env,
        )
        .unwrap();
        assert_eq!(
            s.redacted_dsn(),
            "postgresql://bob:***@db.example:6543/queue"
        );
        assert_eq!(s.password(), Some("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn key_value_dsn_is_accepted() {
        let s = Settings::resolve(
            Some("host=localhost port=5433 dbname=d user=u password='p w'"),
            2,
            1.5,
            no_env,
        )
        .unwrap();
        assert_eq!(s.redacted_dsn(), "postgresql://u:***@localhost:5433/d");
        assert_eq!(s.password(), Some("p w"));
        assert_eq!(s.connect_timeout(), Duration::from_millis(1500));
    }

    #[test]
    fn env_dsn_comes_before_postgres_variables() {
        let env = |k: &str| match k {
            "JOB_MANAGER_DSN" => Some("postgresql://a@h1/d1".to_owned()),
            "POSTGRES_HOST" => Some("h2".to_owned()),
            _ => None,
        };
        let s = Settings::resolve(None, 4, 10.0, env).unwrap();
        assert_eq!(s.redacted_dsn(), "postgresql://a@h1:5432/d1");
    }

    #[test]
    fn postgres_variables_have_the_old_defaults() {
        let s = Settings::resolve(None, 4, 10.0, no_env).unwrap();
        assert_eq!(
            s.redacted_dsn(),
            "postgresql://airflow:***@postgres:5432/airflow"
        );
        assert_eq!(s.password(), Some("airflow"));
    }

    #[test]
    fn bad_port_variable_is_a_configuration_error() {
        let env = |k: &str| (k == "POSTGRES_PORT").then(|| "fivefourthreetwo".to_owned());
        let err = Settings::resolve(None, 4, 10.0, env).unwrap_err();
        assert!(matches!(err, Error::Configuration(_)));
        assert!(err.to_string().contains("POSTGRES_PORT"));
    }

    #[test]
    fn bad_dsn_never_echoes_the_password() {
        for dsn in [
            "postgresql://u:topsecret@h:notaport/db",
            "host=h password=topsecret port=x",
            "host=h password='topsecret",
            "nonsense topsecret",
        ] {
            let err = Settings::resolve(Some(dsn), 4, 10.0, no_env).unwrap_err();
            assert!(matches!(err, Error::Configuration(_)), "{dsn}: {err}");
            assert!(!err.to_string().contains("topsecret"), "{dsn}: {err}");
        }
    }

    #[test]
    fn pool_size_and_timeout_are_validated() {
        let dsn = Some("postgresql://u@h/d");
        assert!(Settings::resolve(dsn, 0, 10.0, no_env).is_err());
        assert!(Settings::resolve(dsn, 1001, 10.0, no_env).is_err());
        assert!(Settings::resolve(dsn, 4, 0.0, no_env).is_err());
        assert!(Settings::resolve(dsn, 4, f64::NAN, no_env).is_err());
        assert!(Settings::resolve(dsn, 4, -1.0, no_env).is_err());
    }

    #[test]
    fn empty_dsn_and_missing_host_are_rejected() {
        assert!(Settings::resolve(Some("  "), 4, 10.0, no_env).is_err());
        let err = Settings::resolve(Some("dbname=x user=u"), 4, 10.0, no_env).unwrap_err();
        assert!(err.to_string().contains("no host"));
    }
}
