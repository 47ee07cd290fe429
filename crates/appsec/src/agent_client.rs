//! A minimal HTTP/1.1 client for the local agent (trace intake and remote configuration).
//!
//! Why hand-written: the agent is on the same host and speaks plain HTTP on its trace port
//! (as ddtrace tracers expect); a protected application should not have to pull an async HTTP
//! client and a TLS stack into its dependency tree for two loopback calls made from
//! background threads. One request per connection (`Connection: close`), bounded reads,
//! timeouts on every socket operation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body read (a ruleset is a few hundred KiB).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// The agent's base URL, split once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentUrl {
    /// `host:port` as written (for `Host:` and for resolving).
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl AgentUrl {
    /// Parses `http://host[:port][/prefix]` (port defaults to 80).
    pub(crate) fn parse(url: &str) -> Option<AgentUrl> {
        let rest = url.trim().strip_prefix("http://")?;
        let (auth, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if auth.is_empty() || auth.contains('@') {
            return None;
        }
        let has_port = match auth.rfind(']') {
            Some(close) => auth[close..].contains(':'),
            None => auth.contains(':'),
        };
        let authority = if has_port {
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        Some(AgentUrl {
            authority,
            prefix: prefix.to_string(),
        })
    }

    /// One request; `Err` for network errors and malformed responses.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let addrs: Vec<_> = self.authority.to_socket_addrs()?.collect();
        let mut last = std::io::Error::other(format!("{}: no address", self.authority));
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut s = stream.ok_or(last)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let _ = s.set_nodelay(true);
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: warden-appsec/{}\r\n",
            self.prefix,
            self.authority,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;
        read_reply(BufReader::new(s.take(MAX_RESPONSE + 64 * 1024)))
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn read_reply<R: BufRead>(mut r: R) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {:?}", line.trim_end())))?;
    let mut length = None;
    let mut chunked = false;
    for _ in 0..200 {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<u64>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if status == 204 || status == 304 {
        return Ok(Reply { status, body });
    }
    if chunked {
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = u64::from_str_radix(l.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if n == 0 {
                break;
            }
            if body.len() as u64 + n > MAX_RESPONSE {
                return Err(bad("response too large"));
            }
            let start = body.len();
            body.resize(start + n as usize, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        if n > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        body.resize(n as usize, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(MAX_RESPONSE).read_to_end(&mut body)?;
    }
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = AgentUrl::parse("http://127.0.0.1:8126").expect("url");
        assert_eq!(u.authority, "127.0.0.1:8126");
        assert_eq!(u.prefix, "");
        let u = AgentUrl::parse("http://agent/prefix/").expect("url");
        assert_eq!(u.authority, "agent:80");
        assert_eq!(u.prefix, "/prefix");
        let u = AgentUrl::parse("http://[::1]:9").expect("url");
        assert_eq!(u.authority, "[::1]:9");
        assert!(AgentUrl::parse("https://x").is_none());
        assert!(AgentUrl::parse("http://").is_none());
    }

    #[test]
    fn replies() {
        let r =
            read_reply(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"[..]).expect("reply");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = read_reply(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
                [..],
        )
        .expect("chunked");
        assert_eq!(r.body, b"abc");
        let r = read_reply(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]).expect("204");
        assert_eq!(r.status, 204);
        assert!(read_reply(&b"garbage\r\n\r\n"[..]).is_err());
    }
}
