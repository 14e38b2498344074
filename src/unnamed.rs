//! Named prepared statements rewritten to unnamed ones, for PgBouncer's transaction pooling.
//!
//! PgBouncer (before 1.21) hands a client a server connection per transaction. The driver
//! prepares a statement in one exchange (Parse, Describe, Sync) and runs it in another (Bind,
//! Execute, Sync): outside a transaction, the second can reach a server connection that never
//! saw the first ("prepared statement s3 does not exist"). With `prepared_statements=False`,
//! every connection's protocol stream passes through a [`Rewriter`]:
//!
//! * a named Parse is sent as an unnamed one, and remembered by name;
//! * a Bind or Describe of a named statement is preceded, in the same exchange, by the unnamed
//!   Parse of its text (unless that exchange has just parsed it), so the statement is parsed
//!   on whichever server connection runs it; the server's extra ParseComplete is removed from
//!   the replies, so the driver sees the replies it expects;
//! * a Close of a named statement closes the unnamed one (harmless) and forgets the name.
//!
//! Frontend and backend messages are framed as the protocol says (a type byte and a length);
//! only Parse, Bind, Describe, Close and Sync are buffered whole, every other message (COPY
//! data, rows) streams through.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A ParseComplete the driver asked for.
    Own,
    /// A ParseComplete for a Parse we added: removed from the replies.
    Injected,
    /// The end of an exchange (Sync), answered by ReadyForQuery.
    Sync,
    /// A simple Query, also answered by one ReadyForQuery.
    Query,
}

#[derive(Debug, Default)]
pub struct Rewriter {
    /// Statement name -> the Parse body after the name (query text, parameter types).
    statements: HashMap<Vec<u8>, Vec<u8>>,
    /// The named statement the server's unnamed statement holds in the current exchange.
    current: Option<Vec<u8>>,
    expect: VecDeque<Expect>,
    /// Between the first CopyData and CopyDone/CopyFail of a COPY FROM STDIN.
    in_copy: bool,
    tx_in: Vec<u8>,
    tx_pass: usize,
    rx_in: Vec<u8>,
    rx_pass: usize,
}

fn message(out: &mut Vec<u8>, ty: u8, parts: &[&[u8]]) {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.push(ty);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// `(text before the first NUL, the rest after it)`.
fn cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, data)?;
    Some((&data[..end], &data[end + 1..]))
}

fn header(data: &[u8]) -> Option<(u8, usize)> {
    if data.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    // A length below 4 is a broken stream: pass the header on and let the server say so.
    Some((data[0], 1 + len.max(4)))
}

