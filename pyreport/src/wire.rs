//! A minimal NATS protocol reader for the hot path of scans.
//!
//! A scan spends most of its client time receiving messages; through async-nats each one is
//! parsed into an owned `Message` (header map included), sent over a channel and woken up for.
//! Here the scan thread itself reads the socket into a large buffer and hands the payload of
//! each `HMSG`/`MSG` frame to the caller as a slice of that buffer: no allocation, no channel,
//! no thread hop. It speaks only what a scan needs: CONNECT with user and password, SUB, PUB,
//! PING/PONG; plain TCP only (a server that requires TLS makes the caller use async-nats).
//! Consumers are still created, and deleted, through async-nats.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One frame from the server that a scan cares about.
pub enum Frame<'a> {
    /// A message with its reply subject (JetStream: the `$JS.ACK...` position).
    Msg { reply: Option<&'a str>, payload: &'a [u8] },
    /// A status message (no payload): the status code from the header line.
    Status { code: u16, description: &'a str },
}

pub struct WireConn {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

#[derive(Debug)]
pub enum WireError {
    /// The server wants something this reader does not do (TLS, ...): use async-nats.
    Unsupported(String),
    Io(io::Error),
    Server(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Unsupported(s) => write!(f, "unsupported: {s}"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Server(s) => write!(f, "server error: {s}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// `host:port` of the first server of a NATS URL list, if it is plain `nats://` (or no scheme)
/// without credentials in the URL.
pub fn plain_address(url: &str) -> Option<String> {
    let first = url.split(',').next()?.trim();
    let rest = match first.split_once("://") {
        Some(("nats", rest)) => rest,
        Some(_) => return None,
        None => first,
    };
    if rest.contains('@') || rest.contains('/') || rest.is_empty() {
        return None;
    }
    Some(if rest.contains(':') { rest.to_string() } else { format!("{rest}:4222") })
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

impl WireConn {
    pub fn connect(address: &str, user: Option<&str>, password: Option<&str>, timeout: Duration) -> Result<WireConn, WireError> {
        use std::net::ToSocketAddrs;
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| WireError::Unsupported(format!("cannot resolve {address}")))?;
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        let mut conn = WireConn { sock, buf: vec![0; 8 << 20], start: 0, end: 0 };
        let info = conn.line()?.to_string();
        let Some(json) = info.strip_prefix("INFO ") else {
            return Err(WireError::Unsupported(format!("unexpected greeting {info:?}")));
        };
        let info: serde_json::Value = serde_json::from_str(json).map_err(|e| WireError::Unsupported(e.to_string()))?;
        if info.get("tls_required").and_then(|v| v.as_bool()) == Some(true) {
            return Err(WireError::Unsupported("the server requires TLS".into()));
        }
        if info.get("headers").and_then(|v| v.as_bool()) == Some(false) {
            return Err(WireError::Unsupported("the server does not support headers".into()));
        }
        let mut connect = String::from(r#"{"verbose":false,"pedantic":false,"lang":"rust","version":"pyreport","protocol":1,"headers":true,"no_responders":true,"name":"pyreport-scan""#);
        if let (Some(u), Some(p)) = (user, password) {
            connect.push_str(&format!(r#","user":{},"pass":{}"#, json_escape(u), json_escape(p)));
        }
        connect.push('}');
        conn.sock.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())?;
        loop {
            let line = conn.line()?.to_string();
            match line.as_str() {
                "PONG" => break,
                "+OK" => {}
                l if l.starts_with("INFO ") => {}
                l if l.starts_with("-ERR") => return Err(WireError::Server(l.to_string())),
                other => return Err(WireError::Unsupported(format!("unexpected {other:?} after CONNECT"))),
            }
        }
        Ok(conn)
    }

    pub fn subscribe(&mut self, subject: &str, sid: u32) -> io::Result<()> {
        self.sock.write_all(format!("SUB {subject} {sid}\r\n").as_bytes())
    }

    pub fn publish(&mut self, subject: &str, reply: &str, payload: &[u8]) -> io::Result<()> {
        let mut out = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.sock.write_all(&out)
    }

    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(timeout))
    }

    /// Reads more bytes, making room for at least `want` first (moving the unread part to
    /// the front of the buffer, or growing it for a big frame).
    fn fill(&mut self, want: usize) -> Result<(), WireError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let want = want.max(4096);
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        let n = self.sock.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(WireError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")));
        }
        self.end += n;
        Ok(())
    }

    /// Where the next `\r\n` is, relative to `self.start` (reading more if needed).
    fn find_crlf(&mut self) -> Result<usize, WireError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = memchr_crlf(&self.buf[self.start + scanned..self.end]) {
                return Ok(scanned + i);
            }
            // A '\r' at the very end may be followed by '\n' in the next read.
            scanned = (self.end - self.start).saturating_sub(1);
            self.fill(4096)?;
        }
    }

    /// One control line, without `\r\n`.
    fn line(&mut self) -> Result<String, WireError> {
        let len = self.find_crlf()?;
        let line = String::from_utf8_lossy(&self.buf[self.start..self.start + len]).into_owned();
        self.start += len + 2;
        Ok(line)
    }

    /// The next frame a scan cares about; answers PINGs and skips the rest.
    pub fn next_frame(&mut self) -> Result<Frame<'_>, WireError> {
        loop {
            let len = self.find_crlf()?;
            let line = &self.buf[self.start..self.start + len];
            let is_msg = line.starts_with(b"HMSG ") || line.starts_with(b"MSG ");
            if !is_msg {
                let control = line.to_vec();
                self.start += len + 2;
                match control.as_slice() {
                    b"PING" => self.sock.write_all(b"PONG\r\n")?,
                    b"PONG" | b"+OK" => {}
                    l if l.starts_with(b"INFO ") => {}
                    l if l.starts_with(b"-ERR") => return Err(WireError::Server(String::from_utf8_lossy(l).into_owned())),
                    other => {
                        return Err(WireError::Unsupported(format!("unexpected line {:?}", String::from_utf8_lossy(other))));
                    }
                }
                continue;
            }
            let text = std::str::from_utf8(line).map_err(|e| WireError::Unsupported(e.to_string()))?;
            let mut tokens = [""; 6];
            let mut n = 0;
            for t in text.split(' ') {
                if n < tokens.len() {
                    tokens[n] = t;
                }
                n += 1;
            }
            let with_headers = tokens[0] == "HMSG";
            // HMSG subject sid [reply] header_len total_len / MSG subject sid [reply] len
            let (reply, header_len, total_len) = match (with_headers, n) {
                (true, 6) => (Some(tokens[3]), tokens[4], tokens[5]),
                (true, 5) => (None, tokens[3], tokens[4]),
                (false, 5) => (Some(tokens[3]), "0", tokens[4]),
                (false, 4) => (None, "0", tokens[3]),
                _ => return Err(WireError::Unsupported(format!("bad frame {text:?}"))),
            };
            let (Ok(header_len), Ok(total_len)) = (header_len.parse::<usize>(), total_len.parse::<usize>()) else {
                return Err(WireError::Unsupported(format!("bad sizes in {text:?}")));
            };
            let base = self.buf.as_ptr() as usize + self.start;
            let reply = reply.map(|r| {
                let at = r.as_ptr() as usize - base;
                (at, at + r.len())
            });
            let body = len + 2;
            let frame_end = body + total_len + 2;
            while self.end - self.start < frame_end {
                let missing = frame_end - (self.end - self.start);
                self.fill(missing)?;
            }
            let s = self.start;
            return Ok(self.frame(s + body, header_len, total_len, reply.map(|(a, b)| (s + a)..(s + b)), s + frame_end));
        }
    }

