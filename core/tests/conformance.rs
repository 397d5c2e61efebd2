//! Real Windows on the wire: the 44 recorded scenarios in `tests/data/windows-transcripts`.
//!
//! (a) Every PSRP message Windows sent decodes to typed messages and values, and re-encodes to an
//!     equal value. Every message the recording client sent (and Windows accepted) decodes too.
//! (b) The client messages Windows accepted are reproduced by psremote's encoder from the
//!     equivalent API calls, compared as values with ids aside.

mod common;

use std::collections::BTreeMap;

use common::transcripts::{self, Side};
use psremote::clixml::{self, Container, Limits, PsObject, Value};
use psremote::psrp::message::MessageType;
use psremote::psrp::messages::{self, Command, HostInfo, Merge, PipelineSpec, ProtocolVersion};

fn decode(data: &[u8]) -> Value {
    clixml::from_bytes(data, &Limits::default()).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(data)))
}

/// Parses a server message into its typed form; panics when the shape is not understood.
fn typed(ty: MessageType, v: &Value) -> String {
    match ty {
        MessageType::SessionCapability => format!("{:?}", messages::parse_session_capability(v).unwrap()),
        MessageType::RunspacePoolState => format!("{:?}", messages::parse_state(v, "RunspaceState").unwrap().0),
        MessageType::PipelineState => format!("{:?}", messages::parse_state(v, "PipelineState").unwrap().0),
        MessageType::ErrorRecord => {
            let r = messages::parse_error_record(v);
            assert!(!r.message.is_empty() || r.fully_qualified_error_id.is_some(), "empty error record {v:?}");
            r.to_string()
        }
        MessageType::WarningRecord | MessageType::VerboseRecord | MessageType::DebugRecord => {
            messages::parse_informational(v).message
        }
        MessageType::ProgressRecord => messages::parse_progress(v).activity,
        MessageType::InformationRecord => messages::parse_information(v).text(),
        MessageType::RunspacePoolHostCall | MessageType::PipelineHostCall => {
            format!("{:?}", messages::parse_host_call(v).unwrap().method)
        }
        MessageType::RunspaceAvailability => format!("{:?}", messages::parse_availability(v).unwrap()),
        MessageType::EncryptedSessionKey => {
            format!("{} bytes", messages::parse_encrypted_session_key(v).unwrap().len())
        }
        MessageType::ApplicationPrivateData
        | MessageType::PipelineOutput
        | MessageType::UserEvent
        | MessageType::RunspacePoolInitData
        | MessageType::PublicKeyRequest => String::new(),
        other => panic!("unexpected server message type {other:?}"),
    }
}

#[test]
fn every_recorded_psrp_message_decodes_and_round_trips() {
    let mut server = 0;
    let mut client = 0;
    let mut files = 0;
    let mut types = std::collections::BTreeSet::new();
    for name in transcripts::names() {
        let found = transcripts::psrp_messages(&name);
        if !found.is_empty() {
            files += 1;
        }
        for f in found {
            let m = &f.message;
            types.insert(format!("{:?}", m.message_type));
            if m.data.is_empty() {
                assert_eq!(m.message_type, MessageType::EndOfPipelineInput, "{name}");
                continue;
            }
            let v = decode(&m.data);
            let again = clixml::from_str(&clixml::to_string(&v), &Limits::default()).unwrap();
            assert_eq!(again, v, "{name}: {:?} does not round-trip", m.message_type);
            match f.side {
                Side::Server => {
                    typed(m.message_type, &v);
                    server += 1;
                }
                Side::Client => client += 1,
            }
        }
    }
    eprintln!("{files} PSRP scenarios: {server} server messages, {client} client messages; types {types:?}");
    assert!(files >= 25, "only {files} PSRP scenarios found");
    assert!(server >= 250 && client >= 130, "too few messages: {server} server, {client} client");
}

/// A value with what legitimately differs between encoders removed: enum type names and their
/// ToString (PROTOCOL.md F.4: servers convert enums by value), RefIds (not in the model), and
/// property order.
fn normalize(v: &Value) -> String {
    match v {
        Value::Object(o) => normalize_obj(o),
        other => format!("{other:?}"),
    }
}

fn normalize_obj(o: &PsObject) -> String {
    if let Some(inner) = &o.value {
        // Enums and extended primitives compare by their underlying value.
        return format!("enum({})", normalize(inner));
    }
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in o.adapted.iter().chain(o.extended.iter()) {
        // PowerShell property names are case-insensitive (pypsrp sends `CI`, Windows `ci`).
        props.insert(k.to_lowercase(), normalize(v));
    }
    let container = match &o.container {
        Some(Container::List(items)) | Some(Container::Queue(items)) | Some(Container::Stack(items)) => {
            format!("[{}]", items.iter().map(normalize).collect::<Vec<_>>().join(", "))
        }
        Some(Container::Dictionary(entries)) => {
            format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", normalize(k), normalize(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        None => String::new(),
        Some(other) => format!("{other:?}"),
    };
    format!("obj{:?}{container}{props:?}", o.type_names.as_deref().filter(|_| o.container.is_some()))
}

fn prop<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.property(name).unwrap_or_else(|| panic!("no {name} in {v:?}"))
}

