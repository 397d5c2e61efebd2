//! Typed PSRP message payloads (MS-PSRP 2.2.2, PROTOCOL.md C.9): builders for what the client
//! sends and readers for what the server sends, over CLIXML values.

use std::sync::Arc;

use crate::clixml::{Container, PsObject, Value};
use crate::error::{Error, Result};

use super::host::{HostCall, HostMethod, HostResponse};

/// The protocol version this client advertises. 2.3 is what Windows PowerShell 5.1 speaks and
/// keeps the session-key exchange (2.4 would drop it); see PROTOCOL.md F.12.
pub const PROTOCOL_VERSION: &str = "2.3";

const ENUM_BASES: [&str; 3] = ["System.Enum", "System.ValueType", "System.Object"];
const PS_OBJECT_LIST: &str = "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]";

fn obj(o: PsObject) -> Value {
    Value::Object(Arc::new(o))
}

pub(crate) fn ms(props: Vec<(&str, Value)>) -> Value {
    obj(PsObject { extended: props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), ..PsObject::new() })
}

fn type_names(names: &[&str]) -> Option<Arc<[String]>> {
    Some(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>().into())
}

/// An enum value: type names, the member name as ToString, the underlying I32.
pub fn enum_value(type_name: &str, name: &str, value: i32) -> Value {
    let mut names = vec![type_name];
    names.extend(ENUM_BASES);
    obj(PsObject {
        type_names: type_names(&names),
        to_string: Some(name.to_owned()),
        value: Some(Value::I32(value)),
        ..PsObject::new()
    })
}

/// SESSION_CAPABILITY from the client.
pub fn session_capability() -> Value {
    ms(vec![
        ("protocolversion", Value::Version(PROTOCOL_VERSION.into())),
        ("PSVersion", Value::Version("2.0".into())),
        ("SerializationVersion", Value::Version("1.1.0.1".into())),
    ])
}

/// HostInfo (MS-PSRP 2.2.3.14): which parts of a host the client offers.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// No host at all.
    pub is_host_null: bool,
    /// No UI.
    pub is_host_ui_null: bool,
    /// No raw UI.
    pub is_host_raw_ui_null: bool,
    /// Use the runspace's host rather than the pipeline's.
    pub use_runspace_host: bool,
    /// `_hostDefaultData` (raw UI defaults), when there is a raw UI.
    pub default_data: Option<Value>,
}

impl HostInfo {
    /// No host: the server fails host calls itself.
    pub fn null() -> Self {
        Self {
            is_host_null: true,
            is_host_ui_null: true,
            is_host_raw_ui_null: true,
            use_runspace_host: true,
            default_data: None,
        }
    }

    /// A host with a UI (ReadLine, Prompt, Write*) but no raw UI.
    pub fn with_ui() -> Self {
        Self {
            is_host_null: false,
            is_host_ui_null: false,
            is_host_raw_ui_null: true,
            use_runspace_host: false,
            default_data: None,
        }
    }

    /// A host with a UI and a raw UI whose console is described by `defaults`.
    pub fn with_raw_ui(defaults: &super::host::HostDefaults) -> Self {
        Self {
            is_host_null: false,
            is_host_ui_null: false,
            is_host_raw_ui_null: false,
            use_runspace_host: false,
            default_data: Some(defaults.value()),
        }
    }

    fn value(&self) -> Value {
        let mut props = Vec::new();
        if let Some(d) = &self.default_data {
            props.push(("_hostDefaultData", d.clone()));
        }
        props.extend([
            ("_isHostNull", Value::Bool(self.is_host_null)),
            ("_isHostUINull", Value::Bool(self.is_host_ui_null)),
            ("_isHostRawUINull", Value::Bool(self.is_host_raw_ui_null)),
            ("_useRunspaceHost", Value::Bool(self.use_runspace_host)),
        ]);
        ms(props)
    }
}

fn apartment_state() -> Value {
    enum_value("System.Threading.ApartmentState", "Unknown", 2)
}

