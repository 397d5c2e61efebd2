//! Every vector in `tests/data/vectors.json` that concerns PSRP framing, messages or the session
//! key, driven from the file (CLIXML vectors are in `clixml_vectors.rs`).

use base64::Engine as _;
use psremote::clixml::{self, Limits, Value};
use psremote::psrp::fragment::{Defragmenter, Fragmenter};
use psremote::psrp::message::{Destination, Message, MessageType};
use psremote::psrp::messages;
use psremote::psrp::session_key::{ClientKeyPair, SessionKey};
use psremote::psrp::{HostCall, HostMethod, HostResponse};
use serde_json::Value as Json;

fn vectors() -> Vec<Json> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vector(id: &str) -> Json {
    vectors().into_iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("no vector {id}"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn s<'a>(v: &'a Json, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_else(|| panic!("{path:?} is not a string"))
}

#[test]
fn fragment_vectors() {
    let mut n = 0;
    for v in vectors().into_iter().filter(|v| v["id"].as_str().unwrap().starts_with("psrp-fragment-")) {
        let max = v["input"]["fragmenter_max_size"].as_u64().unwrap() as usize;
        let messages: Vec<Vec<u8>> = v["input"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                // `PipelineInput("12")` or `PipelineInput("a"*60)`.
                let m = m.as_str().unwrap();
                let inner = m.strip_prefix("PipelineInput(").unwrap().strip_suffix(')').unwrap();
                let text = match inner.split_once('*') {
                    Some((c, k)) => c.trim_matches('"').repeat(k.parse().unwrap()),
                    None => inner.trim_matches('"').to_owned(),
                };
                let data = clixml::to_string(&Value::Str(text)).into_bytes();
                Message::new(Destination::Server, MessageType::PipelineInput, uuid::Uuid::nil(), None, data).encode()
            })
            .collect();
        let chunks = Fragmenter::new(max).fragment(messages.iter().map(Vec::as_slice));
        let expected: Vec<Vec<u8>> =
            v["expected"]["chunks_hex"].as_array().unwrap().iter().map(|c| unhex(c.as_str().unwrap())).collect();
        assert_eq!(chunks, expected, "{}", v["id"]);
        let mut d = Defragmenter::default();
        let back: Vec<Vec<u8>> = chunks.iter().flat_map(|c| d.push(c).unwrap()).collect();
        assert_eq!(back, messages);
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn message_header_vectors() {
    let v = vector("psrp-message-public-key-request");
    let m = Message::new(
        Destination::Server,
        MessageType::from_value(0x0001_0007),
        uuid::Uuid::nil(),
        None,
        s(&v, &["input", "data"]).as_bytes().to_vec(),
    );
    assert_eq!(m.encode(), unhex(s(&v, &["expected", "bytes_hex"])));

    let v = vector("psrp-message-unpack-strip-bom");
    let m = Message::decode(&unhex(s(&v, &["input", "bytes_hex"]))).unwrap();
    assert_eq!(m.data, s(&v, &["expected", "data"]).as_bytes());
    assert_eq!(m.pid, None);
    assert_eq!(m.message_type, MessageType::SessionCapability);

    // The real Create request: creationXml fragments carry .NET GUID byte order.
    let v = vector("wsman-psrp-create-request-real");
    let xml = s(&v, &["input", "xml"]);
    let start = xml.find("<creationXml").unwrap();
    let b = &xml[xml[start..].find('>').unwrap() + start + 1..xml.find("</creationXml>").unwrap()];
    let chunk = b64(b);
    assert_eq!(&chunk[..21], &unhex(s(&v, &["expected", "first_fragment_header_hex"]))[..]);
    let msgs = Defragmenter::default().push(&chunk).unwrap();
    assert_eq!(&msgs[0][..40], &unhex(s(&v, &["expected", "first_message_header_hex"]))[..]);
    let m = Message::decode(&msgs[0]).unwrap();
    assert_eq!(m.rpid, uuid::Uuid::parse_str("b2dde5ba-f22f-4493-9b8e-8b565073f563").unwrap());
}

fn test_key() -> ClientKeyPair {
    let v = vector("psrp-key-exchange-real");
    ClientKeyPair::from_primes(
        &unhex(s(&v, &["input", "rsa_p_hex"])),
        &unhex(s(&v, &["input", "rsa_q_hex"])),
        v["input"]["rsa_e"].as_u64().unwrap() as u32,
    )
    .unwrap()
}

#[test]
fn session_key_vectors() {
    let v = vector("psrp-key-exchange-real");
    let pair = test_key();
    assert_eq!(pair.public_key_blob(), b64(s(&v, &["input", "public_key_b64"])));
    let key = pair.decrypt_session_key(&b64(s(&v, &["input", "encrypted_session_key_b64"]))).unwrap();
    let expected = SessionKey::from_bytes(unhex(s(&v, &["expected", "session_key_hex"])).try_into().unwrap());
    assert_eq!(key.encrypt_string("probe"), expected.encrypt_string("probe"));

    // The spec's PUBLICKEYBLOB example has the layout our blob has.
    let v = vector("psrp-spec-public-key-blob");
    let spec = b64(s(&v, &["input", "public_key_b64"]));
    assert_eq!(spec.len(), v["expected"]["total_len"].as_u64().unwrap() as usize);
    let ours = pair.public_key_blob();
    assert_eq!(ours.len(), spec.len());
    let header = unhex(s(&v, &["expected", "header_hex"]));
    assert_eq!(&spec[..16], &header[..]);
    assert_eq!(&ours[..16], &header[..]);
    assert_eq!(&ours[16..20], &unhex(s(&v, &["expected", "exponent_le_hex"]))[..]);

    // The spec's SIMPLEBLOB example: our reader accepts its header and then fails cleanly, since
    // it was encrypted to a key we do not have.
    let v = vector("psrp-spec-encrypted-session-key-blob");
    let blob = b64(s(&v, &["input", "encrypted_session_key_b64"]));
    assert_eq!(blob.len(), v["expected"]["total_len"].as_u64().unwrap() as usize);
    assert_eq!(&blob[..12], &unhex(s(&v, &["expected", "header_hex"]))[..]);
    let err = pair.decrypt_session_key(&blob).unwrap_err();
    assert_eq!(err.kind(), psremote::ErrorKind::Protocol);
    let mut wrong = blob.clone();
    wrong[4] = 0x0F;
    assert!(pair.decrypt_session_key(&wrong).unwrap_err().to_string().contains("AES-256"));
}

#[test]
fn securestring_vectors() {
    let v = vector("securestring-aes-real");
    let key = SessionKey::from_bytes(unhex(s(&v, &["input", "session_key_hex"])).try_into().unwrap());
    for r in v["expected"]["results"].as_array().unwrap() {
        let ct = b64(s(r, &["ss_b64"]));
        assert_eq!(key.decrypt_string(&ct).unwrap().as_str(), s(r, &["plaintext"]));
        assert_eq!(key.encrypt_string(s(r, &["plaintext"])), ct);
    }

    // A PSCredential answering PromptForCredential2: decrypt the recorded session key with the
    // published test key, read the password, and produce the identical host response.
    let v = vector("securestring-pscredential-host-response-real");
    let key = test_key().decrypt_session_key(&b64(s(&v, &["input", "encrypted_session_key_b64"]))).unwrap();
    let msg = &v["input"]["host_response_message"];
    let recorded = clixml::from_str(s(msg, &["data"]), &Limits::default()).unwrap();
    let cred = recorded.property("mr").unwrap();
    let Some(Value::SecureString(ct)) = cred.property("Password") else { panic!("no password in {cred:?}") };
    assert_eq!(key.decrypt_string(ct).unwrap().as_str(), s(&v, &["expected", "password"]));
    let call = HostCall {
        ci: recorded.property("ci").unwrap().as_i64().unwrap(),
        method: HostMethod::PromptForCredential2,
        parameters: Vec::new(),
    };
    let ours = messages::host_response(&call, &HostResponse::Value(cred.clone()));
    assert_eq!(ours.property("mr"), Some(cred));
    assert_eq!(ours.property("mi").and_then(Value::as_i64), Some(25));
    assert_eq!(key.encrypt_string("password"), *ct);
}

#[test]
fn runspace_availability_vectors() {
    let v = vector("psrp-runspace-availability-real");
    let mut answers = Vec::new();
    for m in v["expected"]["messages"].as_array().unwrap() {
        let value = clixml::from_str(s(m, &["data"]), &Limits::default()).unwrap();
        if s(m, &["type"]) == "0x21004" {
            answers.push(messages::parse_availability(&value).unwrap());
        }
    }
    assert!(answers.len() >= 3);
    assert!(answers.iter().any(|(_, v)| *v == Value::Bool(true)));
    assert!(answers.iter().any(|(_, v)| matches!(v, Value::I32(_))));
}

#[test]
fn signal_code_vectors() {
    let v = vector("wsman-signal-codes");
    use psremote::wsman::winrs::signal;
    assert!(signal::PS_STOP.ends_with(s(&v, &["expected", "ps_stop_pwsh"])));
    assert_eq!(signal::CTRL_C, s(&v, &["expected", "ctrl_c"]));
    assert_eq!(signal::CTRL_BREAK, s(&v, &["expected", "ctrl_break"]));
    assert!(s(&v, &["expected", "terminate"]).starts_with(signal::TERMINATE));
    assert!(signal::PS_TERMINATE.eq_ignore_ascii_case(signal::TERMINATE));
}

/// `outofproc-packets`: the lines PowerShell's `CreateDataPacket`/`CreatePSGuidPacket` write
/// (PowerShell `OutOfProcTransportManager.cs`, psrpcore's test helpers), encoded by us byte for
/// byte, and each read back to the packet it was made from (the acknowledgements through the
/// server-side decoder as well).
#[test]
fn outofproc_packet_vectors() {
    use psremote::psrp::outofproc::{DataStream, Decoder, GuidPacket, Packet, parse_line};
    let v = vector("outofproc-packets");
    let data = unhex(s(&v, &["input", "fragment_bytes_hex"]));
    let pid = uuid::Uuid::parse_str(s(&v, &["input", "pipeline_id"])).unwrap();
    let nil = uuid::Uuid::nil();
    let packets = [
        Packet::Data { stream: DataStream::Default, guid: nil, data: data.clone() },
        Packet::Guid(GuidPacket::DataAck, nil),
        Packet::Guid(GuidPacket::Command, pid),
        Packet::Guid(GuidPacket::CommandAck, pid),
        Packet::Data { stream: DataStream::PromptResponse, guid: pid, data },
        Packet::Guid(GuidPacket::Signal, pid),
        Packet::Guid(GuidPacket::SignalAck, pid),
        Packet::Guid(GuidPacket::Close, pid),
        Packet::Guid(GuidPacket::CloseAck, pid),
    ];
    let lines: Vec<&str> = v["expected"]["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines.len(), packets.len());
    let mut decoder = Decoder::new(psremote::psrp::outofproc::DEFAULT_FRAGMENT_SIZE);
    for (packet, line) in packets.iter().zip(&lines) {
        assert_eq!(packet.encode(), format!("{line}\n").into_bytes(), "{line}");
        assert_eq!(&parse_line(line.as_bytes()).unwrap(), packet, "{line}");
        // GUIDs are read in any case.
        let guid = packet.guid().as_hyphenated().to_string();
        let upper = line.replace(&guid, &guid.to_uppercase());
        assert_eq!(&parse_line(upper.as_bytes()).unwrap(), packet, "{upper}");
        let decoded = decoder.feed(format!("{line}\r\n").as_bytes());
        if packet.from_server() {
            assert_eq!(decoded.unwrap(), vec![packet.clone()], "{line}");
        } else {
            assert!(decoded.unwrap_err().to_string().contains("sent by clients"), "{line}");
            decoder = Decoder::new(psremote::psrp::outofproc::DEFAULT_FRAGMENT_SIZE);
        }
    }
}
