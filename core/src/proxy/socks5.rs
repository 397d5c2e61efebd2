//! The SOCKS5 handshake (RFC 1928) with user/password logon (RFC 1929), sans-IO.
//!
//! [`Handshake::greeting`] gives the first bytes to send; then [`Handshake::wants`] says exactly
//! how many bytes to read next and [`Handshake::receive`] takes them, answering with bytes to
//! send, a wish for more, or the open tunnel. Reading exactly what is wanted means nothing
//! beyond the handshake is ever read, so no byte of the tunnel is lost.

use std::net::IpAddr;

use zeroize::Zeroizing;

use super::{ProxyCredentials, ProxyFailure, authority};
use crate::error::{Error, Result};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

/// What the proxy is asked to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An address (ATYP 1 or 4): socks5://, or any IP literal.
    Ip(IpAddr),
    /// A name the proxy resolves (ATYP 3): socks5h://.
    Name(String),
}

/// What the handshake needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes (they may hold the password: zeroized on drop, never logged), then read
    /// [`Handshake::wants`] bytes.
    Send(Zeroizing<Vec<u8>>),
    /// Read [`Handshake::wants`] more bytes.
    Read,
    /// The tunnel is open: what follows on the connection is the server's.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The method selection reply (2 bytes).
    Method,
    /// The RFC 1929 status reply (2 bytes).
    Logon,
    /// The CONNECT reply's first 4 bytes.
    ReplyHead,
    /// The length byte of a bound name.
    ReplyNameLength,
    /// The rest of the bound address and the port.
    ReplyAddress(usize),
    Done,
    Failed,
}

/// One SOCKS5 handshake towards a destination and port.
#[derive(Debug)]
pub struct Handshake {
    destination: Destination,
    port: u16,
    credentials: Option<ProxyCredentials>,
    state: State,
}

impl Handshake {
    /// A handshake for `destination:port`, logging on with `credentials` when the proxy asks.
    /// A name must be 1 to 255 bytes, and credentials 1 to 255 bytes each.
    pub fn new(destination: Destination, port: u16, credentials: Option<ProxyCredentials>) -> Result<Self> {
        if let Destination::Name(name) = &destination
            && (name.is_empty() || name.len() > 255 || !super::valid_host(name))
        {
            return Err(Error::InvalidConfig(
                "a name sent to a SOCKS5 proxy must be 1 to 255 bytes of host name".into(),
            ));
        }
        if let Some(c) = &credentials
            && (!(1..=255).contains(&c.username().len()) || !(1..=255).contains(&c.password().len()))
        {
            return Err(Error::InvalidConfig(
                "a SOCKS5 proxy's user name and password must each be 1 to 255 bytes (RFC 1929)".into(),
            ));
        }
        Ok(Self { destination, port, credentials, state: State::Method })
    }

    /// The destination as `host:port`, for messages.
    pub fn target(&self) -> String {
        match &self.destination {
            Destination::Ip(ip) => authority(&ip.to_string(), self.port),
            Destination::Name(n) => authority(n, self.port),
        }
    }

    /// The greeting: no authentication, and user/password too when credentials are set.
    pub fn greeting(&self) -> Vec<u8> {
        if self.credentials.is_some() { vec![VERSION, 2, NO_AUTH, USER_PASS] } else { vec![VERSION, 1, NO_AUTH] }
    }

    /// How many bytes to read next; 0 once the tunnel is open or the handshake failed.
    pub fn wants(&self) -> usize {
        match self.state {
            State::Method | State::Logon => 2,
            State::ReplyHead => 4,
            State::ReplyNameLength => 1,
            State::ReplyAddress(n) => n,
            State::Done | State::Failed => 0,
        }
    }

    /// Takes exactly [`Handshake::wants`] bytes from the proxy.
    pub fn receive(&mut self, data: &[u8]) -> Result<Step, ProxyFailure> {
        if data.len() != self.wants() || self.wants() == 0 {
            self.state = State::Failed;
            return Err(ProxyFailure::Protocol(format!(
                "the handshake wanted {} bytes and was given {}",
                self.wants(),
                data.len()
            )));
        }
        let step = self.step(data);
        if step.is_err() {
            self.state = State::Failed;
        }
        step
    }

