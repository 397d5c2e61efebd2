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

/// What a host with a raw UI reports about its console when the pool or pipeline is created
/// (`_hostDefaultData`, MS-PSRP 2.2.3.13). The server answers `$host.UI.RawUI` reads from it
/// without a round trip. Sizes are `(width, height)`, positions `(x, y)`, colours
/// `System.ConsoleColor` values (0 Black ... 7 Gray ... 15 White).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// Text colour.
    pub foreground_color: i32,
    /// Background colour.
    pub background_color: i32,
    /// Cursor position in the buffer.
    pub cursor_position: (i32, i32),
    /// Position of the window in the buffer.
    pub window_position: (i32, i32),
    /// Cursor size, as a percentage of a cell.
    pub cursor_size: i32,
    /// Screen buffer size.
    pub buffer_size: (i32, i32),
    /// Window size.
    pub window_size: (i32, i32),
    /// Largest window the buffer allows.
    pub max_window_size: (i32, i32),
    /// Largest window the screen allows.
    pub max_physical_window_size: (i32, i32),
    /// Window title.
    pub window_title: String,
}

impl Default for HostDefaults {
    /// A 120-column console, grey on black, as a terminal without more knowledge would report.
    fn default() -> Self {
        Self {
            foreground_color: 7,
            background_color: 0,
            cursor_position: (0, 0),
            window_position: (0, 0),
            cursor_size: 25,
            buffer_size: (120, 3000),
            window_size: (120, 50),
            max_window_size: (120, 50),
            max_physical_window_size: (120, 50),
            window_title: "psremote".into(),
        }
    }
}

impl HostDefaults {
    /// The `_hostDefaultData` value: an object whose `data` is a Hashtable keyed 0-9.
    pub fn value(&self) -> Value {
        let pair = |a: &str, b: &str, (x, y): (i32, i32)| {
            Value::Object(std::sync::Arc::new(PsObject {
                extended: vec![(a.into(), Value::I32(x)), (b.into(), Value::I32(y))],
                ..PsObject::new()
            }))
        };
        const COORDINATES: &str = "System.Management.Automation.Host.Coordinates";
        const SIZE: &str = "System.Management.Automation.Host.Size";
        let entries = vec![
            typed_value("System.ConsoleColor", Value::I32(self.foreground_color)),
            typed_value("System.ConsoleColor", Value::I32(self.background_color)),
            typed_value(COORDINATES, pair("x", "y", self.cursor_position)),
            typed_value(COORDINATES, pair("x", "y", self.window_position)),
            typed_value("System.Int32", Value::I32(self.cursor_size)),
            typed_value(SIZE, pair("width", "height", self.buffer_size)),
            typed_value(SIZE, pair("width", "height", self.window_size)),
            typed_value(SIZE, pair("width", "height", self.max_window_size)),
            typed_value(SIZE, pair("width", "height", self.max_physical_window_size)),
            typed_value("System.String", Value::Str(self.window_title.clone())),
        ];
        let data = PsObject {
            type_names: Some(vec!["System.Collections.Hashtable".to_owned(), "System.Object".to_owned()].into()),
            container: Some(crate::clixml::Container::Dictionary(
                entries.into_iter().enumerate().map(|(k, v)| (Value::I32(k as i32), v)).collect(),
            )),
            ..PsObject::new()
        };
        Value::Object(std::sync::Arc::new(PsObject {
            extended: vec![("data".into(), Value::Object(std::sync::Arc::new(data)))],
            ..PsObject::new()
        }))
    }
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

    #[test]
    fn default_data_is_a_hashtable_of_typed_values_keyed_0_to_9() {
        let v = HostDefaults { window_title: "t".into(), buffer_size: (80, 9000), ..HostDefaults::default() }.value();
        let data = v.as_object().unwrap().property("data").unwrap().as_object().unwrap();
        let Some(crate::clixml::Container::Dictionary(d)) = &data.container else { panic!("{data:?}") };
        assert_eq!(d.len(), 10);
        let typed = |i: usize| {
            let o = d[i].1.as_object().unwrap();
            (o.property("T").unwrap().as_str().unwrap().to_owned(), o.property("V").unwrap().clone())
        };
        assert_eq!(d[5].0, Value::I32(5));
        assert_eq!(typed(0), ("System.ConsoleColor".to_owned(), Value::I32(7)));
        let (t, size) = typed(5);
        assert_eq!(t, "System.Management.Automation.Host.Size");
        assert_eq!(size.as_object().unwrap().property("height"), Some(&Value::I32(9000)));
        assert_eq!(typed(9), ("System.String".to_owned(), Value::Str("t".into())));
    }
}
