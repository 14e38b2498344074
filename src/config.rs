//! Where the database is, and how many connections to keep.
//!
//! The DSN is taken, in order, from the argument, from `JOB_MANAGER_DSN`, or built from the
//! `POSTGRES_*` variables the replaced system read. Parsing is the driver's own
//! (`postgres::Config::from_str`), so URL and key=value DSNs are both accepted. Nothing here does
//! I/O, and nothing here ever prints the password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode as DriverSslMode, SslNegotiation};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::errors::{Error, Result};
use crate::transport::{AcceptAnyCert, ChainOnly, Negotiation};

/// Default size of the connection pool.
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Default time allowed to open a connection, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 10.0;
/// Default time an ordinary call may wait without any byte moving, in seconds.
pub const DEFAULT_IO_TIMEOUT_S: f64 = 30.0;
/// Default for backups and restores (index builds and COPY commits can be silent for long).
pub const DEFAULT_LONG_IO_TIMEOUT_S: f64 = 3600.0;
/// Default `application_name`, shown in `pg_stat_activity`.
pub const DEFAULT_APPLICATION_NAME: &str = "job_manager";
const MAX_POOL_SIZE: u32 = 1000;
/// The longest timeout accepted (a week): anything larger is a mistake, not a setting.
const MAX_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

