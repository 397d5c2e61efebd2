"""PSRP framing for the server side (PROTOCOL.md C.1, C.2).

psrpcore owns the protocol state machine and (de)serialisation; this module
owns the bytes around it:

* ``Defragmenter`` turns the client's fragments (from creationXml, Command
  Arguments and Send streams) into whole messages, so the engine sees each
  message's type and pipeline id before psrpcore processes it.
* ``OutQueue`` holds whole outgoing messages for one Receive target and cuts
  them into fragments only when a Receive asks, so the fragment size follows
  that Receive's MaxEnvelopeSize (or ``--psrp-fragment-size``).
"""

from __future__ import annotations

import struct
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple

FRAGMENT_HEADER = struct.Struct(">QQBI")
FRAGMENT_HEADER_LEN = FRAGMENT_HEADER.size  # 21
MESSAGE_HEADER_LEN = 40
BOM = b"\xef\xbb\xbf"
FLAG_START = 0x01
FLAG_END = 0x02
EMPTY_GUID = uuid.UUID(int=0)

# Message types the engine looks at before psrpcore does (C.3).
CREATE_PIPELINE = 0x00021006
GET_COMMAND_METADATA = 0x0002100A
PIPELINE_INPUT = 0x00041002
END_OF_PIPELINE_INPUT = 0x00041003
PIPELINE_OUTPUT = 0x00041004
PIPELINE_STATE = 0x00041006
DESTINATION_CLIENT = 1

# A single incoming message larger than this is refused (a broken or hostile client).
MAX_MESSAGE = 64 << 20


class FragmentError(ValueError):
    """The client's fragment stream is malformed (bad header, ids out of order, oversized)."""


@dataclass
class IncomingMessage:
    message_type: int
    pipeline_id: Optional[uuid.UUID]
    blob: bytes  # the whole message: 40-byte header + data

    @property
    def data(self) -> bytes:
        """The CLIXML payload, UTF-8 BOM removed."""
        data = self.blob[MESSAGE_HEADER_LEN:]
        return data[3:] if data.startswith(BOM) else data


def message_header(message_type: int, runspace_pool_id: uuid.UUID, pipeline_id: Optional[uuid.UUID]) -> bytes:
    """Header of a server-to-client message (destination client, .NET GUID byte order)."""
    return (
        struct.pack("<II", DESTINATION_CLIENT, message_type)
        + runspace_pool_id.bytes_le
        + (pipeline_id or EMPTY_GUID).bytes_le
    )


def whole_fragment(object_id: int, blob: bytes) -> bytes:
    """One fragment carrying a complete message (start and end set)."""
    return FRAGMENT_HEADER.pack(object_id, 0, FLAG_START | FLAG_END, len(blob)) + blob


def split_whole_fragments(data: bytes) -> List[bytes]:
    """Message blobs of a buffer made only of start+end fragments (what psrpcore's data_to_send() yields)."""
    blobs = []
    offset = 0
    while offset < len(data):
        _, fragment_id, flags, length = FRAGMENT_HEADER.unpack_from(data, offset)
        start = offset + FRAGMENT_HEADER_LEN
        if fragment_id != 0 or flags & (FLAG_START | FLAG_END) != FLAG_START | FLAG_END:
            raise FragmentError("expected whole-message fragments")
        blobs.append(data[start : start + length])
        offset = start + length
    return blobs


