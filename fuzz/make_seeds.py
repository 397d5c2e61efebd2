#!/usr/bin/env python3
"""Writes the fuzz seed corpora (fuzz/corpus/<target>/seed-*) from the recorded Windows
exchanges (core/tests/data/windows-transcripts/*.yml) and core/tests/data/vectors.json.

Run from the repository root with the project's virtualenv (it reads the transcripts with the
replay server's parser): .venv/bin/python fuzz/make_seeds.py. Inputs found by fuzzing
(crash-*, regression-*) sit beside the seeds and are kept; old seed-* files are replaced.
"""

import base64
import binascii
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

from psremote_testserver.replay import parse_transcript

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "core" / "tests" / "data"
CORPUS = ROOT / "fuzz" / "corpus"
MAX_SEED = 8 * 1024  # larger recordings (the 100 MiB copy) add size, not coverage
TARGETS = [
    "clixml", "psrp_defrag", "psrp_message", "psrp_pool", "wsman_reply", "encryption", "der", "krb5_conf", "outofproc",
    "proxy_http", "proxy_socks5",
]

seeds = {t: {} for t in TARGETS}


def markup(data):
    """The tags of an XML text without its text and attribute values."""
    return re.sub(rb">[^<]*<", b"><", re.sub(rb'"[^"]*"', b'""', data))


def shape(target, data):
    """What makes two seeds different for a parser: the recordings repeat the same replies with
    other ids and output, which only adds size. The smallest seed of each shape is kept."""
    if target in ("wsman_reply", "clixml"):
        return markup(data)
    if target == "psrp_message":
        return data[4:8] + markup(data[40:])
    if target in ("psrp_defrag", "psrp_pool"):
        return data[:1] + b"".join(blob[4:8] + bytes([f]) for _, _, f, blob in fragments(data[3:]))
    return data