/// INIT_RUNSPACEPOOL.
pub fn init_runspace_pool(min: i32, max: i32, host: &HostInfo, application_arguments: Option<Value>) -> Value {
    ms(vec![
        ("MinRunspaces", Value::I32(min)),
        ("MaxRunspaces", Value::I32(max)),
        ("PSThreadOptions", enum_value("System.Management.Automation.Runspaces.PSThreadOptions", "Default", 0)),
        ("ApartmentState", apartment_state()),
        ("HostInfo", host.value()),
        ("ApplicationArguments", application_arguments.unwrap_or(Value::Nil)),
    ])
}

/// `$PSSenderInfo.ApplicationArguments` as INIT_RUNSPACEPOOL carries it: a PSPrimitiveDictionary.
/// A dictionary object given by the caller (a Hashtable, say) keeps its entries and is typed as
/// one; anything else is sent as it is.
pub fn application_arguments(value: Value) -> Value {
    match value {
        Value::Object(o) if matches!(o.container, Some(Container::Dictionary(_))) => {
            let mut o = (*o).clone();
            o.type_names = type_names(&[
                "System.Management.Automation.PSPrimitiveDictionary",
                "System.Collections.Hashtable",
                "System.Object",
            ]);
            obj(o)
        }
        other => other,
    }
}

/// Which commands GET_COMMAND_METADATA asks for (MS-PSRP 2.2.2.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadataQuery {
    /// Command names, wildcards allowed; empty means `*`.
    pub names: Vec<String>,
    /// `System.Management.Automation.CommandTypes` flags (Alias 1, Function 2, Filter 4,
    /// Cmdlet 8, ExternalScript 16, Application 32, Script 64, Workflow 128,
    /// Configuration 256).
    pub command_types: i32,
    /// Module names to search; empty means every module.
    pub namespaces: Vec<String>,
}

impl Default for CommandMetadataQuery {
    /// Every alias, function, filter and cmdlet, as `Get-Command` lists them.
    fn default() -> Self {
        Self { names: Vec::new(), command_types: 15, namespaces: Vec::new() }
    }
}

const COMMAND_TYPE_NAMES: [(i32, &str); 9] = [
    (1, "Alias"),
    (2, "Function"),
    (4, "Filter"),
    (8, "Cmdlet"),
    (16, "ExternalScript"),
    (32, "Application"),
    (64, "Script"),
    (128, "Workflow"),
    (256, "Configuration"),
];

fn string_array(items: &[String]) -> Value {
    obj(PsObject {
        type_names: type_names(&["System.String[]", "System.Array", "System.Object"]),
        container: Some(Container::List(items.iter().map(|s| Value::Str(s.clone())).collect())),
        ..PsObject::new()
    })
}

/// GET_COMMAND_METADATA.
pub fn get_command_metadata(query: &CommandMetadataQuery) -> Value {
    let names: Vec<&str> =
        COMMAND_TYPE_NAMES.iter().filter(|(bit, _)| query.command_types & bit != 0).map(|(_, name)| *name).collect();
    let command_type = if query.command_types == 511 { "All".to_owned() } else { names.join(", ") };
    let wildcard = ["*".to_owned()];
    ms(vec![
        ("Name", string_array(if query.names.is_empty() { &wildcard } else { &query.names })),
        ("CommandType", enum_value("System.Management.Automation.CommandTypes", &command_type, query.command_types)),
        ("Namespace", if query.namespaces.is_empty() { Value::Nil } else { string_array(&query.namespaces) }),
        ("ArgumentList", Value::Nil),
    ])
}

/// PUBLIC_KEY.
pub fn public_key(blob: &[u8]) -> Value {
    use base64::Engine as _;
    ms(vec![("PublicKey", Value::Str(base64::engine::general_purpose::STANDARD.encode(blob)))])
}

