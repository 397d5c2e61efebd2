//! Sessions that outlive the client (MS-PSRP 3.1.4.9 disconnect, 3.1.4.10 reconnect, 3.1.4.11
//! connect): the state changes a disconnect and a reconnect make, and the connect handshake of
//! a new client attaching to a disconnected pool. Sans-IO like the rest of the pool.

use crate::clixml::Value;
use crate::error::{Error, Result};

use super::super::message::MessageType;
use super::super::messages;
use super::{PipelineState, PoolState, RunspacePool};

impl RunspacePool {
    /// Starts connecting to a disconnected pool another client opened: returns the bytes for
    /// `connectXml` (SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL, whole fragments). The
    /// server's answer (`connectResponseXml`: its SESSION_CAPABILITY and
    /// RUNSPACEPOOL_INIT_DATA) goes to [`RunspacePool::receive`] like any pool data; the
    /// pool is Opened once the init data arrived.
    pub fn connect(&mut self) -> Result<Vec<u8>> {
        self.expect_state("connect", &[PoolState::BeforeOpen])?;
        let cap = self.message(MessageType::SessionCapability, None, &messages::session_capability());
        // An empty string keeps the server's runspace limits (what pypsrp sends); the server
        // reports them in RUNSPACEPOOL_INIT_DATA.
        let connect = self.message(MessageType::ConnectRunspacePool, None, &Value::Str(String::new()));
        let data: Vec<u8> = self.fragmenter.fragment([cap.as_slice(), connect.as_slice()]).concat();
        self.state = PoolState::Connecting;
        Ok(data)
    }