impl Rewriter {
    /// Frontend bytes from the driver; the bytes to send are appended to `out`.
    pub fn frontend(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.tx_in.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if self.tx_pass > 0 {
                let n = self.tx_pass.min(self.tx_in.len() - pos);
                out.extend_from_slice(&self.tx_in[pos..pos + n]);
                pos += n;
                self.tx_pass -= n;
                if self.tx_pass > 0 {
                    break;
                }
                continue;
            }
            let Some((ty, total)) = header(&self.tx_in[pos..]) else {
                break;
            };
            if matches!(ty, b'P' | b'B' | b'D' | b'C' | b'S') {
                if self.tx_in.len() - pos < total {
                    break;
                }
                let body = self.tx_in[pos + 5..pos + total].to_vec();
                pos += total;
                self.front_message(ty, &body, out);
            } else {
                if matches!(ty, b'd' | b'c' | b'f') {
                    self.copy_message(ty);
                } else if ty == b'Q' {
                    self.expect.push_back(Expect::Query);
                    self.current = None;
                }
                self.tx_pass = total;
            }
        }
        self.tx_in.drain(..pos);
    }

    fn front_message(&mut self, ty: u8, body: &[u8], out: &mut Vec<u8>) {
        match ty {
            b'P' => {
                if let Some((name, rest)) = cstr(body) {
                    self.expect.push_back(Expect::Own);
                    if name.is_empty() {
                        self.current = None;
                    } else {
                        self.statements.insert(name.to_vec(), rest.to_vec());
                        self.current = Some(name.to_vec());
                    }
                    message(out, b'P', &[b"\0", rest]);
                    return;
                }
            }
            b'B' => {
                if let Some((portal, after)) = cstr(body) {
                    if let Some((stmt, rest)) = cstr(after) {
                        if !stmt.is_empty() && self.ensure_parsed(stmt, out) {
                            message(out, b'B', &[portal, b"\0\0", rest]);
                            return;
                        }
                    }
                }
            }
            b'D' => {
                if let Some((&b'S', name)) = body.split_first() {
                    if let Some((name, _)) = cstr(name) {
                        if !name.is_empty() && self.ensure_parsed(name, out) {
                            message(out, b'D', &[b"S\0"]);
                            return;
                        }
                    }
                }
            }
            b'C' => {
                if let Some((&b'S', name)) = body.split_first() {
                    if let Some((name, _)) = cstr(name) {
                        if !name.is_empty() {
                            self.statements.remove(name);
                            self.current = None;
                            message(out, b'C', &[b"S\0"]);
                            return;
                        }
                    }
                }
            }
            b'S' => {
                self.expect.push_back(Expect::Sync);
                self.current = None;
            }
            _ => {}
        }
        message(out, ty, &[body]);
    }

    /// The driver sends Bind, Execute, Sync and then the COPY data: the server ignores a Sync
    /// in copy-in mode, so that Sync gets no ReadyForQuery and must not be waited for.
    fn copy_message(&mut self, ty: u8) {
        if !self.in_copy {
            self.in_copy = true;
            if self.expect.back() == Some(&Expect::Sync) {
                self.expect.pop_back();
            }
        }
        if ty != b'd' {
            self.in_copy = false;
        }
    }

    /// Adds the unnamed Parse of `name` unless the current exchange holds it; `false` for a
    /// name we never saw parsed (the message is sent unchanged and the server answers).
    fn ensure_parsed(&mut self, name: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(rest) = self.statements.get(name) else {
            return false;
        };
        if self.current.as_deref() != Some(name) {
            message(out, b'P', &[b"\0", rest]);
            self.expect.push_back(Expect::Injected);
            self.current = Some(name.to_vec());
        }
        true
    }

    /// Backend bytes from the server; the bytes for the driver are appended to `out`.
    pub fn backend(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.rx_in.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if self.rx_pass > 0 {
                let n = self.rx_pass.min(self.rx_in.len() - pos);
                out.extend_from_slice(&self.rx_in[pos..pos + n]);
                pos += n;
                self.rx_pass -= n;
                if self.rx_pass > 0 {
                    break;
                }
                continue;
            }
            let Some((ty, total)) = header(&self.rx_in[pos..]) else {
                break;
            };
            match ty {
                b'1' => match self.expect.front() {
                    Some(Expect::Injected) => {
                        self.expect.pop_front();
                        pos += 5.min(total);
                        self.rx_pass = total.saturating_sub(5);
                        // A ParseComplete is 5 bytes; anything longer is passed on as it is.
                        continue;
                    }
                    Some(Expect::Own) => {
                        self.expect.pop_front();
                    }
                    _ => {}
                },
                b'Z' => {
                    // The exchange is over: Parses the server skipped after an error too.
                    while let Some(e) = self.expect.pop_front() {
                        if matches!(e, Expect::Sync | Expect::Query) {
                            break;
                        }
                    }
                }
                _ => {}
            }
            self.rx_pass = total;
        }
        self.rx_in.drain(..pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        message(&mut v, ty, &[body]);
        v
    }

    #[test]
    fn a_named_statement_is_parsed_again_where_it_runs() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        // prepare: Parse s1, Describe S s1, Sync
        let mut input = msg(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17");
        input.extend(msg(b'D', b"Ss1\0"));
        input.extend(msg(b'S', b""));
        // fed in two pieces, split inside a message
        r.frontend(&input[..7], &mut out);
        r.frontend(&input[7..], &mut out);
        let mut expected = msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17");
        expected.extend(msg(b'D', b"S\0"));
        expected.extend(msg(b'S', b""));
        assert_eq!(out, expected);
        // the server's answer passes unchanged
        let mut reply = msg(b'1', b"");
        reply.extend(msg(b't', b"\0\x01\0\0\0\x17"));
        reply.extend(msg(b'Z', b"I"));
        let mut got = Vec::new();
        r.backend(&reply, &mut got);
        assert_eq!(got, reply);
        // execute: Bind "" s1, Execute, Sync -> Parse injected before the Bind
        out.clear();
        let mut input = msg(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0");
        input.extend(msg(b'E', b"\0\0\0\0\0"));
        input.extend(msg(b'S', b""));
        r.frontend(&input, &mut out);
        let mut expected = msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17");
        expected.extend(msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x011\0\0"));
        expected.extend(msg(b'E', b"\0\0\0\0\0"));
        expected.extend(msg(b'S', b""));
        assert_eq!(out, expected);
        // the injected Parse's ParseComplete is removed, byte by byte too
        let mut reply = msg(b'1', b"");
        reply.extend(msg(b'2', b""));
        reply.extend(msg(b'D', b"\0\x01\0\0\0\x011"));
        reply.extend(msg(b'C', b"SELECT 1\0"));
        reply.extend(msg(b'Z', b"I"));
        let mut got = Vec::new();
        for b in &reply {
            r.backend(std::slice::from_ref(b), &mut got);
        }
        assert_eq!(got, reply[5..].to_vec());
        // Close S s1 closes the unnamed statement
        out.clear();
        r.frontend(&msg(b'C', b"Ss1\0"), &mut out);
        assert_eq!(out, msg(b'C', b"S\0"));
    }

    #[test]
    fn after_an_error_the_exchange_is_forgotten() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        r.frontend(&msg(b'P', b"s1\0SELECT 1\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        let mut got = Vec::new();
        let mut ok = msg(b'1', b"");
        ok.extend(msg(b'Z', b"I"));
        r.backend(&ok, &mut got);
        out.clear();
        r.frontend(&msg(b'B', b"\0s1\0\0\0\0\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        // the injected Parse fails: ErrorResponse, ReadyForQuery; nothing is swallowed wrongly
        let mut reply = msg(b'E', b"SERROR\0\0");
        reply.extend(msg(b'Z', b"I"));
        got.clear();
        r.backend(&reply, &mut got);
        assert_eq!(got, reply);
        assert!(r.expect.is_empty());
    }

    #[test]
    fn the_sync_ignored_in_copy_mode_is_not_waited_for() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        r.frontend(&msg(b'P', b"s1\0COPY t FROM STDIN\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        let mut got = Vec::new();
        let mut ok = msg(b'1', b"");
        ok.extend(msg(b'Z', b"I"));
        r.backend(&ok, &mut got);
        // Bind (Parse injected), Execute, Sync (ignored by the server), data, CopyDone, Sync
        r.frontend(&msg(b'B', b"\0s1\0\0\0\0\0\0\0"), &mut out);
        r.frontend(&msg(b'E', b"\0\0\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        r.frontend(&msg(b'd', b"1\tx\n"), &mut out);
        r.frontend(&msg(b'c', b""), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        let mut reply = msg(b'1', b"");
        reply.extend(msg(b'2', b""));
        reply.extend(msg(b'G', b"\0\0\0"));
        reply.extend(msg(b'C', b"COPY 1\0"));
        reply.extend(msg(b'Z', b"T"));
        got.clear();
        r.backend(&reply, &mut got);
        assert_eq!(got, reply[5..].to_vec());
        assert!(r.expect.is_empty(), "{:?}", r.expect);
        // the next statement's own ParseComplete is passed on
        r.frontend(&msg(b'P', b"s2\0SELECT 1\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        got.clear();
        r.backend(&ok, &mut got);
        assert_eq!(got, ok);
    }

    #[test]
    fn a_simple_query_ends_its_own_exchange() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        r.frontend(&msg(b'P', b"s1\0SELECT 1\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        let mut ok = msg(b'1', b"");
        ok.extend(msg(b'Z', b"I"));
        let mut got = Vec::new();
        r.backend(&ok, &mut got);
        // a simple query (COPY through it: no Sync is skipped), then a Bind pipelined behind
        r.frontend(&msg(b'Q', b"COPY t FROM STDIN\0"), &mut out);
        r.frontend(&msg(b'd', b"1\n"), &mut out);
        r.frontend(&msg(b'c', b""), &mut out);
        r.frontend(&msg(b'B', b"\0s1\0\0\0\0\0\0\0"), &mut out);
        r.frontend(&msg(b'S', b""), &mut out);
        let mut reply = msg(b'G', b"\0\0\0");
        reply.extend(msg(b'C', b"COPY 1\0"));
        reply.extend(msg(b'Z', b"I"));
        reply.extend(msg(b'1', b""));
        reply.extend(msg(b'2', b""));
        reply.extend(msg(b'Z', b"I"));
        got.clear();
        r.backend(&reply, &mut got);
        let mut expected = reply[..reply.len() - 16].to_vec();
        expected.extend(msg(b'2', b""));
        expected.extend(msg(b'Z', b"I"));
        assert_eq!(got, expected);
        assert!(r.expect.is_empty());
    }

    #[test]
    fn copy_data_streams_through() {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        let data = msg(b'd', &vec![b'x'; 100_000]);
        for chunk in data.chunks(4096) {
            r.frontend(chunk, &mut out);
        }
        assert_eq!(out, data);
        assert!(r.tx_in.is_empty());
    }
}
