//! The PSRP message header (MS-PSRP 2.2.1) and message types (MS-PSRP 2.2.2).
//!
//! Layout, little-endian: Destination u32 | MessageType u32 | RPID 16 | PID 16 | data. GUIDs use
//! .NET `Guid.ToByteArray()` order (first three fields little-endian).

use crate::error::{Error, Result};

/// Length of the message header.
pub const HEADER_LEN: usize = 40;

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Server to client.
    Client,
    /// Client to server.
    Server,
}

impl Destination {
    fn value(self) -> u32 {
        match self {
            Destination::Client => 1,
            Destination::Server => 2,
        }
    }
}

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        /// PSRP message types (MS-PSRP 2.2.1, table in PROTOCOL.md C.3).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MessageType {
            $($(#[$doc])* $name,)*
            /// A type this implementation does not know; logged and skipped.
            Unknown(u32),
        }

        impl MessageType {
            /// The wire value.
            pub fn value(self) -> u32 {
                match self {
                    $(MessageType::$name => $value,)*
                    MessageType::Unknown(v) => v,
                }
            }

            /// The type for a wire value.
            pub fn from_value(v: u32) -> Self {
                match v {
                    $($value => MessageType::$name,)*
                    other => MessageType::Unknown(other),
                }
            }
        }
    };
}

message_types! {
    /// Protocol version negotiation.
    SessionCapability = 0x0001_0002,
    /// Open the runspace pool.
    InitRunspacePool = 0x0001_0004,
    /// The client's RSA public key.
    PublicKey = 0x0001_0005,
    /// The session key encrypted with the client's public key.
    EncryptedSessionKey = 0x0001_0006,
    /// The server asks for the client's public key.
    PublicKeyRequest = 0x0001_0007,
    /// Connect to a disconnected pool.
    ConnectRunspacePool = 0x0001_0008,
    /// Set the pool's maximum runspaces.
    SetMaxRunspaces = 0x0002_1002,
    /// Set the pool's minimum runspaces.
    SetMinRunspaces = 0x0002_1003,
    /// Answer to set/get runspaces and reset.
    RunspaceAvailability = 0x0002_1004,
    /// Pool state change.
    RunspacePoolState = 0x0002_1005,
    /// Start a pipeline.
    CreatePipeline = 0x0002_1006,
    /// Ask how many runspaces are free.
    GetAvailableRunspaces = 0x0002_1007,
    /// A PowerShell event forwarded to the client.
    UserEvent = 0x0002_1008,
    /// Data from the server's session configuration.
    ApplicationPrivateData = 0x0002_1009,
    /// Command discovery.
    GetCommandMetadata = 0x0002_100A,
    /// Pool sizes after connecting.
    RunspacePoolInitData = 0x0002_100B,
    /// Reset the runspace state.
    ResetRunspaceState = 0x0002_100C,
    /// Host call for the pool.
    RunspacePoolHostCall = 0x0002_1100,
    /// Answer to a pool host call.
    RunspacePoolHostResponse = 0x0002_1101,
    /// One input object.
    PipelineInput = 0x0004_1002,
    /// No more input.
    EndOfPipelineInput = 0x0004_1003,
    /// One output object.
    PipelineOutput = 0x0004_1004,
    /// An error record.
    ErrorRecord = 0x0004_1005,
    /// Pipeline state change.
    PipelineState = 0x0004_1006,
    /// A debug record.
    DebugRecord = 0x0004_1007,
    /// A verbose record.
    VerboseRecord = 0x0004_1008,
    /// A warning record.
    WarningRecord = 0x0004_1009,
    /// A progress record.
    ProgressRecord = 0x0004_1010,
    /// An information record.
    InformationRecord = 0x0004_1011,
    /// Host call for a pipeline.
    PipelineHostCall = 0x0004_1100,
    /// Answer to a pipeline host call.
    PipelineHostResponse = 0x0004_1101,
}

/// The header's bytes: destination, message type, RPID, PID (nil for a pool message).
fn header(
    destination: Destination,
    message_type: MessageType,
    rpid: uuid::Uuid,
    pid: Option<uuid::Uuid>,
) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&destination.value().to_le_bytes());
    out[4..8].copy_from_slice(&message_type.value().to_le_bytes());
    out[8..24].copy_from_slice(&rpid.to_bytes_le());
    out[24..40].copy_from_slice(&pid.unwrap_or_default().to_bytes_le());
    out
}

/// One PSRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who it is for.
    pub destination: Destination,
    /// What it is.
    pub message_type: MessageType,
    /// Runspace pool id (all zero in some server messages).
    pub rpid: uuid::Uuid,
    /// Pipeline id; None for pool-level messages (all zero on the wire).
    pub pid: Option<uuid::Uuid>,
    /// CLIXML payload, BOM stripped.
    pub data: Vec<u8>,
}

