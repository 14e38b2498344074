//! The byte stream under every TCP connection: TLS as libpq does it, and bounded waits.
//!
//! The driver is told `sslmode=require` with `sslnegotiation=direct`, which makes it hand us
//! the raw TCP socket before it sends a byte. [`Connector`] then does what libpq does for the
//! configured `sslmode` (send SSLRequest, read the server's `S`/`N`, run the rustls handshake
//! or go on in plaintext) and returns a [`Stream`] that the driver uses for everything after.
//!
//! [`Stream`] enforces the deadline of [`IoState`]: while a call is in flight, a read or write
//! that makes no progress for `timeout` fails with `TimedOut`, which closes the connection. A
//! silent server, a blackholing proxy or a dead NAT therefore ends a call after at most the
//! deadline, while a COPY that keeps moving data may run as long as it needs. [`IoState`] also
//! counts the bytes written, so the pool knows whether a failed call ever sent its statement.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::unnamed::Rewriter;

/// Shared between a connection's [`Stream`] and the pool: the deadline and a byte counter.
#[derive(Debug, Default)]
pub struct IoState {
    /// Milliseconds without progress after which I/O fails; 0 = no deadline.
    timeout_ms: AtomicU64,
    /// Bumped by [`IoState::arm`]: the stream restarts its clock when it sees a new value.
    generation: AtomicU64,
    written: AtomicU64,
    timed_out: AtomicBool,
    /// Named statements are sent as unnamed ones from now on ([`crate::unnamed`]).
    unnamed: AtomicBool,
}

impl IoState {
    /// Starts a new deadline: from now, `timeout` without progress fails the I/O.
    pub fn arm(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.timeout_ms.store(ms, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Bytes handed to the kernel so far on this connection.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// From now on (a message boundary: the login is over), named prepared statements are
    /// rewritten into unnamed ones, for PgBouncer's transaction pooling.
    pub fn send_unnamed_statements(&self) {
        self.unnamed.store(true, Ordering::SeqCst);
    }

    /// Whether the connection was closed by the deadline.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }
}

/// How TLS is negotiated: libpq's `sslmode` as far as one attempt goes (`allow` is a plaintext
/// attempt followed by a TLS one, see `pool`).
#[derive(Debug, Clone)]
pub enum Negotiation {
    /// No SSLRequest: plaintext.
    Plain,
    /// SSLRequest; TLS when the server accepts, plaintext when it refuses (`prefer`), or an
    /// error (`require` and stronger).
    Tls {
        config: Arc<ClientConfig>,
        plaintext_fallback: bool,
    },
}

/// The TLS "connector" handed to the driver (see the module's notes).
#[derive(Clone)]
pub struct Connector {
    pub negotiation: Negotiation,
    pub state: Arc<IoState>,
    pub connect_timeout: Duration,
}

/// A refusal by our TLS layer: the server's certificate was not accepted, or the server does
/// not do TLS while the sslmode requires it. Classified as a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsRefused(pub String);

pub struct DomainConnector {
    connector: Connector,
    domain: String,
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = Stream;
    type TlsConnect = DomainConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<DomainConnector, io::Error> {
        Ok(DomainConnector {
            connector: self.clone(),
            domain: domain.to_owned(),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl TlsConnect<Socket> for DomainConnector {
    type Stream = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let timeout = self.connector.connect_timeout;
            let state = self.connector.state.clone();
            state.arm(timeout);
            match tokio::time::timeout(timeout, negotiate(self, socket)).await {
                Ok(result) => result.map(|inner| Stream::new(inner, state)),
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TLS negotiation within {:.1}s (connect_timeout)",
                        timeout.as_secs_f64()
                    ),
                )) as BoxError),
            }
        })
    }
}

