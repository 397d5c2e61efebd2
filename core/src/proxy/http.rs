//! The HTTP CONNECT exchange (RFC 9110 §9.3.6, RFC 9112 §3.2.3; Basic, RFC 7617), sans-IO:
//! [`Connect::request`] builds the request, [`Connect::read_reply`] reads the proxy's reply head
//! as it arrives.
//!
//! The reply head is bounded ([`MAX_HEAD`]). A 2xx status opens the tunnel right after the head;
//! since a WinRM server never speaks first, a byte after a 2xx head is a protocol error rather
//! than data lost or passed on silently. 407 and 401 (tinyproxy answers a wrong password with
//! 401) are an authentication failure, any other status a refusal with its reason phrase; the
//! body of a refusal is never read or shown. Credentials are sent with the first request (as
//! curl does) and never a second time, so a proxy that answers 407 forever cannot make the
//! client loop.

use zeroize::Zeroizing;

use super::{ProxyCredentials, ProxyFailure, authority};

/// The largest reply head read from a proxy, in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// The longest reason phrase kept for an error message, in characters.
const MAX_REASON: usize = 200;

/// One CONNECT exchange towards `host:port`.
#[derive(Debug, Clone)]
pub struct Connect {
    target: String,
    had_credentials: bool,
}

impl Connect {
    /// An exchange for a tunnel to `host` (a name or an address, no brackets) and `port`.
    pub fn new(host: &str, port: u16) -> Self {
        Self { target: authority(host, port), had_credentials: false }
    }

    /// The server's `host:port` as the request names it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The request: `CONNECT host:port HTTP/1.1`, `Host`, and `Proxy-Authorization: Basic`
    /// when `credentials` are given. The bytes hold the encoded password: they are zeroized on
    /// drop and must never be logged.
    pub fn request(&mut self, credentials: Option<&ProxyCredentials>) -> Zeroizing<Vec<u8>> {
        use base64::Engine as _;
        // Sized up front: a buffer that grew would leave the encoded password behind in the
        // memory it gave back, unzeroized.
        let secret_len = credentials.map_or(0, |c| c.username().len() + 1 + c.password().len());
        let capacity = 128 + 2 * self.target.len() + secret_len.div_ceil(3) * 4;
        let mut req = Zeroizing::new(String::with_capacity(capacity));
        req.push_str("CONNECT ");
        req.push_str(&self.target);
        req.push_str(" HTTP/1.1\r\nHost: ");
        req.push_str(&self.target);
        req.push_str("\r\nUser-Agent: psremote/");
        req.push_str(env!("CARGO_PKG_VERSION"));
        req.push_str("\r\n");
        if let Some(c) = credentials {
            let mut pair = Zeroizing::new(String::with_capacity(secret_len));
            pair.push_str(c.username());
            pair.push(':');
            pair.push_str(c.password());
            req.push_str("Proxy-Authorization: Basic ");
            base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut req);
            req.push_str("\r\n");
            self.had_credentials = true;
        }
        req.push_str("\r\n");
        Zeroizing::new(req.as_bytes().to_vec())
    }

    /// Reads what the proxy sent so far (all of it, from the first byte). `Ok(None)`: the head
    /// is not complete yet, read more. `Ok(Some(()))`: the tunnel is open and every byte was the
    /// head. Otherwise why there is no tunnel; the connection must then be closed.
    pub fn read_reply(&self, received: &[u8]) -> Result<Option<()>, ProxyFailure> {
        let Some((head_len, body_start)) = head_end(received) else {
            if !could_be_status_line(received) {
                return Err(ProxyFailure::Protocol(format!(
                    "the reply does not start with an HTTP status line ({})",
                    preview(received)
                )));
            }
            if received.len() > MAX_HEAD {
                return Err(ProxyFailure::Protocol(format!("the reply head passed {MAX_HEAD} bytes")));
            }
            return Ok(None);
        };
        if head_len > MAX_HEAD {
            return Err(ProxyFailure::Protocol(format!("the reply head passed {MAX_HEAD} bytes")));
        }
        let head = &received[..head_len];
        let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
        let (status, reason) = status_line(line).ok_or_else(|| {
            ProxyFailure::Protocol(format!("the reply does not start with an HTTP status line ({})", preview(line)))
        })?;
        match status {
            200..=299 if received.len() > body_start => Err(ProxyFailure::Protocol(format!(
                "the proxy sent {} bytes after opening the tunnel, before the server could have spoken",
                received.len() - body_start
            ))),
            200..=299 => Ok(Some(())),
            401 | 407 => {
                Err(ProxyFailure::Authentication { had_credentials: self.had_credentials, status: Some(status) })
            }
            _ => Err(ProxyFailure::Refused { target: self.target.clone(), status: Some(status), reason }),
        }
    }
}