fn list(v: &Value) -> Vec<Value> {
    match v.as_object().and_then(|o| o.container.as_ref()) {
        Some(Container::List(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn flag(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Reads the API call a recorded CREATE_PIPELINE expresses.
fn spec_from_recording(v: &Value) -> (PipelineSpec, ProtocolVersion) {
    let ps = prop(v, "PowerShell");
    let extra = prop(ps, "ExtraCmds");
    let statements: Vec<Value> = if matches!(extra, Value::Nil) {
        vec![prop(ps, "Cmds").clone()]
    } else {
        list(extra).iter().map(|s| prop(s, "Cmds").clone()).collect()
    };
    let first_cmd = list(prop(ps, "Cmds")).into_iter().next().unwrap();
    let protocol = if first_cmd.property("MergeInformation").is_some() {
        ProtocolVersion::V2_3
    } else if first_cmd.property("MergeError").is_some() {
        ProtocolVersion::V2_2
    } else {
        ProtocolVersion::V2_1
    };
    let statements = statements
        .iter()
        .map(|cmds| {
            list(cmds)
                .iter()
                .map(|c| Command {
                    text: prop(c, "Cmd").as_str().unwrap().to_owned(),
                    is_script: prop(c, "IsScript").as_bool().unwrap(),
                    use_local_scope: prop(c, "UseLocalScope").as_bool(),
                    parameters: list(prop(c, "Args"))
                        .iter()
                        .map(|a| (prop(a, "N").as_str().map(str::to_owned), prop(a, "V").clone()))
                        .collect(),
                    merge: Merge {
                        error: flag(prop(c, "MergeMyResult")) == 2
                            || c.property("MergeError").is_some_and(|m| flag(m) == 1),
                        warning: c.property("MergeWarning").is_some_and(|m| flag(m) == 1),
                        verbose: c.property("MergeVerbose").is_some_and(|m| flag(m) == 1),
                        debug: c.property("MergeDebug").is_some_and(|m| flag(m) == 1),
                        information: c.property("MergeInformation").is_some_and(|m| flag(m) == 1),
                    },
                })
                .collect()
        })
        .collect();
    let spec = PipelineSpec {
        statements,
        has_input: !prop(v, "NoInput").as_bool().unwrap(),
        add_to_history: prop(v, "AddToHistory").as_bool().unwrap(),
        is_nested: prop(v, "IsNested").as_bool().unwrap(),
        invocation_info: prop(v, "RemoteStreamOptions").as_i64() == Some(15),
    };
    (spec, protocol)
}

fn host_from_recording(v: &Value) -> HostInfo {
    let h = prop(v, "HostInfo");
    let b = |n: &str| prop(h, n).as_bool().unwrap();
    HostInfo {
        is_host_null: b("_isHostNull"),
        is_host_ui_null: b("_isHostUINull"),
        is_host_raw_ui_null: b("_isHostRawUINull"),
        use_runspace_host: b("_useRunspaceHost"),
        default_data: h.property("_hostDefaultData").cloned(),
    }
}

#[test]
fn client_messages_windows_accepted_are_reproduced_by_the_encoder() {
    let mut compared = BTreeMap::<String, usize>::new();
    for name in transcripts::names() {
        for f in transcripts::psrp_messages(&name).into_iter().filter(|f| f.side == Side::Client) {
            let m = &f.message;
            if m.data.is_empty() {
                continue;
            }
            let recorded = decode(&m.data);
            let ours = match m.message_type {
                MessageType::SessionCapability => {
                    if prop(&recorded, "protocolversion") != &Value::Version(messages::PROTOCOL_VERSION.into()) {
                        continue;
                    }
                    messages::session_capability()
                }
                MessageType::InitRunspacePool => messages::init_runspace_pool(
                    prop(&recorded, "MinRunspaces").as_i64().unwrap() as i32,
                    prop(&recorded, "MaxRunspaces").as_i64().unwrap() as i32,
                    &host_from_recording(&recorded),
                    Some(prop(&recorded, "ApplicationArguments").clone()),
                ),
                MessageType::CreatePipeline => {
                    let (spec, protocol) = spec_from_recording(&recorded);
                    messages::create_pipeline(&spec, &host_from_recording(&recorded), protocol).unwrap()
                }
                MessageType::SetMaxRunspaces | MessageType::SetMinRunspaces => {
                    let max = m.message_type == MessageType::SetMaxRunspaces;
                    let field = if max { "MaxRunspaces" } else { "MinRunspaces" };
                    let ci = recorded.property("ci").or_else(|| recorded.property("CI")).unwrap().as_i64().unwrap();
                    messages::set_runspaces(max, prop(&recorded, field).as_i64().unwrap() as i32, ci)
                }
                MessageType::GetAvailableRunspaces | MessageType::ResetRunspaceState => {
                    let ci = recorded.property("ci").or_else(|| recorded.property("CI")).unwrap().as_i64().unwrap();
                    messages::call_id(ci)
                }
                _ => continue,
            };
            assert_eq!(normalize(&ours), normalize(&recorded), "{name}: {:?} differs", m.message_type);
            *compared.entry(format!("{:?}", m.message_type)).or_default() += 1;
        }
    }
    eprintln!("reproduced: {compared:?}");
    for ty in ["SessionCapability", "InitRunspacePool", "CreatePipeline"] {
        assert!(compared.get(ty).copied().unwrap_or(0) >= 5, "too few {ty} compared: {compared:?}");
    }
}
