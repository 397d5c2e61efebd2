"""Command line: ``python -m psremote_testserver --port 0 --users FILE ...``.

(``python -m psremote_testserver --out-of-proc ...`` is the out-of-process mode instead: outofproc.py.)

Prints exactly one line, the endpoint URL, then serves until SIGTERM/SIGINT (or until the
process that started it exits), when it stops listening, kills every command it started and
exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from typing import List, Optional

from .auth import ALL_SCHEMES, DEFAULT_SCHEMES
from .cbt import MODES as CBT_MODES
from .cmd_shell import CMD_URI, CmdEngine
from .dispatch import Dispatcher
from .engines import EngineRegistry
from .httpserver import ServerConfig, WinRMServer, serve_siblings
from .drop import parse as parse_drop
from .misbehave import MODES
from .psrp_shell import PS_PREFIX, PSRPEngine
from .tls import VERSIONS as TLS_VERSIONS
from .tls import TlsSettings
from .users import UserStore, UsersFileError

log = logging.getLogger("psremote_testserver")


def _schemes(value: str) -> tuple:
    schemes = tuple(dict.fromkeys(s.strip().lower() for s in value.split(",") if s.strip()))
    unknown = [s for s in schemes if s not in ALL_SCHEMES]
    if unknown or not schemes:
        raise argparse.ArgumentTypeError(f"choose from {','.join(ALL_SCHEMES)}")
    return schemes


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


#: Most extra addresses one endpoint process listens on.
MAX_LISTEN_RANGE = 4096


def _loopback_range(value: str) -> List[str]:
    """``FIRST-LAST`` (IPv4, both in 127.0.0.0/8) -> the addresses, FIRST..LAST inclusive."""
    first, sep, last = value.partition("-")
    try:
        lo, hi = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address((last if sep else first).strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if lo not in loopback or hi not in loopback:
        raise argparse.ArgumentTypeError("addresses must be in 127.0.0.0/8")
    count = int(hi) - int(lo) + 1
    if count < 1 or count > MAX_LISTEN_RANGE:
        raise argparse.ArgumentTypeError(f"FIRST must not be above LAST, and at most {MAX_LISTEN_RANGE} addresses")
    return [str(ipaddress.IPv4Address(int(lo) + i)) for i in range(count)]


#: Serve one runspace pool on stdin/stdout instead (outofproc.py has its own options).
OUT_OF_PROC = "--out-of-proc"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m psremote_testserver", description="Loopback WinRM endpoint for tests.")
    parser.add_argument(
        OUT_OF_PROC,
        action="store_true",
        help="no WinRM: serve one PowerShell runspace pool on stdin/stdout with the OutOfProc framing, as pwsh -s does "
        "(its options: python -m psremote_testserver --out-of-proc --help)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument(
        "--listen-range",
        type=_loopback_range,
        default=[],
        metavar="FIRST-LAST",
        help="also listen on these loopback addresses (e.g. 127.0.1.1-127.0.1.250), same port and state: distinct hosts for fleet tests",
    )
    parser.add_argument("--path", default="/wsman", help="URL path of the endpoint (default /wsman)")
    parser.add_argument("--users", required=True, help="users file, lines DOMAIN:USER:PASSWORD")
    parser.add_argument(
        "--auth",
        type=_schemes,
        default=DEFAULT_SCHEMES,
        help=f"comma list of {','.join(ALL_SCHEMES)} (default {','.join(DEFAULT_SCHEMES)}); certificate needs --client-ca",
    )
    parser.add_argument("--allow-unencrypted", action="store_true", help="accept plaintext SOAP bodies (and so Basic)")
    parser.add_argument("--max-envelope-kb", type=_positive, default=500, help="largest accepted request (default 500)")
    parser.add_argument("--max-timeout-ms", type=_positive, default=60000, help="cap on wsman:OperationTimeout (default 60000)")
    parser.add_argument("--control", action="store_true", help="serve GET /_control/state")
    parser.add_argument("--capture", metavar="DIR", help="write every received HTTP request to DIR/NNNNNN.http")
    parser.add_argument("--misbehave", choices=MODES, help="break one reply (mostly the first ReceiveResponse), or time out Receives (see misbehave.py)")
    parser.add_argument(
        "--drop-connection",
        metavar="send:N|receive:N",
        help="close the connection, unanswered, on the Nth command-level Send (pipeline input) or Receive (pipeline output)",
    )
    parser.add_argument(
        "--close-after-reply",
        action="store_true",
        help="answer every SOAP request with 'Connection: close' and close the connection",
    )
    parser.add_argument(
        "--corrupt-file-chunk",
        action="store_true",
        help="file transfers flip one byte of the first chunk written (copy) or sent (fetch): a hash mismatch",
    )
    parser.add_argument(
        "--psrp-fragment-size",
        type=_positive,
        metavar="N",
        help="cap PSRP fragment blobs sent to clients at N bytes (default: derived from each Receive's MaxEnvelopeSize)",
    )
    parser.add_argument(
        "--psrp-buffer-kb",
        type=_positive,
        default=4096,
        metavar="N",
        help="PSRP output queued per pipeline before BufferMode applies: Block waits, Drop (while disconnected) discards the oldest (default 4096)",
    )
    parser.add_argument(
        "--psrp-signal-delay-ms",
        type=int,
        default=0,
        metavar="N",
        help="answer each PSRP Signal only after N ms (shows whether a client waits for it)",
    )
    parser.add_argument(
        "--server-ids",
        action="store_true",
        help="choose PSRP ShellIds and CommandIds here, ignoring the client's (as PowerShell 2.0 servers do)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument("--tls-min", choices=sorted(TLS_VERSIONS), default="1.2", help="lowest TLS version (default 1.2)")
    parser.add_argument("--tls-max", choices=sorted(TLS_VERSIONS), default="1.3", help="highest TLS version (default 1.3)")
    parser.add_argument("--client-ca", metavar="FILE", help="request client certificates verified against this CA (enables certificate auth)")
    parser.add_argument(
        "--cbt",
        choices=CBT_MODES,
        default="relaxed",
        help="HTTPS channel binding check for NTLM/Negotiate/Kerberos: none, relaxed (default: wrong bindings refused, none accepted) or strict",
    )
    parser.add_argument(
        "--keytab",
        metavar="FILE",
        help="accept Kerberos (Negotiate, and the kerberos scheme) for any service principal in this keytab; "
        "the realm comes from KRB5_CONFIG",
    )
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    return parser


# An empty in-memory keytab: without --keytab no Kerberos logon can succeed, whatever
# /etc/krb5.keytab or the caller's KRB5_KTNAME hold.
NO_KEYTAB = "MEMORY:psremote-testserver-no-keytab"


def keytab_name(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The KRB5_KTNAME the GSSAPI acceptor reads (checked: the file must be readable)."""
    if not args.keytab:
        if "kerberos" in args.auth:
            parser.error("--auth kerberos needs --keytab")
        return NO_KEYTAB
    path = os.path.abspath(args.keytab)
    if not os.access(path, os.R_OK):
        parser.error(f"--keytab {args.keytab}: not readable")
    return f"FILE:{path}"


