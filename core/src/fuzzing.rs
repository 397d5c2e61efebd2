//! Fuzzing entry points: one function per parser of server bytes, shared by the cargo-fuzz
//! targets in `fuzz/` and by `core/tests/fuzz_corpus.rs`, which replays the committed corpus on
//! stable. Each function feeds arbitrary bytes to the parsers and drops the result: a parser may
//! return any error, but must not panic, hang or allocate without bound. Not part of the API.

use crate::clixml::{self, Limits};
use crate::psrp::fragment::{DefragLimits, Defragmenter, Fragmenter};
use crate::psrp::message::{Destination, Message, MessageType};
use crate::psrp::{PipelineSpec, PoolOptions, RunspacePool};
use crate::wsman::{self, config, shells, winrs, xml};

/// One fuzzing function: any bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as the fuzz targets and corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("clixml", clixml),
    ("psrp_defrag", psrp_defrag),
    ("psrp_message", psrp_message),
    ("psrp_pool", psrp_pool),
    ("wsman_reply", wsman_reply),
    ("encryption", encryption),
    ("outofproc", outofproc),
    ("proxy_http", proxy_http),
    ("proxy_socks5", proxy_socks5),
    #[cfg(feature = "client")]
    ("der", der),
    #[cfg(feature = "client")]
    ("krb5_conf", krb5_conf),
];

/// Limits small enough that a fuzzer's input cannot make one run slow.
fn clixml_limits() -> Limits {
    Limits { max_depth: 64, max_objects: 100_000, max_bytes: 1 << 20 }
}

/// Splits fuzz input into chunks: each record is a flag byte, a big-endian u16 length and that
/// many bytes (the last record takes what is left). The seeds are written this way.
pub fn records(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((&flag, rest)) = data.split_first() {
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), rest),
        };
        let len = len.min(rest.len());
        out.push((flag, &rest[..len]));
        data = &rest[len..];
    }
    out
}

/// The CLIXML reader: one message body and a sequence of values.
pub fn clixml(data: &[u8]) {
    let limits = clixml_limits();
    if let Ok(v) = clixml::from_bytes(data, &limits) {
        // What was read can be written back out.
        let _ = clixml::to_string(&v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = clixml::from_str_many(text, &limits);
    }
}

/// PSRP fragment reassembly over several chunks, then message decoding of what it completed.
pub fn psrp_defrag(data: &[u8]) {
    let _ = crate::psrp::fragment::parse_fragments(data);
    let mut defrag = Defragmenter::new(DefragLimits { max_message: 1 << 20, max_pending: 16 });
    for (_, chunk) in records(data) {
        match defrag.push(chunk) {
            Ok(messages) => {
                for m in messages {
                    let _ = Message::decode(&m);
                }
            }
            Err(_) => return,
        }
    }
}

/// The out-of-process transport's line decoder, fed in records as a pipe delivers bytes, with
/// each Data packet's fragments split as the driver does; and one line parsed whole.
pub fn outofproc(data: &[u8]) {
    use crate::psrp::outofproc::{Decoder, Packet, parse_line};
    let _ = parse_line(data);
    let mut decoder = Decoder::new(4096);
    for (_, chunk) in records(data) {
        match decoder.feed(chunk) {
            Ok(packets) => {
                for p in packets {
                    if let Packet::Data { data, .. } = p {
                        let _ = crate::psrp::fragment::split_fragments(&data);
                    }
                }
            }
            Err(_) => return,
        }
    }
    let _ = decoder.finish();
}

/// One PSRP message (the 40-byte header and its CLIXML body).
pub fn psrp_message(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let _ = clixml::from_bytes(&m.data, &clixml_limits());
    }
}

const POOL_ID: uuid::Uuid = uuid::Uuid::from_u128(0xb2dde5ba_f22f_4493_9b8e_8b565073f563);
const PIPELINE_ID: uuid::Uuid = uuid::Uuid::from_u128(0x5b1be6c6_ecfa_4ba8_806b_8dd7c290a0fa);

fn server_message(ty: MessageType, body: &str) -> Vec<u8> {
    let msg = Message::new(Destination::Client, ty, POOL_ID, None, body.as_bytes().to_vec());
    Fragmenter::new(4096).fragment([msg.encode().as_slice()]).remove(0)
}

/// An opened pool (server capability 2.3 and RunspaceState Opened fed to it) with one pipeline.
fn opened_pool() -> RunspacePool {
    let options = PoolOptions {
        clixml_limits: clixml_limits(),
        defrag_limits: DefragLimits { max_message: 1 << 20, max_pending: 16 },
        ..PoolOptions::default()
    };
    let mut pool = RunspacePool::new(POOL_ID, options);
    pool.open().expect("a new pool opens");
    let capability = "<Obj RefId=\"0\"><MS><Version N=\"protocolversion\">2.3</Version>\
        <Version N=\"PSVersion\">2.0</Version><Version N=\"SerializationVersion\">1.1.0.1</Version></MS></Obj>";
    let state = "<Obj RefId=\"0\"><MS><I32 N=\"RunspaceState\">2</I32></MS></Obj>";
    pool.receive(None, &server_message(MessageType::SessionCapability, capability)).expect("capability");
    pool.receive(None, &server_message(MessageType::RunspacePoolState, state)).expect("opened");
    let spec = PipelineSpec { statements: vec![vec![crate::psrp::Command::script("1")]], ..Default::default() };
    pool.create_pipeline(PIPELINE_ID, &spec).expect("a pipeline starts on an opened pool");
    while pool.next_outgoing().is_some() {}
    pool
}

