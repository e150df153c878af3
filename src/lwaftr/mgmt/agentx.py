"""AgentX (RFC 2741) for a subagent: PDUs encoded and decoded, sans I/O.

Only what a read-only subagent needs: Open, Close, Register, Notify and Ping
going out; Get, GetNext, GetBulk, the Set phases (refused: nothing here is
writable), Close and Response coming in.  Every PDU we send carries
NETWORK_BYTE_ORDER; a PDU received is decoded in the byte order its header
says (RFC 2741 5.1).  :func:`split` cuts PDUs off a byte stream; the socket
belongs to the caller (:mod:`lwaftr.mgmt.snmp`).

Why not a library: the PyPI subagents are unmaintained (``pyagentx`` 2015,
its forks ``pyagentx2``/``pyagentx3`` last released in 2023, with a thread per
updater and a GetNext that compares OIDs component by component wrongly;
``netsnmpagent`` 2017, ctypes into net-snmp's internal structures), and
``pysnmp`` has no AgentX.  The PDU format is small and fixed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

OID = tuple[int, ...]

# PDU types (RFC 2741 6.1)
OPEN, CLOSE, REGISTER, UNREGISTER, GET, GETNEXT, GETBULK = 1, 2, 3, 4, 5, 6, 7
TESTSET, COMMITSET, UNDOSET, CLEANUPSET, NOTIFY, PING = 8, 9, 10, 11, 12, 13
INDEX_ALLOCATE, INDEX_DEALLOCATE, ADD_AGENT_CAPS, REMOVE_AGENT_CAPS, RESPONSE = 14, 15, 16, 17, 18

# header flags
INSTANCE_REGISTRATION, NEW_INDEX, ANY_INDEX, NON_DEFAULT_CONTEXT, NETWORK_BYTE_ORDER = 1, 2, 4, 8, 16

# value types (RFC 2741 5.4)
INTEGER, OCTET_STRING, NULL, OBJECT_IDENTIFIER = 2, 4, 5, 6
IP_ADDRESS, COUNTER32, GAUGE32, TIME_TICKS, OPAQUE, COUNTER64 = 64, 65, 66, 67, 68, 70
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 128, 129, 130

# Response errors (RFC 2741 6.2.16)
NO_ERROR, GEN_ERR, NOT_WRITABLE = 0, 5, 17
OPEN_FAILED, NOT_OPEN, DUPLICATE_REGISTRATION, REQUEST_DENIED = 256, 257, 263, 267

# Close reasons
REASON_OTHER, REASON_SHUTDOWN = 1, 5

HEADER = 20
#: The internet prefix 1.3.6.1 that an OID's ``prefix`` byte stands for.
INTERNET = (1, 3, 6, 1)


class AgentXError(ValueError):
    """A malformed PDU."""


@dataclass
class VarBind:
    oid: OID
    type: int
    value: object = None       # int, bytes, OID or None


@dataclass
class Pdu:
    """A decoded PDU: the header, and what its type carries."""
    type: int
    flags: int
    session: int
    transaction: int
    packet: int
    context: bytes | None = None
    ranges: list[tuple[OID, bool, OID]] = field(default_factory=list)   # (start, include, end)
    varbinds: list[VarBind] = field(default_factory=list)
    non_repeaters: int = 0
    max_repetitions: int = 0
    error: int = 0            # Response
    index: int = 0            # Response
    reason: int = 0           # Close


# --- encoding (always network byte order) -----------------------------------------------------------

def encode_oid(oid: OID, include: bool = False) -> bytes:
    oid = tuple(oid)
    prefix = 0
    if len(oid) >= 5 and oid[:4] == INTERNET and 0 < oid[4] < 256:
        prefix, oid = oid[4], oid[5:]
    return struct.pack("!BBBx", len(oid), prefix, int(include)) + struct.pack(f"!{len(oid)}I", *oid)


def encode_octets(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data + b"\0" * (-len(data) % 4)


def encode_varbind(vb: VarBind) -> bytes:
    head = struct.pack("!Hxx", vb.type) + encode_oid(vb.oid)
    t, v = vb.type, vb.value
    if t in (INTEGER, COUNTER32, GAUGE32, TIME_TICKS):
        return head + struct.pack("!I", int(v) & 0xFFFFFFFF)
    if t == COUNTER64:
        return head + struct.pack("!Q", int(v) & 0xFFFFFFFFFFFFFFFF)
    if t in (OCTET_STRING, IP_ADDRESS, OPAQUE):
        return head + encode_octets(bytes(v))
    if t == OBJECT_IDENTIFIER:
        return head + encode_oid(v)
    if t in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return head
    raise ValueError(f"AgentX value type {t} is not supported")


def encode(type_: int, payload: bytes, *, session: int = 0, transaction: int = 0, packet: int = 0,
           flags: int = 0) -> bytes:
    return struct.pack("!BBBxIIII", 1, type_, flags | NETWORK_BYTE_ORDER, session, transaction, packet,
                       len(payload)) + payload


def open_pdu(packet: int, timeout: int, ident: OID, descr: str) -> bytes:
    return encode(OPEN, struct.pack("!Bxxx", timeout) + encode_oid(ident) + encode_octets(descr.encode()),
                  packet=packet)


def close_pdu(session: int, packet: int, reason: int = REASON_SHUTDOWN) -> bytes:
    return encode(CLOSE, struct.pack("!Bxxx", reason), session=session, packet=packet)


def register_pdu(session: int, packet: int, subtree: OID, *, priority: int = 127, timeout: int = 0,
                 range_subid: int = 0, upper_bound: int = 0, instance: bool = False) -> bytes:
    """Register ``subtree``; with ``range_subid`` (1-based position of a
    sub-identifier of ``subtree``), every subtree whose sub-identifier there
    runs from its value in ``subtree`` to ``upper_bound``."""
    payload = struct.pack("!BBBx", timeout, priority, range_subid) + encode_oid(subtree)
    if range_subid:
        payload += struct.pack("!I", upper_bound)
    return encode(REGISTER, payload, session=session, packet=packet,
                  flags=INSTANCE_REGISTRATION if instance else 0)


def notify_pdu(session: int, packet: int, varbinds: list[VarBind]) -> bytes:
    return encode(NOTIFY, b"".join(map(encode_varbind, varbinds)), session=session, packet=packet)


def ping_pdu(session: int, packet: int) -> bytes:
    return encode(PING, b"", session=session, packet=packet)


def response_pdu(request: Pdu, varbinds: list[VarBind], error: int = NO_ERROR, index: int = 0) -> bytes:
    return encode(RESPONSE, struct.pack("!IHH", 0, error, index) + b"".join(map(encode_varbind, varbinds)),
                  session=request.session, transaction=request.transaction, packet=request.packet)


# --- decoding -----------------------------------------------------------------------------------

def split(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete PDUs at the start of ``buf``, and what is left (part of the next)."""
    out, pos = [], 0
    while len(buf) - pos >= HEADER:
        if buf[pos] != 1:
            raise AgentXError(f"AgentX version {buf[pos]}, expected 1")
        big = buf[pos + 2] & NETWORK_BYTE_ORDER
        length = struct.unpack_from("!I" if big else "<I", buf, pos + 16)[0]
        if len(buf) - pos < HEADER + length:
            break
        out.append(buf[pos:pos + HEADER + length])
        pos += HEADER + length
    return out, buf[pos:]


