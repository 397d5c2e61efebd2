//! Host calls (MS-PSRP 2.2.2.27, 2.2.3.17; PROTOCOL.md C.7): the server asks the client's host
//! to read a line, prompt, write, show progress or query the raw UI.

use crate::clixml::{PsObject, Value};

macro_rules! host_methods {
    ($($name:ident = $id:expr, $void:expr;)*) => {
        /// Host method identifiers (`RemoteHostMethodId`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HostMethod {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                $name,
            )*
            /// An id this implementation does not know.
            Unknown(i32),
        }

        impl HostMethod {
            /// The wire id.
            pub fn id(self) -> i32 {
                match self {
                    $(HostMethod::$name => $id,)*
                    HostMethod::Unknown(v) => v,
                }
            }

            /// The method for a wire id.
            pub fn from_id(id: i32) -> Self {
                match id {
                    $($id => HostMethod::$name,)*
                    other => HostMethod::Unknown(other),
                }
            }

            /// The method's name as PowerShell spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $(HostMethod::$name => stringify!($name),)*
                    HostMethod::Unknown(_) => "Unknown",
                }
            }

            /// Whether the method returns nothing, so no response is sent.
            pub fn is_void(self) -> bool {
                match self {
                    $(HostMethod::$name => $void,)*
                    HostMethod::Unknown(_) => false,
                }
            }
        }
    };
}

host_methods! {
    GetName = 1, false;
    GetVersion = 2, false;
    GetInstanceId = 3, false;
    GetCurrentCulture = 4, false;
    GetCurrentUICulture = 5, false;
    SetShouldExit = 6, true;
    EnterNestedPrompt = 7, true;
    ExitNestedPrompt = 8, true;
    NotifyBeginApplication = 9, true;
    NotifyEndApplication = 10, true;
    ReadLine = 11, false;
    ReadLineAsSecureString = 12, false;
    Write1 = 13, true;
    Write2 = 14, true;
    WriteLine1 = 15, true;
    WriteLine2 = 16, true;
    WriteLine3 = 17, true;
    WriteErrorLine = 18, true;
    WriteDebugLine = 19, true;
    WriteProgress = 20, true;
    WriteVerboseLine = 21, true;
    WriteWarningLine = 22, true;
    Prompt = 23, false;
    PromptForCredential1 = 24, false;
    PromptForCredential2 = 25, false;
    PromptForChoice = 26, false;
    GetForegroundColor = 27, false;
    SetForegroundColor = 28, true;
    GetBackgroundColor = 29, false;
    SetBackgroundColor = 30, true;
    GetCursorPosition = 31, false;
    SetCursorPosition = 32, true;
    GetWindowPosition = 33, false;
    SetWindowPosition = 34, true;
    GetCursorSize = 35, false;
    SetCursorSize = 36, true;
    GetBufferSize = 37, false;
    SetBufferSize = 38, true;
    GetWindowSize = 39, false;
    SetWindowSize = 40, true;
    GetWindowTitle = 41, false;
    SetWindowTitle = 42, true;
    GetMaxWindowSize = 43, false;
    GetMaxPhysicalWindowSize = 44, false;
    GetKeyAvailable = 45, false;
    ReadKey = 46, false;
    FlushInputBuffer = 47, true;
    SetBufferContents1 = 48, true;
    SetBufferContents2 = 49, true;
    GetBufferContents = 50, false;
    ScrollBufferContents = 51, true;
    PushRunspace = 52, true;
    PopRunspace = 53, true;
    GetIsRunspacePushed = 54, false;
    GetRunspace = 55, false;
    PromptForChoiceMultipleSelection = 56, false;
}

/// One host call from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCall {
    /// Call id, echoed in the response.
    pub ci: i64,
    /// The method.
    pub method: HostMethod,
    /// The parameters, in order.
    pub parameters: Vec<Value>,
}

/// What the client's host answers.
#[derive(Clone, PartialEq)]
pub enum HostResponse {
    /// The method's return value.
    Value(Value),
    /// A secret typed by the user (ReadLineAsSecureString): sent as a SecureString encrypted with
    /// the session key.
    SecureString(zeroize::Zeroizing<String>),
    /// A credential (PromptForCredential): sent as a PSCredential whose password is a SecureString.
    Credential {
        /// The user name, e.g. `DOMAIN\user`.
        username: String,
        /// The password.
        password: zeroize::Zeroizing<String>,
    },
    /// The call failed; the message becomes the ErrorRecord's exception message.
    Error(String),
    /// The host does not implement the method.
    NotImplemented,
}

impl std::fmt::Debug for HostResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostResponse::Value(v) => f.debug_tuple("Value").field(v).finish(),
            HostResponse::SecureString(_) => f.write_str("SecureString(<redacted>)"),
            HostResponse::Credential { username, .. } => {
                f.debug_struct("Credential").field("username", username).field("password", &"<redacted>").finish()
            }
            HostResponse::Error(m) => f.debug_tuple("Error").field(m).finish(),
            HostResponse::NotImplemented => f.write_str("NotImplemented"),
        }
    }
}

impl HostResponse {
    /// Whether answering needs the session key (it carries a secret).
    pub fn needs_session_key(&self) -> bool {
        matches!(self, HostResponse::SecureString(_) | HostResponse::Credential { .. })
    }
}

/// A PSCredential value (MS-PSRP 2.2.3.25) with an already encrypted password.
pub fn credential_value(username: &str, encrypted_password: Vec<u8>) -> Value {
    Value::Object(std::sync::Arc::new(PsObject {
        type_names: Some(
            vec!["System.Management.Automation.PSCredential".to_owned(), "System.Object".to_owned()].into(),
        ),
        adapted: vec![
            ("UserName".into(), Value::Str(username.to_owned())),
            ("Password".into(), Value::SecureString(encrypted_password)),
        ],
        ..PsObject::new()
    }))
}

/// The `{T: typename, V: value}` wrapper PowerShell uses for some host-data values.
pub fn typed_value(type_name: &str, value: Value) -> Value {
    Value::Object(std::sync::Arc::new(PsObject {
        extended: vec![("T".into(), Value::Str(type_name.into())), ("V".into(), value)],
        ..PsObject::new()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_void_methods_are_known() {
        for id in 1..=56 {
            assert_eq!(HostMethod::from_id(id).id(), id);
        }
        assert!(HostMethod::WriteLine2.is_void());
        assert!(!HostMethod::ReadLine.is_void());
        assert_eq!(HostMethod::from_id(99), HostMethod::Unknown(99));
        assert_eq!(HostMethod::PromptForCredential1.name(), "PromptForCredential1");
    }
}