    fn step(&mut self, data: &[u8]) -> Result<Step, ProxyFailure> {
        let had_credentials = self.credentials.is_some();
        match self.state {
            State::Method => {
                if data[0] != VERSION {
                    return Err(ProxyFailure::Protocol(format!(
                        "the method reply has version {} (not a SOCKS5 proxy?)",
                        data[0]
                    )));
                }
                match data[1] {
                    NO_AUTH => Ok(self.connect_request()),
                    USER_PASS if had_credentials => {
                        self.state = State::Logon;
                        Ok(Step::Send(self.logon_request()))
                    }
                    NO_ACCEPTABLE => Err(ProxyFailure::Authentication { had_credentials, status: None }),
                    other => {
                        Err(ProxyFailure::Protocol(format!("the proxy chose method {other}, which was not offered")))
                    }
                }
            }
            State::Logon => {
                // RFC 1929's version byte is 1; only the status is checked, as proxies differ.
                if data[1] != 0 {
                    return Err(ProxyFailure::Authentication { had_credentials: true, status: None });
                }
                Ok(self.connect_request())
            }
            State::ReplyHead => {
                if data[0] != VERSION {
                    return Err(ProxyFailure::Protocol(format!("the connect reply has version {}", data[0])));
                }
                if data[1] != 0 {
                    return Err(ProxyFailure::Refused {
                        target: self.target(),
                        status: Some(u16::from(data[1])),
                        reason: reply_meaning(data[1]).to_owned(),
                    });
                }
                self.state = match data[3] {
                    ATYP_V4 => State::ReplyAddress(4 + 2),
                    ATYP_V6 => State::ReplyAddress(16 + 2),
                    ATYP_NAME => State::ReplyNameLength,
                    other => {
                        return Err(ProxyFailure::Protocol(format!("the connect reply has address type {other}")));
                    }
                };
                Ok(Step::Read)
            }
            State::ReplyNameLength => {
                self.state = State::ReplyAddress(usize::from(data[0]) + 2);
                Ok(Step::Read)
            }
            State::ReplyAddress(_) => {
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::Done | State::Failed => Err(ProxyFailure::Protocol("the handshake is over".into())),
        }
    }

    /// RFC 1929: `01 ULEN user PLEN password`.
    fn logon_request(&self) -> Zeroizing<Vec<u8>> {
        let c = self.credentials.as_ref().expect("logon only with credentials");
        let (user, pass) = (c.username().as_bytes(), c.password().as_bytes());
        let mut out = Zeroizing::new(Vec::with_capacity(3 + user.len() + pass.len()));
        // INVARIANT: both are 1..=255 bytes (checked in `new`).
        out.push(1);
        out.push(user.len() as u8);
        out.extend_from_slice(user);
        out.push(pass.len() as u8);
        out.extend_from_slice(pass);
        out
    }

    /// `05 01 00 ATYP address port`.
    fn connect_request(&mut self) -> Step {
        let mut out = vec![VERSION, CMD_CONNECT, 0];
        match &self.destination {
            Destination::Ip(IpAddr::V4(ip)) => {
                out.push(ATYP_V4);
                out.extend_from_slice(&ip.octets());
            }
            Destination::Ip(IpAddr::V6(ip)) => {
                out.push(ATYP_V6);
                out.extend_from_slice(&ip.octets());
            }
            Destination::Name(name) => {
                out.push(ATYP_NAME);
                // INVARIANT: 1..=255 bytes (checked in `new`).
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
        self.state = State::ReplyHead;
        Step::Send(Zeroizing::new(out))
    }
}

/// RFC 1928 §6's reply codes.
pub fn reply_meaning(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hs: &mut Handshake, mut proxy: &[u8]) -> (Vec<Vec<u8>>, Result<Step, ProxyFailure>) {
        let mut sent = vec![hs.greeting()];
        loop {
            let n = hs.wants();
            if n == 0 || proxy.len() < n {
                return (sent, Ok(Step::Read));
            }
            let (now, rest) = proxy.split_at(n);
            proxy = rest;
            match hs.receive(now) {
                Ok(Step::Send(b)) => sent.push(b.to_vec()),
                Ok(Step::Read) => {}
                other => return (sent, other),
            }
        }
    }

    #[test]
    fn without_credentials_an_ipv4_destination() {
        let mut hs = Handshake::new(Destination::Ip("127.0.0.1".parse().unwrap()), 5985, None).unwrap();
        let (sent, end) = run(&mut hs, &[5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(end, Ok(Step::Done));
        assert_eq!(sent, vec![vec![5, 1, 0], vec![5, 1, 0, 1, 127, 0, 0, 1, 0x17, 0x61]]);
        assert_eq!(hs.wants(), 0);
    }

    #[test]
    fn with_credentials_a_name_and_an_ipv6_bound_address() {
        let creds = ProxyCredentials::new("sockuser", "s0ck pass");
        let mut hs = Handshake::new(Destination::Name("localhost".into()), 443, Some(creds)).unwrap();
        let mut reply = vec![5, 2, 1, 0, 5, 0, 0, 4];
        reply.extend_from_slice(&[0; 16]);
        reply.extend_from_slice(&[1, 187]);
        let (sent, end) = run(&mut hs, &reply);
        assert_eq!(end, Ok(Step::Done));
        assert_eq!(sent[0], vec![5, 2, 0, 2]);
        assert_eq!(sent[1], b"\x01\x08sockuser\x09s0ck pass".to_vec());
        assert_eq!(sent[2], b"\x05\x01\x00\x03\x09localhost\x01\xbb".to_vec());
    }

    #[test]
    fn a_bound_name_is_read_by_its_length() {
        let mut hs = Handshake::new(Destination::Ip("::1".parse().unwrap()), 1, None).unwrap();
        let (sent, end) = run(&mut hs, b"\x05\x00\x05\x00\x00\x03\x04host\x00\x01");
        assert_eq!(end, Ok(Step::Done));
        assert_eq!(sent[1][3], ATYP_V6);
    }

    #[test]
    fn failures_are_typed() {
        let dest = || Destination::Ip("127.0.0.1".parse().unwrap());
        let creds = || Some(ProxyCredentials::new("u", "p"));
        let cases: Vec<(Option<ProxyCredentials>, &[u8], ProxyFailure)> = vec![
            (None, &[5, 0xff], ProxyFailure::Authentication { had_credentials: false, status: None }),
            (creds(), &[5, 0xff], ProxyFailure::Authentication { had_credentials: true, status: None }),
            (creds(), &[5, 2, 1, 2], ProxyFailure::Authentication { had_credentials: true, status: None }),
            (
                None,
                &[5, 0, 5, 5, 0, 1],
                ProxyFailure::Refused {
                    target: "127.0.0.1:1".into(),
                    status: Some(5),
                    reason: "connection refused".into(),
                },
            ),
        ];
        for (creds, reply, want) in cases {
            let mut hs = Handshake::new(dest(), 1, creds).unwrap();
            let (_, end) = run(&mut hs, reply);
            assert_eq!(end, Err(want));
            assert_eq!(hs.wants(), 0);
        }
        for reply in [&[4u8, 0][..], &[5, 2], &[5, 1], &[5, 0, 4, 0, 0, 1], &[5, 0, 5, 0, 0, 9]] {
            let mut hs = Handshake::new(dest(), 1, None).unwrap();
            let (_, end) = run(&mut hs, reply);
            assert!(matches!(end, Err(ProxyFailure::Protocol(_))), "{reply:?}: {end:?}");
        }
        let mut hs = Handshake::new(dest(), 1, None).unwrap();
        assert!(matches!(hs.receive(&[5]), Err(ProxyFailure::Protocol(_))));
    }

    #[test]
    fn bad_names_and_credentials_are_refused_up_front() {
        assert!(Handshake::new(Destination::Name(String::new()), 1, None).is_err());
        assert!(Handshake::new(Destination::Name("a".repeat(256)), 1, None).is_err());
        assert!(Handshake::new(Destination::Name("a b".into()), 1, None).is_err());
        let empty = Some(ProxyCredentials::new("u", ""));
        assert!(Handshake::new(Destination::Name("h".into()), 1, empty).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let hs = Handshake::new(Destination::Name("h".into()), 1, Some(ProxyCredentials::new("u", "hunter2"))).unwrap();
        assert!(!format!("{hs:?}").contains("hunter2"));
    }
}
