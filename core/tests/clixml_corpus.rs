//! Every CLIXML message recorded from real Windows servers (and the pypsrp clients that talked to them)
//! decodes, and re-encoding gives a document that decodes to an equal value.

#[path = "clixml_support/mod.rs"]
mod common;

use psremote::clixml::{Limits, Value, from_bytes, from_str, to_string};

#[test]
fn extracts_the_expected_messages() {
    let all = common::corpus::messages(&common::transcripts_dir());
    let files = common::corpus::transcript_files(&common::transcripts_dir());
    assert_eq!(files.len(), 44, "recorded scenarios");
    // END_OF_PIPELINE_INPUT (0x41003) is the only message with no data.
    for m in all.iter().filter(|m| m.clixml().is_empty()) {
        assert_eq!(m.message_type, 0x41003, "{}", m.file);
    }
    let clixml = common::clixml_corpus();
    eprintln!(
        "corpus: {} PSRP messages, {} with CLIXML, {} bytes",
        all.len(),
        clixml.len(),
        clixml.iter().map(|m| m.data.len()).sum::<usize>()
    );
    assert_eq!(all.len(), 402);
    assert_eq!(clixml.len(), 394);
}

#[test]
fn every_message_decodes_and_survives_a_round_trip() {
    let limits = Limits::default();
    let corpus = common::clixml_corpus();
    let mut identical = 0;
    for (i, m) in corpus.iter().enumerate() {
        let value = from_bytes(&m.data, &limits)
            .unwrap_or_else(|e| panic!("message {i} ({}, type {:#x}): {e}", m.file, m.message_type));
        let text = to_string(&value);
        let again =
            from_str(&text, &limits).unwrap_or_else(|e| panic!("re-encoded message {i} ({}): {e}\n{text}", m.file));
        assert_eq!(value, again, "message {i} ({}, type {:#x})", m.file, m.message_type);
        if text.as_bytes() == m.clixml() {
            identical += 1;
        }
    }
    eprintln!("{} of {} messages re-encode byte for byte", identical, corpus.len());
    // Server output is written by PowerShell itself; our writer uses the same forms.
    let server_messages = corpus.iter().filter(|m| !m.from_client).count();
    assert!(identical >= server_messages, "{identical} identical, {server_messages} from the server");
}

#[test]
fn server_messages_carry_what_the_protocol_says() {
    let limits = Limits::default();
    let mut seen = 0;
    for m in common::clixml_corpus() {
        let value = from_bytes(&m.data, &limits).expect("decodes");
        match m.message_type {
            // SESSION_CAPABILITY
            0x10002 => {
                let version = value.property("protocolversion");
                assert!(matches!(version, Some(Value::Version(v)) if v.starts_with("2.")), "{version:?}");
                seen += 1;
            }
            // RUNSPACEPOOL_STATE, PIPELINE_STATE
            0x21005 => {
                assert!(value.property("RunspaceState").and_then(Value::as_i64).is_some());
                seen += 1;
            }
            0x41006 => {
                assert!(value.property("PipelineState").and_then(Value::as_i64).is_some());
                seen += 1;
            }
            // APPLICATION_PRIVATE_DATA holds the PSVersionTable in a PSPrimitiveDictionary.
            0x21009 => {
                let data = value.property("ApplicationPrivateData").and_then(Value::as_object).expect("dictionary");
                assert!(data.type_names().iter().any(|t| t.ends_with("PSPrimitiveDictionary")));
                seen += 1;
            }
            _ => {}
        }
    }
    assert!(seen > 100);
}

#[test]
#[ignore = "diagnostic: prints the first difference of each server message that does not re-encode identically"]
fn show_differences() {
    let limits = Limits::default();
    for m in common::clixml_corpus() {
        let value = from_bytes(&m.data, &limits).expect("decodes");
        let text = to_string(&value);
        let orig = std::str::from_utf8(m.clixml()).expect("utf-8");
        if text != orig {
            let at = text.bytes().zip(orig.bytes()).take_while(|(a, b)| a == b).count();
            let lo = at.saturating_sub(80);
            eprintln!(
                "{} {:#x} client={} at {at}:\n  ours: {}\n  orig: {}",
                m.file,
                m.message_type,
                m.from_client,
                &text[lo..(at + 80).min(text.len())],
                &orig[lo..(at + 80).min(orig.len())]
            );
        }
    }
}
