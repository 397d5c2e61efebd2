//! The PowerShell Remoting Protocol (MS-PSRP), sans-IO.
//!
//! Reference: [MS-PSRP](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-psrp/).

pub mod fragment;
pub mod host;
pub mod message;
pub mod messages;
pub mod outofproc;
pub mod pool;
pub mod session_key;

pub use host::{HostCall, HostDefaults, HostMethod, HostResponse};
pub use messages::{Command, CommandMetadataQuery, ErrorRecord, HostInfo, Merge, PipelineSpec, ProtocolVersion};
pub use pool::{Event, InputChunks, InputStream, Outgoing, PipelineState, PoolOptions, PoolState, RunspacePool};