/// SET_MAX_RUNSPACES / SET_MIN_RUNSPACES.
pub fn set_runspaces(max: bool, count: i32, ci: i64) -> Value {
    ms(vec![(if max { "MaxRunspaces" } else { "MinRunspaces" }, Value::I32(count)), ("ci", Value::I64(ci))])
}

/// GET_AVAILABLE_RUNSPACES and RESET_RUNSPACE_STATE carry only the call id.
pub fn call_id(ci: i64) -> Value {
    ms(vec![("ci", Value::I64(ci))])
}

/// Which streams a command merges (PipelineResultTypes, MS-PSRP 2.2.3.31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Merge {
    /// Merge the error stream into output (`2>&1`).
    pub error: bool,
    /// Merge warnings into output.
    pub warning: bool,
    /// Merge verbose into output.
    pub verbose: bool,
    /// Merge debug into output.
    pub debug: bool,
    /// Merge information into output.
    pub information: bool,
}

/// One command (or script) of a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The command name, or the script text.
    pub text: String,
    /// Whether `text` is a script.
    pub is_script: bool,
    /// Run a script in the local scope (`. script`) rather than a child scope.
    pub use_local_scope: Option<bool>,
    /// Parameters: `(Some(name), value)` named, `(None, value)` positional. A switch is
    /// `(Some(name), Value::Nil)` or a boolean.
    pub parameters: Vec<(Option<String>, Value)>,
    /// Stream merging.
    pub merge: Merge,
}

impl Command {
    /// A command by name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            text: name.into(),
            is_script: false,
            use_local_scope: None,
            parameters: Vec::new(),
            merge: Merge::default(),
        }
    }

    /// A script.
    pub fn script(text: impl Into<String>) -> Self {
        Self { is_script: true, ..Self::new(text) }
    }
}

/// What CREATE_PIPELINE runs: statements of piped commands.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Statements, each a pipeline of commands (`a | b; c`).
    pub statements: Vec<Vec<Command>>,
    /// Whether the client streams input (`NoInput = false`).
    pub has_input: bool,
    /// Add to the remote history.
    pub add_to_history: bool,
    /// Run nested.
    pub is_nested: bool,
    /// Ask the server to attach invocation info to error, warning, debug and verbose records
    /// (RemoteStreamOptions AddInvocationInfo, as PowerShell's own client does).
    pub invocation_info: bool,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        Self {
            statements: Vec::new(),
            has_input: false,
            add_to_history: false,
            is_nested: false,
            invocation_info: true,
        }
    }
}

impl PipelineSpec {
    /// One statement holding one script.
    pub fn script(text: impl Into<String>) -> Self {
        Self { statements: vec![vec![Command::script(text)]], ..Self::default() }
    }

    /// One statement holding one command.
    pub fn command(command: Command) -> Self {
        Self { statements: vec![vec![command]], ..Self::default() }
    }
}

fn merge_enum(flags: i32) -> Value {
    let name = match flags {
        0 => "None",
        1 => "Output",
        2 => "Error",
        3 => "Output, Error",
        4 => "Warning",
        8 => "Verbose",
        16 => "Debug",
        32 => "All",
        64 => "Null",
        _ => "Output",
    };
    enum_value("System.Management.Automation.Runspaces.PipelineResultTypes", name, flags)
}

fn ps_list(items: Vec<Value>) -> Value {
    obj(PsObject {
        type_names: type_names(&[PS_OBJECT_LIST, "System.Object"]),
        container: Some(Container::List(items)),
        ..PsObject::new()
    })
}