/// What `JobManager(...)` was given besides the DSN. Integers arrive as `i128` so that a
/// negative or huge Python int is a configuration error, not an overflow.
#[derive(Debug, Clone)]
pub struct Options {
    pub pool_size: i128,
    pub connect_timeout_s: f64,
    pub io_timeout_s: f64,
    pub long_io_timeout_s: f64,
    pub application_name: Option<String>,
    /// Named prepared statements, cached per connection (the fast path). Off for PgBouncer in
    /// `pool_mode=transaction`, which cannot keep them: every statement is then sent unnamed,
    /// parsed and executed in one round trip.
    pub prepared_statements: bool,
    /// The most connections `get_connection()` keeps open (psycopg2, beside the pool);
    /// `None`: as many as `pool_size`.
    pub dbapi_pool_size: Option<i128>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: i128::from(DEFAULT_POOL_SIZE),
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            io_timeout_s: DEFAULT_IO_TIMEOUT_S,
            long_io_timeout_s: DEFAULT_LONG_IO_TIMEOUT_S,
            application_name: None,
            prepared_statements: true,
            dbapi_pool_size: None,
        }
    }
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Configuration(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, \
                     verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings as given (for pg_dump's environment) and as built for rustls.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    pub root_cert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The attempt made first: plaintext for disable/allow, TLS for the others.
    first: Negotiation,
    /// For `allow`: the TLS attempt made when the server refuses plaintext.
    second: Option<Negotiation>,
}

impl Tls {
    pub fn attempts(&self) -> impl Iterator<Item = &Negotiation> {
        std::iter::once(&self.first).chain(self.second.as_ref())
    }
}

/// A validated connection configuration.
#[derive(Clone)]
pub struct Settings {
    pg: postgres::Config,
    redacted: String,
    pool_size: u32,
    dbapi_pool_size: u32,
    connect_timeout: Duration,
    io_timeout: Duration,
    long_io_timeout: Duration,
    prepared_statements: bool,
    tls: Tls,
    unix_socket: bool,
}

impl Settings {
    /// Resolves the DSN (argument, then `JOB_MANAGER_DSN`, then `POSTGRES_*`) and validates
    /// everything. `env` looks a variable up; production passes `std::env::var`.
    pub fn resolve(
        dsn: Option<&str>,
        options: &Options,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let (pg, extras) = match dsn.map(str::to_owned).or_else(|| env("JOB_MANAGER_DSN")) {
            Some(text) => parse_dsn(&text)?,
            None => (from_postgres_env(&env)?, Extras::default()),
        };
        Self::new(pg, extras, options)
    }

    fn new(mut pg: postgres::Config, extras: Extras, o: &Options) -> Result<Self> {
        let pool_size = u32::try_from(o.pool_size)
            .ok()
            .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
            .ok_or_else(|| {
                Error::Configuration(format!(
                    "pool_size must be between 1 and {MAX_POOL_SIZE}, got {}",
                    o.pool_size
                ))
            })?;
        let dbapi_pool_size = match o.dbapi_pool_size {
            None => pool_size,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                .ok_or_else(|| {
                    Error::Configuration(format!(
                        "dbapi_pool_size must be between 1 and {MAX_POOL_SIZE}, got {n}"
                    ))
                })?,
        };
        let connect_timeout = seconds("connect_timeout", o.connect_timeout_s)?;
        let io_timeout = seconds("io_timeout", o.io_timeout_s)?;
        let long_io_timeout = seconds("long_io_timeout", o.long_io_timeout_s)?;
        if pg.get_hosts().is_empty() {
            return Err(Error::Configuration(
                "the DSN names no host; add one, e.g. postgresql://user:password@HOST:5432/db"
                    .into(),
            ));
        }
        // No host name holds '@': in a URL, one means a password with a raw '@' (split at
        // its first '@'), and the rest of the password would be shown as the host.
        if pg
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Tcp(name) if name.contains('@')))
        {
            return Err(Error::Configuration(
                "the DSN's host holds an '@': a password (or user) containing '@' must be \
                 percent-encoded in a postgresql:// URL, '@' as %40"
                    .into(),
            ));
        }
        if pg.get_user().is_none() {
            return Err(Error::Configuration(
                "the DSN names no user; add one, e.g. postgresql://USER:password@host:5432/db"
                    .into(),
            ));
        }
        pg.connect_timeout(connect_timeout);
        if let Some(name) = &o.application_name {
            if name.contains('\0') {
                return Err(Error::Configuration(
                    "application_name contains a NUL byte".into(),
                ));
            }
            pg.application_name(name);
        } else if pg.get_application_name().is_none() {
            pg.application_name(DEFAULT_APPLICATION_NAME);
        }
        pg.notice_callback(log_server_notice);
        // A dead peer or NAT is noticed by TCP within about 25 s unless the DSN says otherwise
        // (the driver's default idle time is 2 hours).
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(Duration::from_secs(10));
        }
        if pg.get_keepalives_interval().is_none() {
            pg.keepalives_interval(Duration::from_secs(5));
        }
        if pg.get_keepalives_retries().is_none() {
            pg.keepalives_retries(3);
        }
        // Data sent and not acknowledged for this long kills the connection (Linux).
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(io_timeout);
        }
        let unix_socket = pg.get_hosts().iter().any(|h| !matches!(h, Host::Tcp(_)));
        let tls = build_tls(&extras)?;
        if unix_socket {
            if matches!(
                tls.mode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ) {
                return Err(Error::Configuration(format!(
                    "sslmode={} cannot be used with a Unix-domain socket host; use a TCP host",
                    tls.mode.as_str()
                )));
            }
            pg.ssl_mode(DriverSslMode::Disable);
        } else {
            // The driver hands us the raw socket; transport.rs negotiates TLS (see there).
            pg.ssl_mode(DriverSslMode::Require);
            pg.ssl_negotiation(SslNegotiation::Direct);
        }
        let redacted = redact(&pg, tls.mode);
        Ok(Settings {
            pg,
            redacted,
            pool_size,
            dbapi_pool_size,
            connect_timeout,
            io_timeout,
            long_io_timeout,
            prepared_statements: o.prepared_statements,
            tls,
            unix_socket,
        })
    }

    pub fn pg(&self) -> &postgres::Config {
        &self.pg
    }

    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// The most connections `get_connection()` keeps open in a process (default `pool_size`).
    pub fn dbapi_pool_size(&self) -> u32 {
        self.dbapi_pool_size
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long an ordinary call may wait with no byte moving before the connection is
    /// declared dead.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// The same for backups and restores ([`crate::pool::LazyPool::run_long`]).
    pub fn long_io_timeout(&self) -> Duration {
        self.long_io_timeout
    }

    pub fn prepared_statements(&self) -> bool {
        self.prepared_statements
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Whether the connection goes through a Unix-domain socket (no TLS, no deadline wrapper).
    pub fn unix_socket(&self) -> bool {
        self.unix_socket
    }

    /// `user@host:port/dbname` with every password left out: safe to log and to show.
    pub fn redacted_dsn(&self) -> &str {
        &self.redacted
    }

    /// The password (for pg_dump's environment only).
    pub fn password(&self) -> Option<&str> {
        self.pg
            .get_password()
            .and_then(|p| std::str::from_utf8(p).ok())
    }

    /// `target_session_attrs` as libpq spells it (the driver knows `read-write` and `any`).
    fn libpq_target_session_attrs(&self) -> &'static str {
        if matches!(
            self.pg.get_target_session_attrs(),
            postgres::config::TargetSessionAttrs::ReadWrite
        ) {
            "read-write"
        } else {
            "any"
        }
    }

    /// libpq's keywords for TLS as our own connections do it, channel binding and
    /// application_name (part of [`Settings::dbapi_params`]).
    fn libpq_tls_params(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("sslmode", self.tls.mode.as_str().to_owned())];
        if let Some(root) = &self.tls.root_cert {
            // libpq before 16 reads "system" as a file name: give it the OS bundle instead.
            let root = if root == "system" {
                SYSTEM_BUNDLES
                    .iter()
                    .find(|p| Path::new(p).exists())
                    .map_or_else(|| root.clone(), |p| (*p).to_owned())
            } else {
                root.clone()
            };
            env.push(("sslrootcert", root));
        }
        if let Some(cert) = &self.tls.cert {
            env.push(("sslcert", cert.display().to_string()));
        }
        if let Some(key) = &self.tls.key {
            env.push(("sslkey", key.display().to_string()));
        }
        if let Some(name) = self.pg.get_application_name() {
            env.push(("application_name", name.to_owned()));
        }
        // Always given, so libpq never falls back to its default ("prefer") or to a
        // PGCHANNELBINDING of the environment: `require` must stay required.
        env.push((
            "channel_binding",
            match self.pg.get_channel_binding() {
                postgres::config::ChannelBinding::Disable => "disable",
                postgres::config::ChannelBinding::Prefer => "prefer",
                // A variant a later driver adds: fail closed.
                _ => "require",
            }
            .to_owned(),
        ));
        env
    }
}

