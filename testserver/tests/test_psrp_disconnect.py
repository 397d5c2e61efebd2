"""Sessions that outlive the client, and the server-configuration reads, with pypsrp 0.9.1 as the peer.

Disconnect / Reconnect / Connect of a PSRP shell, Enumerate of shells and commands, transfer Get of a
shell and of winrm/config, and the refusal of an oversized request. The reply shapes follow
core/tests/data/windows-transcripts/test_psrp_disconnect_runspaces.yml, test_psrp_is_alive_*.yml and
test_wsman_update_envelope_size_*.yml.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import NAMESPACES, SelectorSet
from test_psrp_pypsrp import wsman

from psremote_testserver.testing import wait_for

PS_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
RSP = NAMESPACES["rsp"]
WSEN = NAMESPACES["wsen"]
WSMN = NAMESPACES["wsman"]
# The rsp:Shell children Windows lists for a PSRP shell in Get and Enumerate, in its order.
SHELL_FIELDS = [
    "ShellId", "ResourceUri", "Owner", "ClientIP", "ProcessId", "IdleTimeOut", "InputStreams", "OutputStreams",
    "MaxIdleTimeOut", "Locale", "DataLocale", "CompressionMode", "ProfileLoaded", "Encoding", "BufferMode", "State",
    "ShellRunTime", "ShellInactivity", "MemoryUsed", "ChildProcesses",
]  # fmt: skip
SLOW_SCRIPT = "Write-Output before; Start-Sleep -Milliseconds 300; Write-Output after"


def selectors(shell_id: str) -> SelectorSet:
    selector_set = SelectorSet()
    selector_set.add_option("ShellId", shell_id)
    return selector_set


def fields(shell: ET.Element) -> dict:
    return {child.tag.split("}")[1]: child.text for child in shell}


def enumerate_shells(connection, optimize: bool = True) -> list:
    message = ET.Element("{%s}Enumerate" % WSEN)
    if optimize:
        ET.SubElement(message, "{%s}OptimizeEnumeration" % WSMN)
        ET.SubElement(message, "{%s}MaxElements" % WSMN).text = "32000"
    body = connection.enumerate(SHELL_URI, message)
    return body.findall("wsen:EnumerateResponse/wsman:Items/rsp:Shell", NAMESPACES)


def enumerate_commands(connection, shell_id: str) -> list:
    message = ET.Element("{%s}Enumerate" % WSEN)
    ET.SubElement(message, "{%s}OptimizeEnumeration" % WSMN)
    ET.SubElement(message, "{%s}MaxElements" % WSMN).text = "32000"
    selector_filter = ET.SubElement(message, "{%s}Filter" % WSMN, Dialect="http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter")
    selector_filter.append(selectors(shell_id).pack())
    body = connection.enumerate(SHELL_URI + "/Command", message)
    return [c.find("rsp:CommandId", NAMESPACES).text for c in body.findall("wsen:EnumerateResponse/wsman:Items/rsp:Command", NAMESPACES)]


def disconnect(connection, shell_id: str, idle: str = "", buffer_mode: str = "") -> None:
    """Disconnect with the optional body elements pypsrp does not send (MS-WSMV 2.2.4.15)."""
    element = ET.Element("{%s}Disconnect" % RSP)
    if idle:
        ET.SubElement(element, "{%s}IdleTimeOut" % RSP).text = idle
    if buffer_mode:
        ET.SubElement(element, "{%s}BufferMode" % RSP).text = buffer_mode
    connection.disconnect(PS_URI, element, selector_set=selectors(shell_id))


def start(pool, script: str) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_script(script)
    ps.begin_invoke()
    return ps


# -- Disconnect and Reconnect by the same client ----------------------------------------------------------
def test_disconnect_then_reconnect_by_the_same_client(endpoint):
    with wsman(endpoint) as connection:
        pool = RunspacePool(connection)
        pool.open()
        try:
            ps = start(pool, SLOW_SCRIPT)
            pool.disconnect()
            assert pool.state == RunspacePoolState.DISCONNECTED
            assert endpoint.state()["disconnected"] == 1
            assert pool.shell._get_shell()["State"] == "Disconnected"

            pool.connect()  # the same client (wsmv:SessionId): rsp:Reconnect
            assert pool.state == RunspacePoolState.OPENED
            assert endpoint.state()["disconnected"] == 0
            assert ps.connect() == ["before", "after"]  # rsp:Connect CommandId, then Receive
            assert ps.state == PSInvocationState.COMPLETED
            ps.close()
            later = PowerShell(pool)
            later.add_script("Write-Output again")
            assert later.invoke() == ["again"]
        finally:
            pool.close()
    assert endpoint.wait_state("shells", 0)["disconnected"] == 0


# -- a new client lists the pool, connects and receives a pipeline started before -------------------------
def test_new_client_lists_connects_and_receives_earlier_pipeline(endpoint):
    with wsman(endpoint) as first:
        pool = RunspacePool(first)
        pool.open()
        ps = start(pool, SLOW_SCRIPT)
        pool.disconnect()
    pool_id, command_id = pool.id, ps.id

    with wsman(endpoint) as second:
        found = [p for p in RunspacePool.get_runspace_pools(second) if p.id == pool_id]
        assert len(found) == 1
        other = found[0]
        assert other.state == RunspacePoolState.DISCONNECTED
        assert [p.upper() for p in other.pipelines] == [command_id.upper()]
        try:
            other.connect()  # rsp:Connect with connectXml, then one pool Receive
            # ConnectResponse carried SESSION_CAPABILITY + RUNSPACEPOOL_INIT_DATA, the Receive the
            # APPLICATION_PRIVATE_DATA (PowerShell's server sends no RUNSPACEPOOL_STATE on connect).
            assert (other.min_runspaces, other.max_runspaces) == (1, 1)
            assert other.application_private_data is not None
            assert endpoint.state()["disconnected"] == 0
            [pipeline] = other.create_disconnected_power_shells()
            assert pipeline.connect() == ["before", "after"]
            assert pipeline.state == PSInvocationState.COMPLETED
            pipeline.close()
        finally:
            other.close()
    assert endpoint.wait_state("shells", 0)["pipelines"] == 0


# -- Enumerate ----------------------------------------------------------------------------------------------
def test_enumerate_lists_the_users_shells_as_windows_does(endpoint):
    with wsman(endpoint) as connection, RunspacePool(connection) as pool:
        ps = start(pool, "Start-Sleep -Seconds 30")
        [shell] = [s for s in enumerate_shells(connection) if s.find("rsp:ShellId", NAMESPACES).text == pool.id]
        listed = fields(shell)
        assert list(listed) == SHELL_FIELDS
        assert listed["ResourceUri"] == PS_URI
        assert listed["State"] == "Connected"
        assert listed["BufferMode"] == "Block"
        assert listed["IdleTimeOut"] == "PT7200.000S"
        assert enumerate_commands(connection, pool.id) == [ps.id.upper()]

        disconnect(connection, pool.id, idle="PT600S")
        pool.state = RunspacePoolState.DISCONNECTED
        listed = fields([s for s in enumerate_shells(connection) if s.find("rsp:ShellId", NAMESPACES).text == pool.id][0])
        assert (listed["State"], listed["IdleTimeOut"]) == ("Disconnected", "PT600.000S")
        pool.connect()
        ps.stop()


def test_enumerate_without_optimization_then_pull(endpoint):
    with wsman(endpoint) as connection, RunspacePool(connection) as one, RunspacePool(connection) as two:
        message = ET.Element("{%s}Enumerate" % WSEN)
        body = connection.enumerate(SHELL_URI, message)
        context = body.find("wsen:EnumerateResponse/wsen:EnumerationContext", NAMESPACES).text
        assert context and body.find("wsen:EnumerateResponse/wsman:Items", NAMESPACES) is None
        ids = []
        while True:
            pull = ET.Element("{%s}Pull" % WSEN)
            ET.SubElement(pull, "{%s}EnumerationContext" % WSEN).text = context
            ET.SubElement(pull, "{%s}MaxElements" % WSEN).text = "1"
            reply = connection.pull(SHELL_URI, pull).find("wsen:PullResponse", NAMESPACES)
            ids += [s.find("rsp:ShellId", NAMESPACES).text for s in reply.findall("wsen:Items/rsp:Shell", NAMESPACES)]
            if reply.find("wsen:EndOfSequence", NAMESPACES) is not None:
                break
            context = reply.find("wsen:EnumerationContext", NAMESPACES).text
        assert ids == [one.id, two.id]
        with pytest.raises(WSManFaultError):
            connection.pull(SHELL_URI, pull)  # that context is used up


# -- transfer Get of a shell ------------------------------------------------------------------------------------
def test_get_of_a_live_and_of_a_deleted_shell(endpoint):
    with wsman(endpoint) as connection:
        pool = RunspacePool(connection, idle_timeout=60)
        pool.open()
        state = pool.shell._get_shell()
        assert state["State"] == "Connected" and state["IdleTimeOut"] == "PT60.000S"
        assert pool.is_alive()
        pool.close()
        with pytest.raises(WSManFaultError) as fault:
            pool.shell._get_shell()
        # test_psrp_is_alive_invalid_selectors.yml
        assert fault.value.code == 2150858843
        assert "invalid selectors" in fault.value.reason
        assert not pool.is_alive()


# -- winrm/config and the envelope limit ------------------------------------------------------------------------
def test_config_reports_the_configured_limits(start_endpoint):
    endpoint = start_endpoint("--max-envelope-kb", "150", "--max-timeout-ms", "30000")
    with wsman(endpoint) as connection:
        config = connection.get_server_config().find("cfg:Config", NAMESPACES)
        assert config.find("cfg:MaxEnvelopeSizekb", NAMESPACES).text == "150"
        assert config.find("cfg:MaxTimeoutms", NAMESPACES).text == "30000"
        # test_wsman_update_envelope_size_150.yml's layout
        assert [c.tag.split("}")[1] for c in config] == ["MaxEnvelopeSizekb", "MaxTimeoutms", "MaxBatchItems", "MaxProviderRequests", "Client", "Service", "Winrs"]
        assert config.find("cfg:Service/cfg:AllowUnencrypted", NAMESPACES).text == "false"
        connection.update_max_payload_size()
        assert connection.max_envelope_size == 150 * 1024


def test_oversized_request_is_refused_then_the_config_read_fixes_it(start_endpoint):
    """Windows answers a request above MaxEnvelopeSizekb with HTTP 413 (pypsrp's "Bad HTTP response
    returned from the server. Code: 413", ansible/ansible#78263), not with a SOAP fault."""
    endpoint = start_endpoint("--max-envelope-kb", "150")
    big = "x" * 300_000
    with wsman(endpoint) as connection:
        connection.update_max_payload_size(512000)  # what pypsrp assumes of a 2.2+ server
        with RunspacePool(connection) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Write-Output").add_parameter("InputObject", big)
            with pytest.raises(WinRMTransportError) as refused:
                ps.invoke()
            assert refused.value.code == 413
            connection.update_max_payload_size()  # winrm/config: 150 KB
            pool._fragmenter.max_size = connection.max_payload_size
            again = PowerShell(pool)
            again.add_cmdlet("Write-Output").add_parameter("InputObject", big)
            assert again.invoke() == [big]


# -- refusals -----------------------------------------------------------------------------------------------
def test_a_disconnected_shell_refuses_other_requests_and_other_clients(endpoint):
    with wsman(endpoint) as owner, wsman(endpoint) as stranger:
        pool = RunspacePool(owner)
        pool.open()
        try:
            with pytest.raises(WSManFaultError) as fault:  # Connect needs a disconnected shell
                stranger.connect(PS_URI, ET.Element("{%s}Connect" % RSP), selector_set=selectors(pool.id))
            assert fault.value.code == 2150859213  # ERROR_WINRS_SHELL_CONNECTED_TO_DIFFERENT_CLIENT
            pool.disconnect()
            with pytest.raises(WSManFaultError) as fault:
                PowerShell(pool).add_script("1").runspace_pool.shell.receive("stdout")
            assert fault.value.code == 2150859204  # ERROR_WINRS_SHELL_DISCONNECTED
            with pytest.raises(WSManFaultError) as fault:  # another client session must Connect, not Reconnect
                stranger.reconnect(PS_URI, selector_set=selectors(pool.id))
            assert fault.value.code == 2150859206  # ERROR_WINRS_SHELL_CLIENTSESSIONID_MISMATCH
            pool.connect()
            assert pool.get_available_runspaces() == 1
        finally:
            pool.close()


def test_a_disconnected_shell_closes_after_its_idle_timeout(endpoint):
    with wsman(endpoint) as connection:
        pool = RunspacePool(connection)
        pool.open()
        disconnect(connection, pool.id, idle="PT1S")
        assert wait_for(lambda: endpoint.state()["shells"] == 0, timeout=15)
        assert endpoint.state()["disconnected"] == 0


# -- output while disconnected: BufferMode Block and Drop ------------------------------------------------------
@pytest.mark.parametrize("mode", ["Block", "Drop"])
def test_output_buffered_while_disconnected(start_endpoint, mode):
    endpoint = start_endpoint("--psrp-buffer-kb", "64")
    with wsman(endpoint) as connection:
        pool = RunspacePool(connection)
        pool.open()
        try:
            ps = start(pool, "New-TestObject -Count 200 -Size 1000")
            disconnect(connection, pool.id, buffer_mode=mode)
            pool.state, ps.state = RunspacePoolState.DISCONNECTED, PSInvocationState.DISCONNECTED  # what pool.disconnect() sets
            if mode == "Drop":
                # The pipeline does not wait for a client: it finishes, dropping its oldest output.
                assert wait_for(lambda: endpoint.state()["pipelines_running"] == 0, timeout=15)
            listed = fields([s for s in enumerate_shells(connection) if s.find("rsp:ShellId", NAMESPACES).text == pool.id][0])
            assert listed["BufferMode"] == mode
            pool.connect()
            output = ps.connect()
            assert ps.state == PSInvocationState.COMPLETED
            if mode == "Block":
                assert len(output) == 200
            else:
                assert 0 < len(output) < 200
        finally:
            pool.close()


# -- the reply bodies, against test_psrp_disconnect_runspaces.yml ----------------------------------------------
def test_reply_bodies_follow_the_windows_recording(endpoint):
    import base64
    import struct
    import uuid

    from pypsrp.messages import ConnectRunspacePool, SessionCapability
    from pypsrp.powershell import Fragmenter
    from pypsrp.wsman import OptionSet

    with wsman(endpoint) as first:
        pool = RunspacePool(first)
        pool.open()
        body = first.disconnect(PS_URI, ET.Element("{%s}Disconnect" % RSP), selector_set=selectors(pool.id))
        assert list(body) == [] and not (body.text or "").strip()  # <s:Body></s:Body>
        body = first.reconnect(PS_URI, selector_set=selectors(pool.id))
        assert list(body) == []
        first.disconnect(PS_URI, ET.Element("{%s}Disconnect" % RSP), selector_set=selectors(pool.id))
    with wsman(endpoint) as second:
        empty = ET.Element("{%s}Enumerate" % WSEN)
        ET.SubElement(empty, "{%s}OptimizeEnumeration" % WSMN)
        ET.SubElement(empty, "{%s}MaxElements" % WSMN).text = "32000"
        reply = second.enumerate(SHELL_URI + "/Command", empty).find("wsen:EnumerateResponse", NAMESPACES)
        # no filter: every command of the user's shells; this pool has none
        assert [c.tag.split("}")[1] for c in reply] == ["EnumerationContext", "EndOfSequence"]

        fragmenter = Fragmenter(second.max_payload_size, pool._serializer)
        data = fragmenter.fragment(SessionCapability("2.3", "2.0", "1.1.0.1"), pool.id)[0]
        data += fragmenter.fragment(ConnectRunspacePool(), pool.id)[0]
        connect = ET.Element("{%s}Connect" % RSP)
        ET.SubElement(connect, "connectXml", xmlns="http://schemas.microsoft.com/powershell").text = base64.b64encode(data).decode()
        options = OptionSet()
        options.add_option("protocolversion", "2.3", {"MustComply": "true"})
        reply = second.connect(PS_URI, connect, options, selectors(pool.id)).find("rsp:ConnectResponse", NAMESPACES)
        assert [c.tag.split("}")[1] for c in reply] == ["InputStreams", "OutputStreams", "connectResponseXml"]
        assert reply.find("rsp:InputStreams", NAMESPACES).text == "stdin pr"
        blob = base64.b64decode(reply.find("{http://schemas.microsoft.com/powershell}connectResponseXml").text)
        messages = []
        while blob:
            object_id, fragment_id, flags, length = struct.unpack(">QQBI", blob[:21])
            message, blob = blob[21 : 21 + length], blob[21 + length :]
            destination, message_type = struct.unpack("<II", message[:8])
            rpid = uuid.UUID(bytes_le=message[8:24])
            messages.append((object_id, fragment_id, flags, destination, message_type, rpid, message[40:43]))
        assert [m[4] for m in messages] == [0x00010002, 0x0002100B]  # SESSION_CAPABILITY, RUNSPACEPOOL_INIT_DATA
        assert all(m[1:4] == (0, 3, 1) and m[5] == uuid.UUID(pool.id) and m[6] == b"\xef\xbb\xbf" for m in messages)
        assert messages[1][0] == messages[0][0] + 1
        second.delete(PS_URI, selector_set=selectors(pool.id))
    assert endpoint.wait_state("shells", 0)["disconnected"] == 0


def test_a_receive_waiting_when_the_shell_disconnects_gets_the_disconnected_fault(endpoint):
    import threading

    with wsman(endpoint) as connection, wsman(endpoint) as poller:
        pool = RunspacePool(connection)
        pool.open()
        outcome = {}

        def receive() -> None:
            element = ET.Element("{%s}Receive" % RSP)
            ET.SubElement(element, "{%s}DesiredStream" % RSP).text = "stdout"
            try:
                poller.receive(PS_URI, element, selector_set=selectors(pool.id), timeout=20)
            except WSManFaultError as fault:
                outcome["code"] = fault.code

        waiting = threading.Thread(target=receive)
        waiting.start()
        try:
            pool.disconnect()  # whether or not the Receive was already waiting, it ends with the fault
            waiting.join(15)
            assert not waiting.is_alive()
            assert outcome == {"code": 2150859204}
            pool.connect()
        finally:
            pool.close()
