"""From a plaintext SOAP request to a plaintext SOAP reply.

Transport concerns (auth, sealing, HTTP status for size) stay in httpserver;
shell semantics stay in the engines. This module owns the shell table and the
rules every WS-Man operation shares: resource URI lookup, ShellId selector,
RelatesTo, fault envelopes, a shell's Connected/Disconnected state (which
requests a disconnected shell refuses, its idle timeout), and the requests
that are not addressed to one engine: transfer Get of a shell or of
winrm/config, and Enumerate/Pull of shells and commands.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import faults, soap
from .engines import DISCONNECTED, EngineRegistry, Reply, RequestContext, Shell, ShellEngine, ShellTable, owner_key

log = logging.getLogger(__name__)

MACHINE = "127.0.0.1"

SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
COMMAND_URI = SHELL_URI + "/Command"
CONFIG_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"
SELECTOR_DIALECT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter"

# What a disconnected shell still answers (MS-WSMV 3.1.4.1.31.7); Get is the transfer Get of the shell.
_WHILE_DISCONNECTED = {soap.ACTION_DISCONNECT, soap.ACTION_RECONNECT, soap.ACTION_CONNECT, soap.ACTION_DELETE}
_SESSION_ACTIONS = {soap.ACTION_DISCONNECT, soap.ACTION_RECONNECT, soap.ACTION_CONNECT}
# Enumeration contexts not pulled to the end are forgotten after this long (Windows' EnumerationTimeoutms).
ENUMERATION_TIMEOUT = 240.0


@dataclass
class SoapReply:
    status: int  # 200, 500 (fault) or 400 (not a SOAP envelope; body empty)
    xml: bytes
    request_action: Optional[str] = None
    relates_to: Optional[str] = None


class Dispatcher:
    def __init__(self, registry: EngineRegistry) -> None:
        self.registry = registry
        self.shells = ShellTable()
        self._enumerations: Dict[str, Tuple[float, List[str]]] = {}
        self._enumerations_lock = threading.Lock()

    def handle(self, data: bytes, ctx: RequestContext) -> SoapReply:
        try:
            request = soap.parse_request(data)
        except soap.MalformedRequest as exc:
            log.info("malformed request: %s", exc)
            return SoapReply(400, b"")
        except faults.WSManFault as fault:
            return SoapReply(500, soap.fault_envelope(fault, fault.relates_to, MACHINE), None, fault.relates_to)

        try:
            reply = self._dispatch(request, ctx)
        except faults.WSManFault as fault:
            log.info("fault %s for %s", fault.code, request.action)
            xml = soap.fault_envelope(fault, request.message_id, MACHINE)
            return SoapReply(500, xml, request.action, request.message_id)
        xml = soap.envelope(request.action + "Response", request.message_id, reply.body, reply.prefixes)
        return SoapReply(200, xml, request.action, request.message_id)

    def _dispatch(self, request: soap.WSManRequest, ctx: RequestContext) -> Reply:
        uri = request.resource_uri.lower()
        if request.action in (soap.ACTION_ENUMERATE, soap.ACTION_PULL):
            return self._enumeration(request, ctx)
        if request.action == soap.ACTION_GET:
            if uri == CONFIG_URI:
                return Reply(config_document(ctx), soap.NS_GET)
            if uri == SHELL_URI.lower():
                engine, shell = self._find(request, ctx)
                shell.touch()
                return Reply(engine.describe(shell), soap.NS_GET)

        engine = self.registry.lookup(request.resource_uri)
        if engine is None:
            raise faults.destination_unreachable(request.resource_uri)
        if request.action == soap.ACTION_CREATE:
            shell, reply = engine.create(request, ctx, self.shells)
            shell.created = shell.last_activity = time.monotonic()
            shell.client_session = request.session_id
            self.shells.add(engine, shell)
            log.info("shell %s created (%s)", shell.shell_id, request.resource_uri)
            return reply
        if request.action != soap.ACTION_DELETE and request.action not in engine.actions:
            raise faults.action_not_supported(request.action)

        found = self.shells.get(request.selector("ShellId"))
        if found is None or found[0] is not engine:
            raise faults.unknown_shell()
        _, shell = found
        shell.touch()
        if request.action == soap.ACTION_DELETE:
            if self.shells.pop(shell.shell_id) is not None:
                engine.delete(shell)
                log.info("shell %s deleted", shell.shell_id)
            return Reply("", soap.NS_DELETE)
        if request.action in _SESSION_ACTIONS and owner_key(shell.owner) != owner_key(ctx.principal):
            raise faults.unknown_shell()  # another user's shell does not exist for this one
        if shell.disconnected and request.action not in _WHILE_DISCONNECTED:
            raise faults.shell_disconnected(shell.shell_id)

        limit = min(request.max_envelope_size or ctx.max_envelope_size, ctx.max_envelope_size)
        skeleton = soap.envelope(request.action + "Response", request.message_id, "", soap.NS_DEFAULT)
        request.body_budget = limit - len(skeleton)
        was_disconnected = shell.disconnected
        reply = engine.handle(shell, request, ctx)
        if request.action in _SESSION_ACTIONS:
            if shell.disconnected != was_disconnected or request.action == soap.ACTION_DISCONNECT:
                shell.generation += 1
            if shell.disconnected:
                self._arm_idle_timer(engine, shell)
        return reply

    def _find(self, request: soap.WSManRequest, ctx: RequestContext) -> Tuple[ShellEngine, Shell]:
        found = self.shells.get(request.selector("ShellId"))
        if found is None or owner_key(found[1].owner) != owner_key(ctx.principal):
            raise faults.unknown_shell()
        return found

    # -- idle timeout of disconnected shells ---------------------------------------------------------------
    def _arm_idle_timer(self, engine: ShellEngine, shell: Shell) -> None:
        """A disconnected shell is deleted once its IdleTimeOut passes without a Reconnect or Connect."""
        seconds = getattr(shell, "idle_seconds", None)
        if not seconds:
            return
        generation = shell.generation
        timer = threading.Timer(seconds, self._expire, (engine, shell, generation))
        timer.daemon = True
        timer.name = f"idle-{shell.shell_id[:8]}"
        timer.start()

    def _expire(self, engine: ShellEngine, shell: Shell, generation: int) -> None:
        if shell.generation != generation or shell.state != DISCONNECTED:
            return
        found = self.shells.get(shell.shell_id)
        if found is None or found[1] is not shell:
            return
        if self.shells.pop(shell.shell_id) is not None:
            engine.delete(shell)
            log.info("disconnected shell %s closed after its idle timeout", shell.shell_id)

    # -- Enumerate / Pull --------------------------------------------------------------------------------
    def _enumeration(self, request: soap.WSManRequest, ctx: RequestContext) -> Reply:
        if request.action == soap.ACTION_PULL:
            return self._pull(request)
        body = request.body.find(soap.q("n", "Enumerate"))
        if body is None:
            raise faults.invalid_parameter()
        items = self._items(request, body, ctx)
        optimize = body.find(soap.q("w", "OptimizeEnumeration")) is not None
        limit = _max_elements(body.find(soap.q("w", "MaxElements")))
        if not optimize:
            limit = 0
        now, rest = items[:limit], items[limit:]
        parts = ["<n:EnumerateResponse>"]
        if rest:
            parts.append(f"<n:EnumerationContext>{self._remember(rest)}</n:EnumerationContext>")
        else:
            parts.append("<n:EnumerationContext></n:EnumerationContext>")
        if optimize:
            if now:
                parts.append("<w:Items>" + "".join(now) + "</w:Items>")
            if not rest:
                parts.append("<w:EndOfSequence/>")
        parts.append("</n:EnumerateResponse>")
        return Reply("".join(parts), soap.NS_ENUMERATE)

    def _pull(self, request: soap.WSManRequest) -> Reply:
        body = request.body.find(soap.q("n", "Pull"))
        context = body.find(soap.q("n", "EnumerationContext")) if body is not None else None
        key = (context.text or "").strip() if context is not None else ""
        with self._enumerations_lock:
            self._forget_stale()
            entry = self._enumerations.pop(key, None)
        if entry is None:
            raise faults.invalid_enumeration_context()
        limit = _max_elements(body.find(soap.q("n", "MaxElements"))) or 1
        items = entry[1]
        now, rest = items[:limit], items[limit:]
        parts = ["<n:PullResponse>"]
        if rest:
            parts.append(f"<n:EnumerationContext>{self._remember(rest, key)}</n:EnumerationContext>")
        parts.append("<n:Items>" + "".join(now) + "</n:Items>")
        if not rest:
            parts.append("<n:EndOfSequence/>")
        parts.append("</n:PullResponse>")
        return Reply("".join(parts), soap.NS_ENUMERATE)

    def _remember(self, items: List[str], key: Optional[str] = None) -> str:
        key = key or f"uuid:{str(uuid.uuid4()).upper()}"
        with self._enumerations_lock:
            self._forget_stale()
            self._enumerations[key] = (time.monotonic(), items)
        return key

    def _forget_stale(self) -> None:
        cutoff = time.monotonic() - ENUMERATION_TIMEOUT
        for key in [k for k, (at, _) in self._enumerations.items() if at < cutoff]:
            del self._enumerations[key]

    def _items(self, request: soap.WSManRequest, body: ET.Element, ctx: RequestContext) -> List[str]:
        """The rsp:Shell or rsp:Command elements the Enumerate asks for (the caller's own shells only)."""
        uri = request.resource_uri.lower()
        mine = [(engine, shell) for engine, shell in self.shells.all() if owner_key(shell.owner) == owner_key(ctx.principal)]
        mine.sort(key=lambda pair: pair[1].created)
        if uri == COMMAND_URI.lower():
            wanted = _filter_shell_id(body)
            items = []
            for engine, shell in mine:
                if wanted is None or shell.shell_id.upper() == wanted.upper():
                    for command_id in engine.command_ids(shell):
                        items.append(
                            f'<rsp:Command xmlns:rsp="{soap.NS["rsp"]}"><rsp:ShellId>{shell.shell_id}</rsp:ShellId>'
                            f"<rsp:CommandId>{command_id}</rsp:CommandId></rsp:Command>"
                        )
            return items
        if uri == SHELL_URI.lower():
            return [engine.describe(shell) for engine, shell in mine]
        engine = self.registry.lookup(request.resource_uri)
        if engine is None:
            raise faults.destination_unreachable(request.resource_uri)
        return [e.describe(shell) for e, shell in mine if shell.resource_uri.lower() == uri]

    # -- control state -----------------------------------------------------------------------------------
    def counts(self):
        """Live shells (and how many are disconnected) and commands, plus the PSRP engine's pools and pipelines."""
        return self.shells.counts(("pools", "pipelines", "pipelines_running"))

    def discard_shell(self, shell_id: str) -> None:
        """Deletes a shell no client can name (a misbehaviour broke the reply that named it)."""
        found = self.shells.pop(shell_id)
        if found is not None:
            found[0].delete(found[1])
            log.info("shell %s discarded", shell_id)

    def close_all(self) -> None:
        for engine, shell in self.shells.pop_all():
            engine.delete(shell)


def _max_elements(element: Optional[ET.Element]) -> int:
    if element is None:
        return 1 << 30
    try:
        return max(int((element.text or "").strip()), 1)
    except ValueError:
        raise faults.invalid_parameter() from None


def _filter_shell_id(body: ET.Element) -> Optional[str]:
    """The ShellId of a SelectorFilter (what pypsrp and PowerShell send to enumerate a shell's commands)."""
    filter_element = body.find(soap.q("w", "Filter"))
    if filter_element is None:
        return None
    for selector in filter_element.iter(soap.q("w", "Selector")):
        if (selector.get("Name") or "").lower() == "shellid":
            return (selector.text or "").strip()
    return None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def config_document(ctx: RequestContext) -> str:
    """winrm/config as Windows answers a transfer Get of it (test_wsman_update_envelope_size_*.yml).

    MaxEnvelopeSizekb and MaxTimeoutms come from --max-envelope-kb and --max-timeout-ms, the
    Service section from the listener's own settings; the rest are Windows' defaults."""
    schemes = set(ctx.auth_schemes)
    cbt = {"none": "None", "relaxed": "Relaxed", "strict": "Strict"}.get(ctx.cbt, "Relaxed")
    return (
        '<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
        f"<cfg:MaxEnvelopeSizekb>{ctx.max_envelope_size // 1024}</cfg:MaxEnvelopeSizekb>"
        f"<cfg:MaxTimeoutms>{int(round(ctx.max_timeout * 1000))}</cfg:MaxTimeoutms>"
        "<cfg:MaxBatchItems>32000</cfg:MaxBatchItems><cfg:MaxProviderRequests>4294967295</cfg:MaxProviderRequests>"
        "<cfg:Client><cfg:NetworkDelayms>5000</cfg:NetworkDelayms><cfg:URLPrefix>wsman</cfg:URLPrefix>"
        "<cfg:AllowUnencrypted>false</cfg:AllowUnencrypted><cfg:Auth><cfg:Basic>true</cfg:Basic>"
        "<cfg:Digest>true</cfg:Digest><cfg:Kerberos>true</cfg:Kerberos><cfg:Negotiate>true</cfg:Negotiate>"
        "<cfg:Certificate>true</cfg:Certificate><cfg:CredSSP>false</cfg:CredSSP></cfg:Auth>"
        "<cfg:DefaultPorts><cfg:HTTP>5985</cfg:HTTP><cfg:HTTPS>5986</cfg:HTTPS></cfg:DefaultPorts>"
        "<cfg:TrustedHosts></cfg:TrustedHosts></cfg:Client>"
        "<cfg:Service><cfg:RootSDDL>O:NSG:BAD:P(A;;GA;;;BA)(A;;GR;;;IU)S:P(AU;FA;GA;;;WD)(AU;SA;GXGW;;;WD)</cfg:RootSDDL>"
        "<cfg:MaxConcurrentOperations>4294967295</cfg:MaxConcurrentOperations>"
        "<cfg:MaxConcurrentOperationsPerUser>1500</cfg:MaxConcurrentOperationsPerUser>"
        "<cfg:EnumerationTimeoutms>240000</cfg:EnumerationTimeoutms><cfg:MaxConnections>300</cfg:MaxConnections>"
        "<cfg:MaxPacketRetrievalTimeSeconds>120</cfg:MaxPacketRetrievalTimeSeconds>"
        f"<cfg:AllowUnencrypted>{_flag(ctx.allow_unencrypted)}</cfg:AllowUnencrypted>"
        f"<cfg:Auth><cfg:Basic>{_flag('basic' in schemes)}</cfg:Basic>"
        f"<cfg:Kerberos>{_flag(bool(schemes & {'kerberos', 'negotiate'}))}</cfg:Kerberos>"
        f"<cfg:Negotiate>{_flag(bool(schemes & {'negotiate', 'ntlm'}))}</cfg:Negotiate>"
        f"<cfg:Certificate>{_flag('certificate' in schemes)}</cfg:Certificate>"
        f"<cfg:CredSSP>{_flag('credssp' in schemes)}</cfg:CredSSP>"
        f"<cfg:CbtHardeningLevel>{cbt}</cfg:CbtHardeningLevel></cfg:Auth>"
        "<cfg:DefaultPorts><cfg:HTTP>5985</cfg:HTTP><cfg:HTTPS>5986</cfg:HTTPS></cfg:DefaultPorts>"
        "<cfg:IPv4Filter>*</cfg:IPv4Filter><cfg:IPv6Filter>*</cfg:IPv6Filter>"
        "<cfg:EnableCompatibilityHttpListener>false</cfg:EnableCompatibilityHttpListener>"
        "<cfg:EnableCompatibilityHttpsListener>false</cfg:EnableCompatibilityHttpsListener>"
        "<cfg:CertificateThumbprint></cfg:CertificateThumbprint><cfg:AllowRemoteAccess>true</cfg:AllowRemoteAccess>"
        "</cfg:Service>"
        "<cfg:Winrs><cfg:AllowRemoteShellAccess>true</cfg:AllowRemoteShellAccess><cfg:IdleTimeout>7200000</cfg:IdleTimeout>"
        "<cfg:MaxConcurrentUsers>2147483647</cfg:MaxConcurrentUsers><cfg:MaxShellRunTime>2147483647</cfg:MaxShellRunTime>"
        "<cfg:MaxProcessesPerShell>2147483647</cfg:MaxProcessesPerShell>"
        "<cfg:MaxMemoryPerShellMB>2147483647</cfg:MaxMemoryPerShellMB><cfg:MaxShellsPerUser>2147483647</cfg:MaxShellsPerUser>"
        "</cfg:Winrs></cfg:Config>"
    )