    /// Records the server's RUNSPACEPOOL_INIT_DATA (the pool's runspace limits); a pool that
    /// was connecting is now open.
    pub(super) fn init_data(&mut self, value: &Value) -> Result<Option<PoolState>> {
        let limit = |name: &str| {
            value
                .property(name)
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| Error::protocol(format!("RUNSPACEPOOL_INIT_DATA without {name}")))
        };
        self.options.min_runspaces = limit("MinRunspaces")?;
        self.options.max_runspaces = limit("MaxRunspaces")?;
        if self.state == PoolState::Connecting {
            self.state = PoolState::Opened;
            return Ok(Some(PoolState::Opened));
        }
        Ok(None)
    }

    /// The pool's runspace limits (min, max), as set or as the server reported on connect.
    pub fn runspaces(&self) -> (i32, i32) {
        (self.options.min_runspaces, self.options.max_runspaces)
    }

    /// Marks the pool disconnected (after the server acknowledged Disconnect). Pool calls and
    /// new pipelines are refused with [`Error::Disconnected`] until
    /// [`RunspacePool::set_reconnected`]; chunks not sent yet stay queued.
    pub fn set_disconnected(&mut self) -> Result<()> {
        self.expect_state("disconnect", &[PoolState::Opened])?;
        self.state = PoolState::Disconnected;
        Ok(())
    }

    /// Marks a disconnected pool open again (after the server acknowledged Reconnect).
    pub fn set_reconnected(&mut self) -> Result<()> {
        if self.state != PoolState::Disconnected {
            return Err(Error::protocol(format!(
                "cannot reconnect while the runspace pool is {:?} (it must be Disconnected)",
                self.state
            )));
        }
        self.state = PoolState::Opened;
        Ok(())
    }

    /// Adopts a pipeline that runs on the server but was not started by this state machine
    /// (one started before a disconnect, by this or another client): its messages are
    /// decoded like those of a pipeline started here.
    pub fn attach_pipeline(&mut self, pid: uuid::Uuid) -> Result<()> {
        self.expect_state("attach to a pipeline", &[PoolState::Opened])?;
        if self.pipelines.get(&pid).is_some_and(|s| !s.is_finished()) {
            return Err(Error::protocol(format!("pipeline {pid} is already attached")));
        }
        self.pipelines.insert(pid, PipelineState::Running);
        Ok(())
    }

    /// Whether chunks are waiting to be sent (a disconnect waits for none).
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::super::{Event, PoolOptions, PoolState, RunspacePool};
    use crate::psrp::fragment::parse_fragments;
    use crate::psrp::message::{Message, MessageType};

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    // The Connect of test_psrp_disconnect_runspaces.yml: the client's connectXml and Windows'
    // connectResponseXml for pool B6631D8E-65A0-49F2-9053-A1B156C95777.
    const CONNECT_RESPONSE: &str = "AAAAAAAAAAQAAAAAAAAAAAMAAADKAQAAAAIAAQC2Yx2OZaBJ8pBTobFWyVd3AAAAAAAAAAAAAAAAAAAAAO+7vzxPYmogUmVmSWQ9IjAiPjxNUz48VmVyc2lvbiBOPSJwcm90b2NvbHZlcnNpb24iPjIuMzwvVmVyc2lvbj48VmVyc2lvbiBOPSJQU1ZlcnNpb24iPjIuMDwvVmVyc2lvbj48VmVyc2lvbiBOPSJTZXJpYWxpemF0aW9uVmVyc2lvbiI+MS4xLjAuMTwvVmVyc2lvbj48L01TPjwvT2JqPgAAAAAAAAAFAAAAAAAAAAADAAAAgwEAAAALEAIAtmMdjmWgSfKQU6GxVslXdwAAAAAAAAAAAAAAAAAAAADvu788T2JqIFJlZklkPSIwIj48TVM+PEkzMiBOPSJNaW5SdW5zcGFjZXMiPjE8L0kzMj48STMyIE49Ik1heFJ1bnNwYWNlcyI+MTwvSTMyPjwvTVM+PC9PYmo+";

    #[test]
    fn connects_on_the_recorded_windows_handshake() {
        let id = uuid::Uuid::parse_str("B6631D8E-65A0-49F2-9053-A1B156C95777").unwrap();
        let mut pool = RunspacePool::new(id, PoolOptions { max_runspaces: 5, ..PoolOptions::default() });
        let data = pool.connect().unwrap();
        let frags = parse_fragments(&data).unwrap();
        assert_eq!(frags.len(), 2);
        assert!(frags.iter().all(|f| f.start && f.end), "whole fragments only");
        let connect = Message::decode(frags[1].blob).unwrap();
        assert_eq!(connect.message_type, MessageType::ConnectRunspacePool);
        assert_eq!(pool.state(), PoolState::Connecting);
        assert!(pool.connect().is_err(), "one handshake");
        let events = pool.receive(None, &b64(CONNECT_RESPONSE)).unwrap();
        assert!(matches!(events[0], Event::SessionCapability(_)), "{events:?}");
        assert!(matches!(events[1], Event::PoolState { state: PoolState::Opened, .. }), "{events:?}");
        assert_eq!(pool.state(), PoolState::Opened);
        assert_eq!(pool.runspaces(), (1, 1), "the server's limits replace the configured ones");
    }

    #[test]
    fn a_disconnected_pool_refuses_work_until_reconnected() {
        let id = uuid::Uuid::new_v4();
        let mut pool = RunspacePool::new(id, PoolOptions::default());
        pool.state = PoolState::Opened;
        pool.set_disconnected().unwrap();
        let err = pool.create_pipeline(uuid::Uuid::new_v4(), &Default::default()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Disconnected, "{err}");
        assert_eq!(pool.get_available_runspaces().unwrap_err().kind(), crate::ErrorKind::Disconnected);
        assert!(pool.set_disconnected().is_err());
        pool.set_reconnected().unwrap();
        pool.get_available_runspaces().unwrap();
        assert!(pool.set_reconnected().is_err());
        let pid = uuid::Uuid::new_v4();
        pool.attach_pipeline(pid).unwrap();
        assert_eq!(pool.pipeline_state(pid), Some(super::PipelineState::Running));
        assert!(pool.attach_pipeline(pid).is_err());
        assert!(pool.has_outgoing(), "the availability request stays queued");
    }
}