def tls_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[TlsSettings]:
    """The TLS options, checked for consistency (parser.error exits on a mistake)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        parser.error("--client-ca needs --tls-cert")
    if "certificate" in args.auth and not args.client_ca:
        parser.error("--auth certificate needs --client-ca")
    if TLS_VERSIONS[args.tls_min] > TLS_VERSIONS[args.tls_max]:
        parser.error("--tls-min is above --tls-max")
    if not args.tls_cert:
        return None
    return TlsSettings(args.tls_cert, args.tls_key, args.tls_min, args.tls_max, args.client_ca)


def main(argv: Optional[List[str]] = None) -> int:
    # Read first: a parent that exits right after reading the URL line must not be missed.
    parent = os.getppid()
    arguments = sys.argv[1:] if argv is None else argv
    if OUT_OF_PROC in arguments:
        from . import outofproc

        return outofproc.main([a for a in arguments if a != OUT_OF_PROC])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.drop_connection:
        try:
            parse_drop(args.drop_connection)
        except ValueError as e:
            parser.error(str(e))
    if args.corrupt_file_chunk:
        os.environ["PSREMOTE_TESTSERVER_CORRUPT_FILE"] = "1"
    tls = tls_settings(parser, args)
    # Before any GSSAPI call: the acceptor credential is read from the keytab named here.
    os.environ["KRB5_KTNAME"] = keytab_name(parser, args)
    path = args.path if args.path.startswith("/") else "/" + args.path
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        users = UserStore.load(args.users)
    except (OSError, UsersFileError) as exc:
        print(f"psremote_testserver: {exc}", file=sys.stderr)
        return 2

    config = ServerConfig(
        port=args.port,
        path=path,
        schemes=args.auth,
        allow_unencrypted=args.allow_unencrypted,
        max_envelope_kb=args.max_envelope_kb,
        max_timeout_ms=args.max_timeout_ms,
        control=args.control,
        capture_dir=args.capture,
        misbehave=args.misbehave,
        drop_connection=args.drop_connection,
        close_after_reply=args.close_after_reply,
        tls=tls,
        cbt=args.cbt,
    )
    # pyspnego's NTLM acceptor reads its credentials from the file named here.
    os.environ["NTLM_USER_FILE"] = users.write_ntlm_file()
    try:
        registry = EngineRegistry()
        registry.register(CMD_URI, CmdEngine())
        engine = PSRPEngine(args.psrp_fragment_size, server_ids=args.server_ids, buffer_limit=args.psrp_buffer_kb * 1024)
        engine.signal_delay = args.psrp_signal_delay_ms / 1000.0
        registry.register_prefix(PS_PREFIX, engine)
        dispatcher = Dispatcher(registry)
        siblings: List[WinRMServer] = []
        try:
            server = WinRMServer(config, users, dispatcher)
            siblings = [WinRMServer.sibling(server, address) for address in args.listen_range if address != "127.0.0.1"]
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad certificate or key
            print(f"psremote_testserver: {exc}", file=sys.stderr)
            return 2

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="accept", daemon=True)
        serving.start()
        siblings_stop = threading.Event()
        if siblings:
            threading.Thread(target=serve_siblings, args=(siblings, siblings_stop), name="accept-more", daemon=True).start()
        print(server.url, flush=True)
        while not stop.wait(0.5):
            if os.getppid() != parent:
                # The process that started us is gone (a test run that crashed or was killed):
                # nobody will stop us, so stop now rather than linger with open ports.
                log.warning("parent process %d exited; stopping", parent)
                break
        log.info("stopping")
        siblings_stop.set()
        server.shutdown()
        server.server_close()
        for sibling in siblings:
            sibling.server_close()
        dispatcher.close_all()
    finally:
        users.remove_ntlm_file()
    return 0