impl Message {
    /// A message.
    pub fn new(
        destination: Destination,
        message_type: MessageType,
        rpid: uuid::Uuid,
        pid: Option<uuid::Uuid>,
        data: Vec<u8>,
    ) -> Self {
        Self { destination, message_type, rpid, pid, data }
    }

    /// Encodes the header and data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(&header(self.destination, self.message_type, self.rpid, self.pid));
        out.extend_from_slice(&self.data);
        out
    }

    /// Encodes a message whose data is `value` as CLIXML, the CLIXML written straight after the
    /// header: the same bytes as `Message::new(.., clixml::to_string(value).into_bytes()).encode()`
    /// without a second copy of the data (pipeline input carries whole file chunks).
    pub fn encode_value(
        destination: Destination,
        message_type: MessageType,
        rpid: uuid::Uuid,
        pid: Option<uuid::Uuid>,
        value: &crate::clixml::Value,
    ) -> Vec<u8> {
        // The header's place is held by NULs (valid UTF-8) and filled in once the text is done.
        let mut text = "\0".repeat(HEADER_LEN);
        crate::clixml::write_to(value, &mut text);
        let mut out = text.into_bytes();
        out[..HEADER_LEN].copy_from_slice(&header(destination, message_type, rpid, pid));
        out
    }

    /// Decodes a reassembled message; strips a UTF-8 BOM from the data.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::protocol(format!("PSRP message of {} bytes is shorter than its header", bytes.len())));
        }
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let destination = match word(0) {
            1 => Destination::Client,
            2 => Destination::Server,
            other => return Err(Error::protocol(format!("PSRP message with destination {other}"))),
        };
        let guid = |i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes[i..i + 16]);
            uuid::Uuid::from_bytes_le(b)
        };
        let pid = guid(24);
        let data = &bytes[HEADER_LEN..];
        let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        Ok(Self {
            destination,
            message_type: MessageType::from_value(word(4)),
            rpid: guid(8),
            pid: (!pid.is_nil()).then_some(pid),
            data: data.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn public_key_request_bytes() {
        // Vector psrp-message-public-key-request.
        let m = Message::new(
            Destination::Server,
            MessageType::PublicKeyRequest,
            uuid::Uuid::nil(),
            None,
            b"<S />".to_vec(),
        );
        assert_eq!(
            m.encode(),
            unhex("020000000700010000000000000000000000000000000000000000000000000000000000000000003c53202f3e")
        );
    }

    #[test]
    fn encode_value_is_encode_of_the_clixml() {
        use crate::clixml::{self, Value};
        let value = Value::Str("a <b> & \u{1F600} _x0000_".into());
        let (rpid, pid) = (uuid::Uuid::from_u128(0x1234), Some(uuid::Uuid::from_u128(0xABCD)));
        let expected = Message::new(
            Destination::Server,
            MessageType::PipelineInput,
            rpid,
            pid,
            clixml::to_string(&value).into_bytes(),
        )
        .encode();
        let got = Message::encode_value(Destination::Server, MessageType::PipelineInput, rpid, pid, &value);
        assert_eq!(got, expected);
        assert_eq!(Message::decode(&got).unwrap().pid, pid);
    }

    #[test]
    fn strips_the_bom_and_reports_a_null_pid_as_none() {
        // Vector psrp-message-unpack-strip-bom.
        let m = Message::decode(&unhex(
            "01000000020001000000000000000000000000000000000000000000000000000000000000000000efbbbf616263",
        ))
        .unwrap();
        assert_eq!(m.destination, Destination::Client);
        assert_eq!(m.message_type, MessageType::SessionCapability);
        assert_eq!(m.pid, None);
        assert_eq!(m.data, b"abc");
    }

    #[test]
    fn guids_use_dotnet_byte_order() {
        let rpid = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let m = Message::new(Destination::Server, MessageType::CreatePipeline, rpid, Some(rpid), Vec::new());
        let b = m.encode();
        assert_eq!(&b[8..24], &unhex("33221100554477668899aabbccddeeff")[..]);
        assert_eq!(Message::decode(&b).unwrap(), m);
    }

    #[test]
    fn unknown_types_survive_and_short_input_fails() {
        assert_eq!(MessageType::from_value(0x1234), MessageType::Unknown(0x1234));
        assert_eq!(MessageType::from_value(0x0004_1010), MessageType::ProgressRecord);
        assert!(Message::decode(&[0u8; 39]).is_err());
        let mut bad = vec![0u8; 40];
        bad[0] = 9;
        assert!(Message::decode(&bad).is_err());
    }
}