impl Settings {
    /// libpq's connection keywords for a connection made as the pool's are (psycopg2's in
    /// `get_connection()`, pg_dump's in `dump_database`): hosts, ports, database, user, TLS,
    /// channel binding, `connect_timeout`, `application_name`, TCP keepalives and
    /// `tcp_user_timeout`, `target_session_attrs` and the DSN's `options`. The password is
    /// among them when there is one: to hand to libpq only, never to be logged or shown.
    pub fn dbapi_params(&self) -> Vec<(&'static str, String)> {
        let pg = &self.pg;
        let join = |items: Vec<String>| items.join(",");
        let mut out = vec![(
            "host",
            join(
                pg.get_hosts()
                    .iter()
                    .map(|h| match h {
                        Host::Tcp(name) => name.clone(),
                        #[cfg(unix)]
                        Host::Unix(path) => path.display().to_string(),
                    })
                    .collect(),
            ),
        )];
        if !pg.get_hostaddrs().is_empty() {
            out.push((
                "hostaddr",
                join(pg.get_hostaddrs().iter().map(ToString::to_string).collect()),
            ));
        }
        // Every keyword libpq would otherwise take from the environment (PGPORT, PGDATABASE,
        // PGTARGETSESSIONATTRS, ...) is given, with the driver's own defaults: the queue's
        // connections never read those variables, so neither may these.
        let ports = pg.get_ports();
        out.push((
            "port",
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                join(ports.iter().map(ToString::to_string).collect())
            },
        ));
        let user = pg.get_user().unwrap_or_default();
        out.push(("dbname", pg.get_dbname().unwrap_or(user).to_owned()));
        out.push(("user", user.to_owned()));
        if let Some(password) = self.password() {
            out.push(("password", password.to_owned()));
        }
        if let Some(options) = pg.get_options() {
            out.push(("options", options.to_owned()));
        }
        // libpq counts whole seconds (and treats 1 as 2): round up, never down to "forever".
        let connect = self.connect_timeout.as_secs_f64().ceil().max(1.0);
        out.push(("connect_timeout", format!("{connect:.0}")));
        if !self.unix_socket {
            out.push(("keepalives", u8::from(pg.get_keepalives()).to_string()));
            out.push((
                "keepalives_idle",
                pg.get_keepalives_idle().as_secs().max(1).to_string(),
            ));
            if let Some(i) = pg.get_keepalives_interval() {
                out.push(("keepalives_interval", i.as_secs().max(1).to_string()));
            }
            if let Some(n) = pg.get_keepalives_retries() {
                out.push(("keepalives_count", n.to_string()));
            }
            if let Some(t) = pg.get_tcp_user_timeout() {
                out.push(("tcp_user_timeout", t.as_millis().max(1).to_string()));
            }
        }
        out.push((
            "target_session_attrs",
            self.libpq_target_session_attrs().to_owned(),
        ));
        out.extend(self.libpq_tls_params());
        out
    }
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("dsn", &self.redacted)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("sslmode", &self.tls.mode)
            .finish_non_exhaustive()
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_TIMEOUT_S) {
        return Err(Error::Configuration(format!(
            "{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S} (a week), \
             got {value}"
        )));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|e| Error::Configuration(format!("{name}: {e}")))
        .map(|d| d.max(Duration::from_millis(1)))
}