def add(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data or len(data) > MAX_SEED:
        return
    key = shape(target, data)
    if key in seeds[target] and len(seeds[target][key]) <= len(data):
        return
    seeds[target][key] = data


def record(flag, chunk):
    """One record of the fuzzing functions' chunked input (psremote::fuzzing::records)."""
    return bytes([flag]) + struct.pack(">H", len(chunk)) + chunk


def fragments(data):
    """PSRP fragments: (object id, fragment id, flags, blob)."""
    out = []
    while len(data) >= 21:
        oid, fid, flags, n = struct.unpack(">QQBI", data[:21])
        out.append((oid, fid, flags, data[21 : 21 + n]))
        data = data[21 + n :]
    return out


def add_fragment_stream(chunks):
    """chunks: [(is_pipeline, bytes)] as one Receive (or creationXml) carried them."""
    if sum(len(c) for _, c in chunks) > MAX_SEED:
        return
    add("psrp_defrag", b"".join(record(0, c) for _, c in chunks))
    add("psrp_pool", b"".join(record(1 if p else 0, c) for p, c in chunks))
    pending = {}
    for _, chunk in chunks:
        for oid, _fid, flags, blob in fragments(chunk):
            if flags & 1:
                pending[oid] = b""
            pending[oid] = pending.get(oid, b"") + blob
            if flags & 2:
                message = pending.pop(oid)
                add("psrp_message", message)
                add("clixml", message[40:])


STREAM = re.compile(r"<rsp:Stream([^>]*)>([^<]*)</rsp:Stream>")
CREATION = re.compile(r"<(?:\w+:)?(?:creationXml|connectResponseXml)[^>]*>([^<]*)<")


def from_envelope(text, is_response):
    if is_response:
        add("wsman_reply", text)
    chunks = []
    for attrs, b64 in STREAM.findall(text):
        try:
            data = base64.b64decode(b64, validate=True)
        except binascii.Error:
            continue
        if data:
            chunks.append(("CommandId=" in attrs, data))
    for b64 in CREATION.findall(text):
        try:
            chunks.append((False, base64.b64decode(b64, validate=True)))
        except binascii.Error:
            pass
    if chunks and any(fragments(c) for _, c in chunks):
        add_fragment_stream(chunks)


def walk(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            walk(v, k)
    elif isinstance(value, list):
        for v in value:
            walk(v, key)
    elif isinstance(value, str):
        if value.startswith("<s:Envelope"):
            from_envelope(value, "xml:lang" in value[:120])
        elif value.startswith("<"):
            add("clixml", value)
        elif key.endswith("_hex"):
            try:
                data = bytes.fromhex(value)
            except ValueError:
                return
            if key == "body_hex":
                add("encryption", data)
            elif key == "bytes_hex":
                add("psrp_message", data)
            elif "fragment" in key:
                add("psrp_defrag", record(0, data))
        elif key == "cert_der_b64":
            add("der", base64.b64decode(value))


def sealed(protocol, parts):
    out = b""
    for length, header, ciphertext in parts:
        out += (
            f"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-{protocol}-session-encrypted\r\n"
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n"
            "--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n"
        ).encode()
        out += struct.pack("<I", len(header)) + header + ciphertext
    return out + b"--Encrypted Boundary--\r\n"


KRB5 = [
    "[libdefaults]\n  default_realm = EXAMPLE.TEST\n  dns_lookup_kdc = false\n\n[realms]\n"
    "  EXAMPLE.TEST = {\n    kdc = 127.0.0.1:88\n    admin_server = 127.0.0.1\n  }\n",
    "[realms]\nA.TEST = {\n kdc = tcp/kdc.a.test:8888\n kdc = udp/other\n}\nB.TEST = { \n kdc = [::1]:88 # comment\n}\n",
    "[libdefaults]\ndefault_realm=LAB.LOCAL ; trailing\n[domain_realm]\n.lab.local = LAB.LOCAL\n"
    "[realms]\nLAB.LOCAL = {\nkdc = https://kdc.lab.local/KdcProxy\n}\n",
]


def certificates():
    """Self-signed certificates over the signature algorithms the channel binding tells apart."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz.test")])
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    ec_key = ec.derive_private_key(0x1234567, ec.SECP256R1())
    keys = [(ec_key, h) for h in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512())]
    keys.append((ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))), None))
    for key, algorithm in keys:
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(when)
            .not_valid_after(when + datetime.timedelta(days=1))
            .sign(key, algorithm)
        )
        add("der", cert.public_bytes(serialization.Encoding.DER))


def outofproc():
    """Out-of-process lines (psremote::fuzzing::outofproc): the vector's lines, and the
    fragments the recordings carried, each wrapped in a server's Data line, fed in records."""
    vector = next(v for v in json.loads((DATA / "vectors.json").read_text(encoding="utf-8"))
                  if v["id"] == "outofproc-packets")
    lines = [(line + "\n").encode() for line in vector["expected"]["lines"]]
    add("outofproc", b"".join(record(0, line) for line in lines))
    add("outofproc", b"".join(record(0, line) for line in lines if b"Ack" in line or b"<Data" in line))
    pid = vector["input"]["pipeline_id"]
    for data in list(seeds["psrp_defrag"].values())[:12]:
        guid = pid if data[0] & 1 else "00000000-0000-0000-0000-000000000000"
        out = []
        for _, chunk in chunk_records(data):
            text = base64.b64encode(chunk).decode()
            out.append(f"<Data Stream='Default' PSGuid='{guid}'>{text}</Data>\r\n".encode())
            out.append(f"<DataAck PSGuid='{guid}' />\n".encode())
        joined = b"".join(out)
        # Cut across line boundaries, as a pipe delivers them.
        add("outofproc", b"".join(record(1, joined[i:i + 100]) for i in range(0, len(joined), 100)))


def chunk_records(data):
    """The records of a seed written by record()."""
    while data:
        flag, length = data[0], struct.unpack(">H", data[1:3])[0]
        yield flag, data[3:3 + length]
        data = data[3 + length:]


# Replies proxies gave in the issue 15 research (tinyproxy 1.11.1, squid 5.7, microsocks 1.0.3,
# dante 1.4.2), and the misbehaviours the tests' fake proxy plays.
PROXY_HTTP = [
    b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n",
    b"HTTP/1.1 200 Connection established\r\n\r\n",
    b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"Tinyproxy\"\r\n"
    b"Connection: close\r\n\r\n<html>",
    b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"Tinyproxy\"\r\n\r\n",
    b"HTTP/1.1 500 Unable to connect\r\nContent-Type: text/html\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK",
    b"garbage\r\n\r\n",
]
PROXY_SOCKS5 = [
    bytes([0, 5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    bytes([6, 5, 2, 1, 0, 5, 0, 0, 3, 9]) + b"localhost" + bytes([0, 80]),
    bytes([5, 5, 2, 1, 0, 5, 0, 0, 4]) + bytes(16) + bytes([1, 187]),
    bytes([4, 5, 0xFF]),
    bytes([4, 5, 2, 1, 2]),
    bytes([0, 5, 0, 5, 5, 0, 1]),
]


def proxies():
    for reply in PROXY_HTTP:
        add("proxy_http", record(0, reply))
        half = len(reply) // 2
        add("proxy_http", record(0, reply[:half]) + record(0, reply[half:]))
    for reply in PROXY_SOCKS5:
        add("proxy_socks5", reply)


def main():
    certificates()
    proxies()
    for path in sorted((DATA / "windows-transcripts").glob("*.yml")):
        if path.name.startswith("_"):
            continue
        for entry in parse_transcript(path.read_text(encoding="utf-8")):
            for key, is_response in (("request", False), ("response", True)):
                text = entry.get(key)
                if isinstance(text, str) and text.startswith("<"):
                    from_envelope(text, is_response)
    walk(json.loads((DATA / "vectors.json").read_text(encoding="utf-8")))
    for proto in ("SPNEGO", "Kerberos", "CredSSP"):
        add("encryption", sealed(proto, [(9, b"sig-header-16byt", b"plaintext")]))
    add("encryption", sealed("CredSSP", [(5, b"h" * 16, b"12345"), (3, b"h" * 16, b"678")]))
    for text in KRB5:
        add("krb5_conf", text)
    outofproc()
    for target, files in seeds.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for data in files.values():
            (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