fn command_value(c: &Command, protocol: ProtocolVersion) -> Value {
    let args = c
        .parameters
        .iter()
        .map(|(n, v)| ms(vec![("N", n.clone().map_or(Value::Nil, Value::Str)), ("V", v.clone())]))
        .collect();
    let m = c.merge;
    let mut props = vec![
        ("Cmd", Value::Str(c.text.clone())),
        ("IsScript", Value::Bool(c.is_script)),
        ("UseLocalScope", c.use_local_scope.map_or(Value::Nil, Value::Bool)),
        ("MergeMyResult", merge_enum(if m.error { 2 } else { 0 })),
        ("MergeToResult", merge_enum(if m.error { 1 } else { 0 })),
        ("MergePreviousResults", merge_enum(0)),
        ("Args", ps_list(args)),
    ];
    if protocol >= ProtocolVersion::V2_2 {
        props.push(("MergeError", merge_enum(if m.error { 1 } else { 0 })));
        props.push(("MergeWarning", merge_enum(if m.warning { 1 } else { 0 })));
        props.push(("MergeVerbose", merge_enum(if m.verbose { 1 } else { 0 })));
        props.push(("MergeDebug", merge_enum(if m.debug { 1 } else { 0 })));
    }
    if protocol >= ProtocolVersion::V2_3 {
        props.push(("MergeInformation", merge_enum(if m.information { 1 } else { 0 })));
    }
    ms(props)
}

/// CREATE_PIPELINE.
pub fn create_pipeline(spec: &PipelineSpec, host: &HostInfo, protocol: ProtocolVersion) -> Result<Value> {
    let first = spec.statements.first().filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::InvalidConfig("a pipeline needs at least one command; add a command or a script".into())
    })?;
    if spec.statements.iter().any(Vec::is_empty) {
        return Err(Error::InvalidConfig("a statement of the pipeline has no command".into()));
    }
    let cmds = |stmt: &[Command]| ps_list(stmt.iter().map(|c| command_value(c, protocol)).collect());
    // Cmds carries the first statement (what older servers read); ExtraCmds lists every
    // statement, the first included, when there is more than one (PROTOCOL.md F.16).
    let extra = if spec.statements.len() > 1 {
        obj(PsObject {
            type_names: type_names(&[PS_OBJECT_LIST, "System.Object"]),
            container: Some(Container::List(spec.statements.iter().map(|s| ms(vec![("Cmds", cmds(s))])).collect())),
            ..PsObject::new()
        })
    } else {
        Value::Nil
    };
    let powershell = ms(vec![
        ("IsNested", Value::Bool(spec.is_nested)),
        ("ExtraCmds", extra),
        ("Cmds", cmds(first)),
        ("History", Value::Nil),
        ("RedirectShellErrorOutputPipe", Value::Bool(false)),
    ]);
    Ok(ms(vec![
        ("NoInput", Value::Bool(!spec.has_input)),
        ("ApartmentState", apartment_state()),
        (
            "RemoteStreamOptions",
            if spec.invocation_info {
                enum_value("System.Management.Automation.RemoteStreamOptions", "AddInvocationInfo", 15)
            } else {
                enum_value("System.Management.Automation.RemoteStreamOptions", "None", 0)
            },
        ),
        ("AddToHistory", Value::Bool(spec.add_to_history)),
        ("HostInfo", host.value()),
        ("PowerShell", powershell),
        ("IsNested", Value::Bool(spec.is_nested)),
    ]))
}

/// RUNSPACEPOOL_HOST_RESPONSE / PIPELINE_HOST_RESPONSE.
pub fn host_response(call: &HostCall, response: &HostResponse) -> Value {
    let method =
        enum_value("System.Management.Automation.Remoting.RemoteHostMethodId", call.method.name(), call.method.id());
    let mut props = vec![("ci", Value::I64(call.ci)), ("mi", method)];
    match response {
        HostResponse::Value(v) => props.push(("mr", v.clone())),
        HostResponse::Error(message) => props.push(("me", error_record_value(message, "RemoteHostExecutionException"))),
        // Secrets are encrypted by the runspace pool before they get here; never send them in
        // clear text.
        HostResponse::SecureString(_) | HostResponse::Credential { .. } => props.push((
            "me",
            error_record_value("The client could not encrypt the answer: no session key.", "NoSessionKey"),
        )),
        HostResponse::NotImplemented => props.push((
            "me",
            error_record_value(
                &format!("The client's host does not implement {}.", call.method.name()),
                "HostMethodNotImplemented",
            ),
        )),
    }
    ms(props)
}