/// The libpq options the driver does not know, taken out of the DSN.
#[derive(Debug, Default)]
struct Extras {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

impl Extras {
    /// Takes `key` if it is one of ours; `false` leaves it to the driver.
    fn take(&mut self, key: &str, value: String) -> Result<bool> {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            // Chosen by transport.rs; a DSN cannot change it.
            "sslnegotiation" => return Ok(true),
            _ => return Ok(false),
        };
        if value.contains('\0') {
            return Err(Error::Configuration(format!(
                "the DSN's {key} contains a NUL byte"
            )));
        }
        *slot = Some(value);
        Ok(true)
    }
}

/// The server's notices and warnings, under our own logger (`job_manager.server`) rather than
/// the driver's (`postgres.config`), at a level that fits them: `... already exists, skipping`
/// (an additive migration finding what it adds already there) is not news, so it is DEBUG;
/// other notices are INFO and warnings WARNING.
fn log_server_notice(notice: postgres::error::DbError) {
    let level = match notice.severity() {
        "WARNING" => log::Level::Warn,
        "NOTICE" if !notice.message().ends_with(", skipping") => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(target: "job_manager::server", level, "server {}: {}", notice.severity(), notice.message());
}

fn parse_dsn(text: &str) -> Result<(postgres::Config, Extras)> {
    if text.trim().is_empty() {
        return Err(Error::Configuration(
            "the DSN is empty; pass e.g. postgresql://user:password@host:5432/db".into(),
        ));
    }
    let mut extras = Extras::default();
    let rest = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        split_url(text, &mut extras)?
    } else {
        split_key_values(text, &mut extras)?
    };
    let pg = postgres::Config::from_str(&rest).map_err(|e| {
        // The driver's parse errors name the option, never its value; the DSN itself (which
        // may hold a password) is never echoed.
        Error::Configuration(format!(
            "invalid DSN ({e}); expected postgresql://user:password@host:port/dbname or \
             'host=... port=... dbname=... user=... password=...'"
        ))
    })?;
    Ok((pg, extras))
}