class _Reader:
    def __init__(self, data: bytes, big: bool) -> None:
        self.data, self.pos, self.e = data, 0, "!" if big else "<"

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(self.e + fmt)
        if self.pos + size > len(self.data):
            raise AgentXError("truncated AgentX PDU")
        v = struct.unpack_from(self.e + fmt, self.data, self.pos)
        self.pos += size
        return v

    def more(self) -> bool:
        return self.pos < len(self.data)

    def oid(self) -> tuple[OID, bool]:
        n, prefix, include = self.take("BBBx")
        sub = self.take(f"{n}I") if n else ()
        return ((*INTERNET, prefix, *sub) if prefix else tuple(sub)), bool(include)

    def octets(self) -> bytes:
        (n,) = self.take("I")
        if self.pos + n > len(self.data):
            raise AgentXError("truncated AgentX octet string")
        v = self.data[self.pos:self.pos + n]
        self.pos += n + (-n % 4)
        return v

    def varbind(self) -> VarBind:
        (t,) = self.take("Hxx")
        oid, _ = self.oid()
        if t in (INTEGER, COUNTER32, GAUGE32, TIME_TICKS):
            return VarBind(oid, t, self.take("I")[0])
        if t == COUNTER64:
            return VarBind(oid, t, self.take("Q")[0])
        if t in (OCTET_STRING, IP_ADDRESS, OPAQUE):
            return VarBind(oid, t, self.octets())
        if t == OBJECT_IDENTIFIER:
            return VarBind(oid, t, self.oid()[0])
        if t in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
            return VarBind(oid, t)
        raise AgentXError(f"unknown AgentX value type {t}")


def decode(pdu: bytes) -> Pdu:
    """One whole PDU (as :func:`split` cuts them)."""
    if len(pdu) < HEADER or pdu[0] != 1:
        raise AgentXError("not an AgentX version 1 PDU")
    type_, flags = pdu[1], pdu[2]
    big = bool(flags & NETWORK_BYTE_ORDER)
    session, transaction, packet, length = struct.unpack_from("!IIII" if big else "<IIII", pdu, 4)
    r = _Reader(pdu[HEADER:HEADER + length], big)
    p = Pdu(type_, flags, session, transaction, packet)
    if flags & NON_DEFAULT_CONTEXT and type_ in (GET, GETNEXT, GETBULK, TESTSET, NOTIFY, REGISTER):
        p.context = r.octets()
    if type_ == GETBULK:
        p.non_repeaters, p.max_repetitions = r.take("HH")
    if type_ in (GET, GETNEXT, GETBULK):
        while r.more():
            start, include = r.oid()
            end, _ = r.oid()
            p.ranges.append((start, include, end))
    elif type_ == RESPONSE:
        _uptime, p.error, p.index = r.take("IHH")
        while r.more():
            p.varbinds.append(r.varbind())
    elif type_ in (TESTSET, NOTIFY):
        while r.more():
            p.varbinds.append(r.varbind())
    elif type_ == CLOSE:
        (p.reason,) = r.take("Bxxx")
    return p