/// A minimal ErrorRecord as PowerShell deserializes it: exception message, error id, category.
fn error_record_value(message: &str, error_id: &str) -> Value {
    let exception = obj(PsObject {
        type_names: type_names(&[
            "System.Management.Automation.RemoteException",
            "System.Management.Automation.RuntimeException",
            "System.SystemException",
            "System.Exception",
            "System.Object",
        ]),
        to_string: Some(message.to_owned()),
        adapted: vec![("Message".into(), Value::Str(message.to_owned()))],
        ..PsObject::new()
    });
    obj(PsObject {
        type_names: type_names(&["System.Management.Automation.ErrorRecord", "System.Object"]),
        to_string: Some(message.to_owned()),
        extended: vec![
            ("Exception".into(), exception),
            ("TargetObject".into(), Value::Nil),
            ("FullyQualifiedErrorId".into(), Value::Str(error_id.to_owned())),
            ("InvocationInfo".into(), Value::Nil),
            ("ErrorCategory_Category".into(), Value::I32(0)),
            ("ErrorCategory_Activity".into(), Value::Str(String::new())),
            ("ErrorCategory_Reason".into(), Value::Str("NotImplementedException".into())),
            ("ErrorCategory_TargetName".into(), Value::Str(String::new())),
            ("ErrorCategory_TargetType".into(), Value::Str(String::new())),
            ("ErrorCategory_Message".into(), Value::Str(message.to_owned())),
            ("SerializeExtendedInfo".into(), Value::Bool(false)),
        ],
        ..PsObject::new()
    })
}

/// A negotiated protocol version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// PowerShell 2.0.
    V2_1,
    /// PowerShell 3.0 and later: disconnect, merge options, 500 KB envelopes.
    V2_2,
    /// PowerShell 5.0 and later: information stream, reset runspace state.
    V2_3,
}

impl ProtocolVersion {
    /// Reads `major.minor`; anything above 2.3 counts as 2.3 (what this client speaks).
    pub fn parse(text: &str) -> Result<Self> {
        let mut it = text.trim().split('.');
        let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        match (major, minor) {
            (2, 0 | 1) => Ok(ProtocolVersion::V2_1),
            (2, 2) => Ok(ProtocolVersion::V2_2),
            (2, _) => Ok(ProtocolVersion::V2_3),
            _ => Err(Error::protocol(format!("the server speaks PSRP protocol {text}, this client speaks 2.x"))),
        }
    }
}

/// The server's SESSION_CAPABILITY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCapability {
    /// `protocolversion` as sent.
    pub protocol_version: String,
    /// `PSVersion` as sent.
    pub ps_version: String,
    /// `SerializationVersion` as sent.
    pub serialization_version: String,
}

fn prop<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.property(name).ok_or_else(|| Error::protocol(format!("message lacks the {name} property")))
}

fn text_prop(v: &Value, name: &str) -> Result<String> {
    match prop(v, name)? {
        Value::Str(s) | Value::Version(s) => Ok(s.clone()),
        other => Err(Error::protocol(format!("{name} is not text: {other:?}"))),
    }
}