class Defragmenter:
    """Reassembles the client's fragments into messages (one per client ObjectId)."""

    def __init__(self) -> None:
        self._partial: Dict[int, Tuple[int, List[bytes], int]] = {}  # object id -> (next fragment id, parts, size)

    def feed(self, data: bytes) -> List[IncomingMessage]:
        messages = []
        offset = 0
        while offset < len(data):
            if len(data) - offset < FRAGMENT_HEADER_LEN:
                raise FragmentError("truncated fragment header")
            object_id, fragment_id, flags, length = FRAGMENT_HEADER.unpack_from(data, offset)
            start = offset + FRAGMENT_HEADER_LEN
            end = start + length
            if end > len(data):
                raise FragmentError("fragment runs past the end of its stream")
            part = data[start:end]
            offset = end
            expected, parts, size = self._partial.get(object_id, (0, [], 0))
            if fragment_id != expected:
                raise FragmentError(f"fragment {fragment_id} of object {object_id} arrived, expected {expected}")
            if (fragment_id == 0) != bool(flags & FLAG_START):
                raise FragmentError("start flag does not match the fragment id")
            size += length
            if size > MAX_MESSAGE:
                raise FragmentError("message too large")
            parts.append(part)
            if flags & FLAG_END:
                self._partial.pop(object_id, None)
                blob = b"".join(parts)
                if len(blob) < MESSAGE_HEADER_LEN:
                    raise FragmentError("message shorter than its header")
                (message_type,) = struct.unpack_from("<I", blob, 4)
                pipeline_id = uuid.UUID(bytes_le=bytes(blob[24:40]))
                messages.append(IncomingMessage(message_type, None if pipeline_id == EMPTY_GUID else pipeline_id, blob))
            else:
                self._partial[object_id] = (expected + 1, parts, size)
        return messages


def base64_length(raw: int) -> int:
    return 4 * ((raw + 2) // 3)


def largest_blob(chars: int) -> int:
    """Largest fragment blob whose base64 (with the 21-byte header) fits in ``chars`` characters."""
    return 3 * (chars // 4) - FRAGMENT_HEADER_LEN


class _Outgoing:
    __slots__ = ("object_id", "blob", "offset", "fragment_id")

    def __init__(self, object_id: int, blob: bytes) -> None:
        self.object_id = object_id
        self.blob = blob
        self.offset = 0
        self.fragment_id = 0


class OutQueue:
    """Whole messages waiting for one Receive target; fragmented when taken."""

    def __init__(self) -> None:
        self._items: Deque[_Outgoing] = deque()
        self.pending = 0  # bytes of message data not yet sent

    def __len__(self) -> int:
        return len(self._items)

    def push(self, object_id: int, blob: bytes) -> None:
        self._items.append(_Outgoing(object_id, blob))
        self.pending += len(blob)

    def clear(self) -> None:
        self._items.clear()
        self.pending = 0

    def drop_oldest(self, limit: int) -> int:
        """Discard the oldest messages not yet begun until at most ``limit`` bytes are pending (BufferMode
        Drop); a message already partly sent stays, so the client can still reassemble it. Returns how
        many messages went."""
        dropped = 0
        kept: Deque[_Outgoing] = deque()
        for item in self._items:
            if self.pending > limit and item.fragment_id == 0:
                self.pending -= len(item.blob)
                dropped += 1
            else:
                kept.append(item)
        self._items = kept
        return dropped

    def take(self, chars: int, per_fragment_chars: int, fragment_size: int) -> List[bytes]:
        """Fragments (header + blob each) whose base64 forms fit in ``chars`` characters.

        Each fragment will travel in its own element costing ``per_fragment_chars``
        besides its base64 text; fragment blobs are at most ``fragment_size``
        bytes. At least one fragment is always taken when anything is queued.
        """
        fragments: List[bytes] = []
        left = chars
        items = self._items
        pack = FRAGMENT_HEADER.pack
        while items:
            item = items[0]
            blob = item.blob
            offset = item.offset
            size = len(blob) - offset
            if size > fragment_size:
                size = fragment_size
            cost = per_fragment_chars + 4 * ((FRAGMENT_HEADER_LEN + size + 2) // 3)
            if cost > left:
                if fragments:
                    break
                size = max(1, min(size, largest_blob(left - per_fragment_chars)))
                cost = left
            end = offset + size == len(blob)
            flags = (FLAG_START if item.fragment_id == 0 else 0) | (FLAG_END if end else 0)
            header = pack(item.object_id, item.fragment_id, flags, size)
            fragments.append(header + blob if flags == FLAG_START | FLAG_END else header + blob[offset : offset + size])
            item.offset = offset + size
            item.fragment_id += 1
            left -= cost
            if end:
                items.popleft()
        self.pending -= sum(len(f) for f in fragments) - FRAGMENT_HEADER_LEN * len(fragments)
        return fragments
