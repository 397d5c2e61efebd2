"""From a plaintext SOAP request to a plaintext SOAP reply.

Transport concerns (auth, sealing, HTTP status for size) stay in httpserver;
shell semantics stay in the engines. This module owns the shell table and the
rules every WS-Man operation shares: resource URI lookup, ShellId selector,
RelatesTo, fault envelopes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from . import faults, soap
from .engines import EngineRegistry, Reply, RequestContext, ShellTable

log = logging.getLogger(__name__)

MACHINE = "127.0.0.1"


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
        engine = self.registry.lookup(request.resource_uri)
        if engine is None:
            raise faults.destination_unreachable(request.resource_uri)
        if request.action == soap.ACTION_CREATE:
            shell, reply = engine.create(request, ctx, self.shells)
            self.shells.add(engine, shell)
            log.info("shell %s created (%s)", shell.shell_id, request.resource_uri)
            return reply
        if request.action != soap.ACTION_DELETE and request.action not in engine.actions:
            raise faults.action_not_supported(request.action)

        found = self.shells.get(request.selector("ShellId"))
        if found is None or found[0] is not engine:
            raise faults.unknown_shell()
        _, shell = found
        if request.action == soap.ACTION_DELETE:
            if self.shells.pop(shell.shell_id) is not None:
                engine.delete(shell)
                log.info("shell %s deleted", shell.shell_id)
            return Reply("", soap.NS_DELETE)

        limit = min(request.max_envelope_size or ctx.max_envelope_size, ctx.max_envelope_size)
        skeleton = soap.envelope(request.action + "Response", request.message_id, "", soap.NS_DEFAULT)
        request.body_budget = limit - len(skeleton)
        return engine.handle(shell, request, ctx)

    def counts(self):
        """Live shells and commands, plus the PSRP engine's pools and pipelines."""
        return self.shells.counts(("pools", "pipelines", "pipelines_running"))

    def close_all(self) -> None:
        for engine, shell in self.shells.pop_all():
            engine.delete(shell)