fn opt_text(v: &Value, name: &str) -> Option<String> {
    match v.property(name) {
        Some(Value::Str(s) | Value::Version(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.to_string.clone(),
        _ => None,
    }
}

fn int_prop(v: &Value, name: &str) -> Result<i64> {
    prop(v, name)?.as_i64().ok_or_else(|| Error::protocol(format!("{name} is not an integer")))
}

/// Reads SESSION_CAPABILITY.
pub fn parse_session_capability(v: &Value) -> Result<ServerCapability> {
    Ok(ServerCapability {
        protocol_version: text_prop(v, "protocolversion")?,
        ps_version: text_prop(v, "PSVersion")?,
        serialization_version: text_prop(v, "SerializationVersion")?,
    })
}

/// A server ErrorRecord, with the fields a caller acts on (MS-PSRP 2.2.3.15).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRecord {
    /// The exception's message (or the record's ToString).
    pub message: String,
    /// `FullyQualifiedErrorId`.
    pub fully_qualified_error_id: Option<String>,
    /// `ErrorCategory_Category` (0 NotSpecified … 25 SecurityError).
    pub category: i32,
    /// `ErrorCategory_Activity`.
    pub activity: Option<String>,
    /// `ErrorCategory_Reason`.
    pub reason: Option<String>,
    /// `ErrorCategory_TargetName`.
    pub target_name: Option<String>,
    /// `ErrorCategory_TargetType`.
    pub target_type: Option<String>,
    /// `ErrorCategory_Message`, the category line PowerShell shows.
    pub category_message: Option<String>,
    /// `ErrorDetails_Message`.
    pub details_message: Option<String>,
    /// `ErrorDetails_ScriptStackTrace`.
    pub script_stack_trace: Option<String>,
    /// `InvocationInfo_PositionMessage`, where the error happened.
    pub position_message: Option<String>,
    /// The whole record as received.
    pub raw: Value,
}

impl std::fmt::Display for ErrorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.details_message.as_deref().unwrap_or(&self.message))?;
        if let Some(id) = &self.fully_qualified_error_id {
            write!(f, " ({id})")?;
        }
        Ok(())
    }
}

/// Reads an ErrorRecord (ERROR_RECORD data, or `ExceptionAsErrorRecord` of a state message).
pub fn parse_error_record(v: &Value) -> ErrorRecord {
    let exception_message = v.property("Exception").and_then(|e| {
        e.property("Message").and_then(|m| m.as_str().map(str::to_owned)).or_else(|| e.as_object()?.to_string.clone())
    });
    let message = exception_message
        .or_else(|| v.as_object().and_then(|o| o.to_string.clone()))
        .or_else(|| opt_text(v, "ErrorCategory_Message"))
        .unwrap_or_default();
    ErrorRecord {
        message,
        fully_qualified_error_id: opt_text(v, "FullyQualifiedErrorId"),
        category: v.property("ErrorCategory_Category").and_then(Value::as_i64).unwrap_or(0) as i32,
        activity: opt_text(v, "ErrorCategory_Activity"),
        reason: opt_text(v, "ErrorCategory_Reason"),
        target_name: opt_text(v, "ErrorCategory_TargetName"),
        target_type: opt_text(v, "ErrorCategory_TargetType"),
        category_message: opt_text(v, "ErrorCategory_Message"),
        details_message: opt_text(v, "ErrorDetails_Message"),
        script_stack_trace: opt_text(v, "ErrorDetails_ScriptStackTrace"),
        position_message: opt_text(v, "InvocationInfo_PositionMessage"),
        raw: v.clone(),
    }
}

/// Reads RUNSPACEPOOL_STATE or PIPELINE_STATE: the state number and the error, if any.
pub fn parse_state(v: &Value, field: &str) -> Result<(i32, Option<ErrorRecord>)> {
    let state = int_prop(v, field)? as i32;
    let error = v.property("ExceptionAsErrorRecord").filter(|e| !matches!(e, Value::Nil)).map(parse_error_record);
    Ok((state, error))
}

/// A warning, verbose or debug record.
#[derive(Debug, Clone, PartialEq)]
pub struct InformationalRecord {
    /// The message.
    pub message: String,
    /// The whole record as received.
    pub raw: Value,
}

/// Reads DEBUG_RECORD, VERBOSE_RECORD or WARNING_RECORD.
pub fn parse_informational(v: &Value) -> InformationalRecord {
    let message = opt_text(v, "InformationalRecord_Message")
        .or_else(|| opt_text(v, "Message"))
        .or_else(|| v.as_object().and_then(|o| o.to_string.clone()))
        .or_else(|| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    InformationalRecord { message, raw: v.clone() }
}

/// A progress record (MS-PSRP 2.2.3.25).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressRecord {
    /// What is in progress.
    pub activity: String,
    /// Id of this activity.
    pub activity_id: i32,
    /// The current status.
    pub status_description: String,
    /// The current operation, if any.
    pub current_operation: Option<String>,
    /// The parent activity, -1 for none.
    pub parent_activity_id: i32,
    /// Percent done, -1 when unknown.
    pub percent_complete: i32,
    /// Whether the activity completed (record type 1).
    pub completed: bool,
    /// Estimated seconds left, -1 when unknown.
    pub seconds_remaining: i32,
}