async fn negotiate(c: DomainConnector, mut socket: Socket) -> Result<Inner, BoxError> {
    let (config, fallback) = match c.connector.negotiation {
        Negotiation::Plain => return Ok(Inner::Plain(socket)),
        Negotiation::Tls {
            config,
            plaintext_fallback,
        } => (config, plaintext_fallback),
    };
    // SSLRequest: length 8, code 80877103.
    socket
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await?;
    let mut answer = [0u8];
    socket.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' if fallback => return Ok(Inner::Plain(socket)),
        b'N' => {
            return Err(Box::new(TlsRefused(
                "the server does not accept TLS connections, and sslmode requires TLS; enable \
                 ssl on the server or use sslmode=prefer"
                    .into(),
            )))
        }
        other => {
            return Err(format!("unexpected answer {other:#04x} to the TLS request").into());
        }
    }
    let name = ServerName::try_from(c.domain.clone())
        .map_err(|_| TlsRefused(format!("{:?} is not a valid TLS server name", c.domain)))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, socket)
        .await
        .map_err(|e| -> BoxError {
            let rustls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match rustls_error {
                Some(rustls::Error::InvalidCertificate(why)) => Box::new(TlsRefused(format!(
                    "the server's TLS certificate was not accepted ({why:?}); check sslrootcert \
                     (the CA that signed the server's certificate) and, for verify-full, that \
                     the host name in the DSN is one the certificate names"
                ))),
                Some(other) => Box::new(TlsRefused(format!("TLS handshake failed: {other}"))),
                None => Box::new(e),
            }
        })?;
    Ok(Inner::Tls(Box::new(tls)))
}

enum Inner {
    Plain(Socket),
    Tls(Box<tokio_rustls::client::TlsStream<Socket>>),
}

/// The connection's stream: plaintext or TLS, with the deadline of its [`IoState`].
pub struct Stream {
    inner: Inner,
    state: Arc<IoState>,
    generation: u64,
    last_progress: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set once [`IoState::send_unnamed_statements`] was called, with the bytes it rewrote
    /// and not yet passed on.
    rewriter: Option<Box<Rewriting>>,
}

#[derive(Default)]
struct Rewriting {
    rewriter: Rewriter,
    to_server: Vec<u8>,
    to_driver: Vec<u8>,
}

/// Rewritten bytes held back before a write waits for the server to take some.
const HOLD: usize = 256 * 1024;

impl Stream {
    fn new(inner: Inner, state: Arc<IoState>) -> Self {
        Stream {
            inner,
            generation: state.generation.load(Ordering::SeqCst),
            state,
            last_progress: Instant::now(),
            sleep: None,
            rewriter: None,
        }
    }

    fn rewriting(&mut self) -> bool {
        if self.rewriter.is_none() && self.state.unnamed.load(Ordering::SeqCst) {
            self.rewriter = Some(Box::default());
        }
        self.rewriter.is_some()
    }