/// `RunspacePool::receive` of an opened pool: each record's flag byte picks the pool's own
/// stream (even) or the pipeline's (odd).
pub fn psrp_pool(data: &[u8]) {
    let mut pool = opened_pool();
    for (flag, chunk) in records(data) {
        let pid = if flag & 1 == 1 { Some(PIPELINE_ID) } else { None };
        if pool.receive(pid, chunk).is_err() {
            return;
        }
        while pool.next_outgoing().is_some() {}
    }
}

/// WS-Man reply parsing (faults included) and every reader of a reply body.
pub fn wsman_reply(data: &[u8]) {
    // Answer to the id the reply relates to, so the fuzzer reaches the body readers.
    let message_id = xml::parse(data)
        .ok()
        .and_then(|root| {
            let relates = root.child(wsman::ns::SOAP, "Header")?.child(wsman::ns::ADDRESSING, "RelatesTo")?;
            uuid::Uuid::parse_str(relates.text.trim().strip_prefix("uuid:")?).ok()
        })
        .unwrap_or(uuid::Uuid::nil());
    let reply = match wsman::parse_reply(data, message_id) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = winrs::parse_receive(&reply);
    let _ = config::parse_config(&reply);
    let _ = shells::parse_enumeration(&reply);
    let _ = shells::shell_from_get(&reply);
    let _ = shells::connect_response_data(&reply);
    let _ = shells::command_ids(&reply.body.children);
    for text in [&reply.action, &reply.body.text] {
        let _ = shells::parse_duration(text);
        let _ = shells::BufferMode::parse(text);
    }
}

/// The message-encryption framing (multipart/encrypted bodies) and its length checks.
pub fn encryption(data: &[u8]) {
    let _ = crate::encryption::parse(data);
    let _ = crate::encryption::unseal_with(data, |_, ciphertext| Ok(ciphertext.to_vec()));
}

/// A proxy's reply to CONNECT, arriving in the records' pieces: each prefix is read as the
/// transport reads it, until the parser decides (and a decided reply must stay decided).
pub fn proxy_http(data: &[u8]) {
    let mut exchange = crate::proxy::http::Connect::new("srv.example", 5985);
    let _ = exchange.request(Some(&crate::proxy::ProxyCredentials::new("u", "p")));
    let mut received = Vec::new();
    for (_, piece) in records(data) {
        received.extend_from_slice(piece);
        if received.len() > crate::proxy::http::MAX_HEAD + 1 {
            received.truncate(crate::proxy::http::MAX_HEAD + 1);
        }
        match exchange.read_reply(&received) {
            Ok(None) => {}
            Ok(Some(())) | Err(_) => return,
        }
    }
}

/// A SOCKS5 proxy's replies: the first byte picks the destination kind and whether
/// credentials are offered, the rest is read exactly as the handshake wants it.
pub fn proxy_socks5(data: &[u8]) {
    use crate::proxy::socks5::{Destination, Handshake, Step};
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let destination = match flags % 3 {
        0 => Destination::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
        1 => Destination::Ip(std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        _ => Destination::Name("srv.example".into()),
    };
    let credentials = (flags & 4 != 0).then(|| crate::proxy::ProxyCredentials::new("u", "p"));
    let Ok(mut hs) = Handshake::new(destination, 5985, credentials) else { return };
    let _ = hs.greeting();
    loop {
        let n = hs.wants();
        if n == 0 || rest.len() < n {
            return;
        }
        let (now, later) = rest.split_at(n);
        rest = later;
        match hs.receive(now) {
            Ok(Step::Send(_)) | Ok(Step::Read) => {}
            Ok(Step::Done) | Err(_) => return,
        }
    }
}

/// The DER reader of server certificates.
#[cfg(feature = "client")]
pub fn der(data: &[u8]) {
    crate::transport::fuzz_der(data);
}

/// krb5.conf parsing and the KDC addresses it names.
#[cfg(feature = "client")]
pub fn krb5_conf(data: &[u8]) {
    let conf = crate::auth::kdc::Krb5Conf::parse(&String::from_utf8_lossy(data));
    for (_, kdc) in &conf.kdcs {
        let _ = crate::auth::kdc::parse_kdc(kdc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_and_take_the_rest() {
        assert_eq!(records(&[1, 0, 2, b'a', b'b', 0, 0, 9, b'c']), vec![(1, &b"ab"[..]), (0, &b"c"[..])]);
        assert_eq!(records(&[3, b'7']), vec![(3, &b"7"[..])]);
        assert!(records(&[]).is_empty());
    }

    #[test]
    fn every_target_accepts_empty_and_garbage_input() {
        for (_, run) in TARGETS {
            run(b"");
            run(b"\xff\x00<s:Envelope");
        }
    }
}