/// Reads PROGRESS_RECORD.
pub fn parse_progress(v: &Value) -> ProgressRecord {
    let int = |n: &str, d: i64| v.property(n).and_then(Value::as_i64).unwrap_or(d) as i32;
    ProgressRecord {
        activity: opt_text(v, "Activity").unwrap_or_default(),
        activity_id: int("ActivityId", 0),
        status_description: opt_text(v, "StatusDescription").unwrap_or_default(),
        current_operation: opt_text(v, "CurrentOperation"),
        parent_activity_id: int("ParentActivityId", -1),
        percent_complete: int("PercentComplete", -1),
        completed: int("Type", 0) == 1,
        seconds_remaining: int("SecondsRemaining", -1),
    }
}

/// An information record (MS-PSRP 2.2.3.35).
#[derive(Debug, Clone, PartialEq)]
pub struct InformationRecord {
    /// The message data (often a string, or a HostInformationMessage object).
    pub message_data: Value,
    /// The source, e.g. the command name.
    pub source: Option<String>,
    /// When it was written (xs:dateTime text).
    pub time_generated: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The whole record as received.
    pub raw: Value,
}

impl InformationRecord {
    /// The message as text: a string, or a HostInformationMessage's `Message`.
    pub fn text(&self) -> String {
        match &self.message_data {
            Value::Str(s) => s.clone(),
            v => opt_text(v, "Message").or_else(|| v.as_object()?.to_string.clone()).unwrap_or_default(),
        }
    }
}

/// Reads INFORMATION_RECORD.
pub fn parse_information(v: &Value) -> InformationRecord {
    let tags = match v.property("Tags") {
        Some(Value::Object(o)) => match &o.container {
            Some(Container::List(items)) => items.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    InformationRecord {
        message_data: v.property("MessageData").cloned().unwrap_or(Value::Nil),
        source: opt_text(v, "Source"),
        time_generated: match v.property("TimeGenerated") {
            Some(Value::DateTime(t)) => Some(t.clone()),
            _ => None,
        },
        tags,
        raw: v.clone(),
    }
}

/// Reads RUNSPACEPOOL_HOST_CALL / PIPELINE_HOST_CALL.
pub fn parse_host_call(v: &Value) -> Result<HostCall> {
    let ci = int_prop(v, "ci")?;
    let mi = prop(v, "mi")?.as_i64().ok_or_else(|| Error::protocol("host call method id is not an integer"))?;
    let parameters = match v.property("mp") {
        Some(Value::Object(o)) => match &o.container {
            Some(Container::List(items)) => items.clone(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    Ok(HostCall { ci, method: HostMethod::from_id(mi as i32), parameters })
}

/// Reads RUNSPACE_AVAILABILITY: the call id and the answer (a boolean for set/reset, a count
/// for get).
pub fn parse_availability(v: &Value) -> Result<(i64, Value)> {
    let ci = v
        .property("ci")
        .or_else(|| v.property("CI"))
        .and_then(Value::as_i64)
        .ok_or_else(|| Error::protocol("RUNSPACE_AVAILABILITY without ci"))?;
    Ok((ci, prop(v, "SetMinMaxRunspacesResponse")?.clone()))
}

/// Reads ENCRYPTED_SESSION_KEY into the blob bytes.
pub fn parse_encrypted_session_key(v: &Value) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let text = text_prop(v, "EncryptedSessionKey")?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Error::protocol(format!("invalid base64 in the encrypted session key: {e}")))
}