    fn frame(
        &mut self,
        body: usize,
        header_len: usize,
        total_len: usize,
        reply: Option<std::ops::Range<usize>>,
        frame_end: usize,
    ) -> Frame<'_> {
        self.start = frame_end;
        let buf = &self.buf[..];
        let reply = reply.and_then(|r| std::str::from_utf8(&buf[r]).ok());
        if header_len > 0 {
            let headers = &buf[body..body + header_len];
            // "NATS/1.0 408 Request Timeout\r\n..." : a status line has a code after the version.
            let first = headers.split(|b| *b == b'\r').next().unwrap_or(&[]);
            let first = std::str::from_utf8(first).unwrap_or("");
            let mut words = first.splitn(3, ' ');
            words.next();
            if let Some(code) = words.next().and_then(|c| c.parse::<u16>().ok()) {
                if total_len == header_len {
                    return Frame::Status { code, description: words.next().unwrap_or("") };
                }
            }
        }
        Frame::Msg { reply, payload: &buf[body + header_len..body + total_len] }
    }

    pub fn close(mut self) {
        let _ = self.sock.write_all(b"UNSUB 1\r\n");
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

fn memchr_crlf(hay: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == b'\r') {
        let at = from + i;
        if hay.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        if at + 1 >= hay.len() {
            return None;
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses() {
        assert_eq!(plain_address("nats://127.0.0.1:4222").as_deref(), Some("127.0.0.1:4222"));
        assert_eq!(plain_address("localhost").as_deref(), Some("localhost:4222"));
        assert_eq!(plain_address("nats://a:1,nats://b:2").as_deref(), Some("a:1"));
        assert_eq!(plain_address("tls://a:1"), None);
        assert_eq!(plain_address("nats://u:p@a:1"), None);
    }

    #[test]
    fn crlf() {
        assert_eq!(memchr_crlf(b"ab\r\ncd"), Some(2));
        assert_eq!(memchr_crlf(b"a\rb\r\n"), Some(3));
        assert_eq!(memchr_crlf(b"ab\r"), None);
    }
}