/// A URL DSN without our query parameters.
fn split_url(text: &str, extras: &mut Extras) -> Result<String> {
    let Some((base, query)) = text.split_once('?') else {
        return Ok(text.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key_text = percent_decode(key)?;
        if !extras.take(&key_text, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Configuration("invalid DSN: a bad %-escape in its options".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Configuration("invalid DSN: an option is not valid UTF-8".into()))
}

/// A `key=value` DSN without our keys, re-quoted for the driver.
fn split_key_values(text: &str, extras: &mut Extras) -> Result<String> {
    let bad = |what: &str| {
        Error::Configuration(format!(
            "invalid DSN ({what}); expected 'host=... port=... dbname=... user=... password=...'"
        ))
    };
    let mut chars = text.chars().peekable();
    let mut kept = Vec::new();
    let mut taken = false;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad("an option without '='"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("a dangling '\\'"))?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad("an unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| bad("a dangling '\\'"))?);
                } else {
                    value.push(c);
                }
            }
        }
        if extras.take(&key, value.clone())? {
            taken = true;
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    // Untouched when none of ours was there: the driver parses (and judges) the original.
    Ok(if taken {
        kept.join(" ")
    } else {
        text.to_owned()
    })
}

fn build_tls(x: &Extras) -> Result<Tls> {
    let root_cert = x.sslrootcert.clone();
    let system = root_cert.as_deref() == Some("system");
    let mode = match x.sslmode.as_deref() {
        Some(m) => SslMode::parse(m)?,
        // libpq: sslrootcert=system makes verify-full the default.
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(Error::Configuration(format!(
            "sslrootcert=system requires sslmode=verify-full (got {}), as in libpq",
            mode.as_str()
        )));
    }
    let cert = x.sslcert.as_ref().map(PathBuf::from);
    let key = x.sslkey.as_ref().map(PathBuf::from);
    let (first, second) = if mode == SslMode::Disable {
        (Negotiation::Plain, None)
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &root_cert {
            Some(r) => Some(load_roots(r)?),
            None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(Error::Configuration(format!(
                    "sslmode={} needs the CA that signed the server's certificate: add \
                     sslrootcert=/path/to/ca.pem (or sslrootcert=system for the OS store)",
                    mode.as_str()
                )))
            }
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Configuration(format!("TLS setup failed: {e}")))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match roots {
            // libpq: require with a root certificate behaves as verify-ca.
            Some(roots) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| Error::Configuration(format!("sslrootcert: {e}")))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
            None => Arc::new(AcceptAnyCert(provider.clone())),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&cert, &key) {
            (Some(c), Some(k)) => {
                let chain = read_certs(c, "sslcert")?;
                check_key_permissions(k)?;
                let key = PrivateKeyDer::from_pem_file(k).map_err(|e| {
                    Error::Configuration(format!(
                        "sslkey {}: cannot read a PEM private key ({e})",
                        k.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::Configuration(format!("sslcert/sslkey are not a pair: {e}"))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Configuration(
                    "a client certificate needs both sslcert and sslkey".into(),
                ))
            }
        };
        let tls = Negotiation::Tls {
            config: Arc::new(config),
            plaintext_fallback: mode == SslMode::Prefer,
        };
        if mode == SslMode::Allow {
            (Negotiation::Plain, Some(tls))
        } else {
            (tls, None)
        }
    };
    Ok(Tls {
        mode,
        root_cert,
        cert,
        key,
        first,
        second,
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| {
            Error::Configuration(format!(
                "{what} {}: cannot read PEM certificates ({e})",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Configuration(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_roots(root: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        // The OS store, as libpq's sslrootcert=system: what the host's administrators trust.
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Configuration(
                "sslrootcert=system: no CA certificate found in the operating system's store \
                 (install ca-certificates, or name a CA file)"
                    .into(),
            ));
        }
    } else {
        let (added, _) =
            store.add_parsable_certificates(read_certs(Path::new(root), "sslrootcert")?);
        if added == 0 {
            return Err(Error::Configuration(format!(
                "sslrootcert {root} holds no usable CA certificate"
            )));
        }
    }
    Ok(store)
}

/// libpq refuses a private key that others can read; so do we.
#[allow(clippy::verbose_bit_mask)] // permission bits read better as octal masks
fn check_key_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Configuration(format!("sslkey {}: {e}", path.display())))?;
    let mode = meta.mode();
    let ok = if meta.uid() == 0 {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    };
    if !ok {
        return Err(Error::Configuration(format!(
            "sslkey {} is readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
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

/// Built from the parsed fields, never by editing the DSN's text: the password cannot show.
fn redact(pg: &postgres::Config, mode: SslMode) -> String {
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
    let ssl = if mode == SslMode::Prefer {
        String::new()
    } else {
        format!("?sslmode={}", mode.as_str())
    };
    format!("postgresql://{user}{secret}@{}/{db}{ssl}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve_test(
        dsn: Option<&str>,
        pool_size: i128,
        connect_timeout_s: f64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let options = Options {
            pool_size,
            connect_timeout_s,
            ..Options::default()
        };
        Settings::resolve(dsn, &options, env)
    }

    #[test]
    fn url_dsn_is_parsed_and_redacted() {
        let s = resolve_test(
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
        let s = resolve_test(
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
        let s = resolve_test(None, 4, 10.0, env).unwrap();
        assert_eq!(s.redacted_dsn(), "postgresql://a@h1:5432/d1");
    }

    #[test]
    fn postgres_variables_have_the_old_defaults() {
        let s = resolve_test(None, 4, 10.0, no_env).unwrap();
        assert_eq!(
            s.redacted_dsn(),
            "postgresql://airflow:***@postgres:5432/airflow"
        );
        assert_eq!(s.password(), Some("airflow"));
    }

    #[test]
    fn bad_port_variable_is_a_configuration_error() {
        let env = |k: &str| (k == "POSTGRES_PORT").then(|| "fivefourthreetwo".to_owned());
        let err = resolve_test(None, 4, 10.0, env).unwrap_err();
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
            let err = resolve_test(Some(dsn), 4, 10.0, no_env).unwrap_err();
            assert!(matches!(err, Error::Configuration(_)), "{dsn}: {err}");
            assert!(!err.to_string().contains("topsecret"), "{dsn}: {err}");
        }
    }

    #[test]
    fn pool_size_and_timeout_are_validated() {
        let dsn = Some("postgresql://u@h/d");
        assert!(resolve_test(dsn, 0, 10.0, no_env).is_err());
        assert!(resolve_test(dsn, 1001, 10.0, no_env).is_err());
        assert!(resolve_test(dsn, 4, 0.0, no_env).is_err());
        assert!(resolve_test(dsn, 4, f64::NAN, no_env).is_err());
        assert!(resolve_test(dsn, 4, -1.0, no_env).is_err());
    }

    #[test]
    fn empty_dsn_and_missing_host_are_rejected() {
        assert!(resolve_test(Some("  "), 4, 10.0, no_env).is_err());
        let err = resolve_test(Some("dbname=x user=u"), 4, 10.0, no_env).unwrap_err();
        assert!(err.to_string().contains("no host"));
    }

    #[test]
    fn our_options_are_taken_out_of_url_and_key_value_dsns() {
        let s = resolve_test(
            Some("postgresql://u:pw@db:5433/q?sslmode=require&application_name=x%20y"),
            4,
            10.0,
            no_env,
        )
        .unwrap();
        assert_eq!(s.tls().mode, SslMode::Require);
        assert_eq!(s.pg().get_application_name(), Some("x y"));
        assert_eq!(
            s.redacted_dsn(),
            "postgresql://u:***@db:5433/q?sslmode=require"
        );
        let s = resolve_test(
            Some("host=db user=u password='it''s' sslmode = disable dbname=q"),
            4,
            10.0,
            no_env,
        );
        assert!(s.is_err(), "'' is not an escape in libpq key=value syntax");
        let s = resolve_test(
            Some(r"host=db user=u password='it\'s \\ x' sslmode=disable dbname=q"),
            4,
            10.0,
            no_env,
        )
        .unwrap();
        assert_eq!(s.tls().mode, SslMode::Disable);
        assert_eq!(s.password(), Some(r"it's \ x"));
    }

    #[test]
    fn sslmode_rules_follow_libpq() {
        let bad = |dsn: &str| {
            resolve_test(Some(dsn), 4, 10.0, no_env)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("postgresql://u@h/d?sslmode=sometimes").contains("sslmode"));
        assert!(bad("postgresql://u@h/d?sslmode=verify-full").contains("sslrootcert"));
        assert!(bad("postgresql://u@h/d?sslmode=verify-ca").contains("sslrootcert"));
        assert!(
            bad("postgresql://u@h/d?sslmode=require&sslrootcert=system").contains("verify-full")
        );
        assert!(bad("postgresql://u@h/d?sslcert=/x.pem").contains("sslkey"));
        assert!(bad("postgresql://u@h/d?sslrootcert=/nonexistent.pem").contains("sslrootcert"));
        assert!(bad("postgresql://u@h/d?sslmode=%zz").contains("%-escape"));
        let s = resolve_test(Some("postgresql://u@h/d"), 4, 10.0, no_env).unwrap();
        assert_eq!(s.tls().mode, SslMode::Prefer);
        assert_eq!(s.tls().attempts().count(), 1);
        let s = resolve_test(Some("postgresql://u@h/d?sslmode=allow"), 4, 10.0, no_env).unwrap();
        assert_eq!(s.tls().attempts().count(), 2);
    }

    #[test]
    fn dbapi_params_are_libpq_keywords() {
        let s = resolve_test(
            Some(
                "postgresql://bob:hunter2@db1:6543,db2:6544/queue?sslmode=require\
                 &application_name=rep&keepalives_idle=7&connect_timeout=3",
            ),
            4,
            2.5,
            no_env,
        )
        .unwrap();
        assert_eq!(s.dbapi_pool_size(), 4);
        let p: HashMap<_, _> = s.dbapi_params().into_iter().collect();
        assert_eq!(p["host"], "db1,db2");
        assert_eq!(p["port"], "6543,6544");
        assert_eq!(p["dbname"], "queue");
        assert_eq!(p["user"], "bob");
        assert_eq!(p["password"], "hunter2");
        assert_eq!(p["sslmode"], "require");
        assert_eq!(p["application_name"], "rep");
        // connect_timeout=2.5 (the option wins over the DSN's) rounds up to whole seconds.
        assert_eq!(p["connect_timeout"], "3");
        assert_eq!(p["keepalives"], "1");
        assert_eq!(p["keepalives_idle"], "7");
        assert_eq!(p["keepalives_interval"], "5");
        assert_eq!(p["keepalives_count"], "3");
        assert_eq!(p["tcp_user_timeout"], "30000");
        assert!(!p.contains_key("sslrootcert"));
        assert_eq!(p["target_session_attrs"], "any");
        let s = resolve_test(Some("host=/tmp user=u dbname=d"), 2, 10.0, no_env).unwrap();
        let p: HashMap<_, _> = s.dbapi_params().into_iter().collect();
        assert_eq!(p["host"], "/tmp");
        assert!(!p.contains_key("password") && !p.contains_key("keepalives"));
        // No port, no database: the driver's defaults, never libpq's PGPORT / PGDATABASE.
        let s = resolve_test(Some("postgresql://u@h"), 2, 10.0, no_env).unwrap();
        let p: HashMap<_, _> = s.dbapi_params().into_iter().collect();
        assert_eq!((p["port"].as_str(), p["dbname"].as_str()), ("5432", "u"));
        let options = Options {
            dbapi_pool_size: Some(9),
            ..Options::default()
        };
        let s = Settings::resolve(Some("postgresql://u@h/d"), &options, no_env).unwrap();
        assert_eq!((s.pool_size(), s.dbapi_pool_size()), (4, 9));
        for bad in [0, -1, 1001] {
            let options = Options {
                dbapi_pool_size: Some(bad),
                ..Options::default()
            };
            let err = Settings::resolve(Some("postgresql://u@h/d"), &options, no_env).unwrap_err();
            assert!(err.to_string().contains("dbapi_pool_size"), "{err}");
        }
    }

    #[test]
    fn redaction_is_structural() {
        let s = resolve_test(
            Some("postgresql://airflow:airflow@postgres:5432/airflow"),
            4,
            10.0,
            no_env,
        )
        .unwrap();
        assert_eq!(
            s.redacted_dsn(),
            "postgresql://airflow:***@postgres:5432/airflow"
        );
    }

    #[test]
    fn numbers_out_of_range_never_panic() {
        let dsn = Some("postgresql://u@h/d");
        for (pool, t) in [
            (-1, 10.0),
            (1 << 40, 10.0),
            (i128::MAX, 10.0),
            (4, 1e300),
            (4, f64::INFINITY),
        ] {
            let r = resolve_test(dsn, pool, t, no_env);
            assert!(matches!(r, Err(Error::Configuration(_))), "{pool} {t}");
        }
        // Tiny but positive: rounded up to a millisecond, not an error.
        let s = resolve_test(dsn, 4, f64::MIN_POSITIVE, no_env).unwrap();
        assert_eq!(s.connect_timeout(), Duration::from_millis(1));
        let options = Options {
            io_timeout_s: 1e300,
            ..Options::default()
        };
        assert!(Settings::resolve(dsn, &options, no_env).is_err());
    }
}