    fn inner_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    fn inner_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    /// Passes rewritten bytes on to the server; `Ready(Ok)` once none are left.
    fn drain_to_server(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = match &mut self.rewriter {
                Some(r) if !r.to_server.is_empty() => std::mem::take(&mut r.to_server),
                _ => return Poll::Ready(Ok(())),
            };
            let polled = self.inner_write(cx, &pending);
            let r = self.rewriter.as_mut().expect("rewriting");
            r.to_server = pending;
            match polled {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    r.to_server.drain(..n);
                    self.state.written.fetch_add(n as u64, Ordering::SeqCst);
                    self.progress();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.check_deadline(cx).map(Err),
            }
        }
    }

    fn poll_read_rewriting(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let r = self.rewriter.as_mut().expect("rewriting");
            if !r.to_driver.is_empty() {
                let n = r.to_driver.len().min(buf.remaining());
                buf.put_slice(&r.to_driver[..n]);
                r.to_driver.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 16 * 1024];
            let mut raw = ReadBuf::new(&mut scratch);
            match self.inner_read(cx, &mut raw) {
                Poll::Ready(Ok(())) => {
                    if raw.filled().is_empty() {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                    self.progress();
                    let r = self.rewriter.as_mut().expect("rewriting");
                    r.rewriter.backend(raw.filled(), &mut r.to_driver);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.check_deadline(cx).map(Err),
            }
        }
    }

    fn poll_write_rewriting(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(e)) = self.drain_to_server(cx) {
            return Poll::Ready(Err(e));
        }
        let r = self.rewriter.as_mut().expect("rewriting");
        if r.to_server.len() >= HOLD {
            // Still waiting for the server to take what we hold (the deadline is armed).
            return Poll::Pending;
        }
        r.rewriter.frontend(buf, &mut r.to_server);
        if let Poll::Ready(Err(e)) = self.drain_to_server(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the inner stream is not ready: fails once the deadline has passed,
    /// otherwise makes sure the task is woken at the deadline.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let generation = self.state.generation.load(Ordering::SeqCst);
        if generation != self.generation {
            self.generation = generation;
            self.last_progress = Instant::now();
        }
        let ms = self.state.timeout_ms.load(Ordering::SeqCst);
        if ms == 0 {
            return Poll::Pending;
        }
        let deadline = self.last_progress + Duration::from_millis(ms);
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != deadline {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if Instant::now() >= deadline || sleep.as_mut().poll(cx).is_ready() {
            self.state.timed_out.store(true, Ordering::SeqCst);
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no progress for {:.1}s (io_timeout)",
                    Duration::from_millis(ms).as_secs_f64()
                ),
            ));
        }
        Poll::Pending
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if this.rewriting() {
            return this.poll_read_rewriting(cx, buf);
        }
        let polled = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewriting() {
            return this.poll_write_rewriting(cx, buf);
        }
        let polled = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(n)) => {
                this.state.written.fetch_add(n as u64, Ordering::SeqCst);
                this.progress();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check_deadline(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rewriting() {
            match this.drain_to_server(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let polled = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        match polled {
            Poll::Pending => this.check_deadline(cx).map(Err),
            ready @ Poll::Ready(_) => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl TlsStream for Stream {
    /// `tls-server-end-point` (RFC 5929), so SCRAM-SHA-256-PLUS works as it does with libpq.
    fn channel_binding(&self) -> ChannelBinding {
        let Inner::Tls(tls) = &self.inner else {
            return ChannelBinding::none();
        };
        let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return ChannelBinding::none();
        };
        let der = cert.as_ref();
        let hash = match signature_hash(der) {
            Some(SigHash::Sha384) => sha2::Sha384::digest(der).to_vec(),
            Some(SigHash::Sha512) => sha2::Sha512::digest(der).to_vec(),
            Some(SigHash::Sha256) => sha2::Sha256::digest(der).to_vec(),
            None => return ChannelBinding::none(),
        };
        ChannelBinding::tls_server_end_point(hash)
    }
}

enum SigHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of the certificate's signature algorithm (RFC 5929: MD5 and SHA-1 map to SHA-256).
fn signature_hash(der: &[u8]) -> Option<SigHash> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID } }
    let (_, body, _) = der_item(der)?;
    let (_, _tbs, rest) = der_item(body)?;
    let (_, alg, _) = der_item(rest)?;
    let (tag, oid, _) = der_item(alg)?;
    if tag != 0x06 {
        return None;
    }
    Some(match oid {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => SigHash::Sha384,
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => SigHash::Sha512,
        _ => SigHash::Sha256,
    })
}

/// One DER item: (tag, contents, the bytes after it).
fn der_item(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Accepts any certificate (libpq's `require` without a root certificate): the connection is
/// encrypted, the server is not authenticated. Handshake signatures are still checked.
#[derive(Debug)]
pub struct AcceptAnyCert(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
pub struct ChainOnly(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first, the name last: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_items_are_bounded() {
        assert!(der_item(&[]).is_none());
        assert!(der_item(&[0x30, 0x05, 1, 2]).is_none());
        assert!(der_item(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        let (tag, body, rest) = der_item(&[0x30, 0x02, 7, 8, 9]).unwrap();
        assert_eq!((tag, body, rest), (0x30, &[7u8, 8][..], &[9u8][..]));
        assert!(signature_hash(&[0x30, 0x00]).is_none());
    }
}