/// Where the head ends: its length without the blank line, and where the body starts. A blank
/// line is `\r\n\r\n` or, leniently, `\n\n`.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Whether `buf` can still become `HTTP/1.x `.
fn could_be_status_line(buf: &[u8]) -> bool {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = buf.len().min(PREFIX.len());
    buf[..n] == PREFIX[..n]
}

/// `HTTP/1.x NNN[ reason]`: the status and the reason phrase, escaped for terminals and cut.
fn status_line(line: &[u8]) -> Option<(u16, String)> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    let reason = match &rest[3..] {
        [] => "",
        [b' ', reason @ ..] => std::str::from_utf8(reason).unwrap_or(""),
        _ => return None,
    };
    let cut: String = reason.trim().chars().take(MAX_REASON).collect();
    Some((status, crate::text::printable(&cut).into_owned()))
}

/// The first bytes of a bad reply, for the error message: escaped, at most 40 characters.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]);
    format!("{:?}", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connect {
        Connect::new("srv.example", 5985)
    }

    #[test]
    fn request_names_the_target_and_sends_basic_once_given() {
        let mut c = Connect::new("::1", 5986);
        let req = c.request(None);
        let text = std::str::from_utf8(&req).unwrap();
        assert!(text.starts_with("CONNECT [::1]:5986 HTTP/1.1\r\nHost: [::1]:5986\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n") && !text.contains("Proxy-Authorization"));

        let mut c = connect();
        let req = c.request(Some(&ProxyCredentials::new("proxyuser", "s3cret pass:x")));
        let text = std::str::from_utf8(&req).unwrap();
        // base64("proxyuser:s3cret pass:x")
        assert!(text.contains("\r\nProxy-Authorization: Basic cHJveHl1c2VyOnMzY3JldCBwYXNzOng=\r\n"), "{text}");
        assert_eq!(
            c.read_reply(b"HTTP/1.0 401 Unauthorized\r\n\r\n"),
            Err(ProxyFailure::Authentication { had_credentials: true, status: Some(401) })
        );
    }

    #[test]
    fn the_tunnel_opens_on_2xx_once_the_head_is_whole() {
        let c = connect();
        let reply = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n";
        for cut in 0..reply.len() {
            assert_eq!(c.read_reply(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(c.read_reply(reply), Ok(Some(())));
        assert_eq!(c.read_reply(b"HTTP/1.1 200 Connection established\r\n\r\n"), Ok(Some(())));
        assert_eq!(c.read_reply(b"HTTP/1.1 204\n\n"), Ok(Some(())));
    }

    #[test]
    fn bytes_after_a_2xx_head_are_refused() {
        let err = connect().read_reply(b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200").unwrap_err();
        assert!(matches!(&err, ProxyFailure::Protocol(m) if m.contains("12 bytes after")), "{err}");
    }

    #[test]
    fn refusals_carry_status_and_escaped_reason() {
        let c = connect();
        assert_eq!(
            c.read_reply(b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n<html>"),
            Err(ProxyFailure::Authentication { had_credentials: false, status: Some(407) })
        );
        let err = c.read_reply(b"HTTP/1.1 500 Unable to connect\x1b[31m\r\nContent-Length: 3\r\n\r\nabc").unwrap_err();
        assert_eq!(
            err,
            ProxyFailure::Refused {
                target: "srv.example:5985".into(),
                status: Some(500),
                reason: "Unable to connect\\u{001b}[31m".into()
            }
        );
        assert!(err.to_string().contains("refused the tunnel to srv.example:5985: 500 Unable to connect"), "{err}");
        assert!(matches!(c.read_reply(b"HTTP/1.1 503\r\n\r\n"), Err(ProxyFailure::Refused { status: Some(503), .. })));
    }

    #[test]
    fn garbage_and_endless_heads_are_protocol_errors() {
        let c = connect();
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1 999\r\n\r\n",
        ] {
            assert!(matches!(c.read_reply(bad), Err(ProxyFailure::Protocol(_))), "{bad:?}");
        }
        // Garbage is recognised before any blank line comes.
        assert!(matches!(c.read_reply(b"X"), Err(ProxyFailure::Protocol(_))));
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        while endless.len() <= MAX_HEAD {
            endless.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(c.read_reply(&endless), Err(ProxyFailure::Protocol(m)) if m.contains("passed")));
    }
}
