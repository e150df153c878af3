"""NETCONF messages, sans I/O: framing (RFC 6242), hello, replies and errors (RFC 6241).

:class:`Framer` splits the byte stream of a session into messages: end-of-
message framing (``]]>]]>``) until both hellos are exchanged, then chunked
framing when both peers announced ``base:1.1``.  :func:`parse_xml` reads a
message with a parser that loads no DTD, expands no entity and refuses a
DOCTYPE.  :class:`RpcError` is one ``<rpc-error>``; :func:`reply` and
:func:`error_reply` build ``<rpc-reply>`` messages that echo the attributes of
the ``<rpc>`` (``message-id`` first of all).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
BASE_10 = "urn:ietf:params:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"
CAP = "urn:ietf:params:netconf:capability:"
WRITABLE_RUNNING = CAP + "writable-running:1.0"
CANDIDATE = CAP + "candidate:1.0"
VALIDATE = CAP + "validate:1.1"
VALIDATE_10 = CAP + "validate:1.0"
ROLLBACK_ON_ERROR = CAP + "rollback-on-error:1.0"
CONFIRMED_COMMIT = CAP + "confirmed-commit:1.1"
WITH_DEFAULTS = CAP + "with-defaults:1.0?basic-mode=report-all"
NCM = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"       # RFC 6022
NCWD = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"   # RFC 6243
MONITORING = f"{NCM}?module=ietf-netconf-monitoring&revision=2010-10-04"
NOTIFICATION = CAP + "notification:1.0"                         # RFC 5277
NCEVENT = "urn:ietf:params:xml:ns:netconf:notification:1.0"
NCN = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"  # RFC 6470

EOM = b"]]>]]>"
#: the largest message accepted (a whole configuration with a big binding table fits)
MAX_MESSAGE = 256 << 20

XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class FramingError(ValueError):
    """The byte stream is not framed as RFC 6242 says: the session ends."""


class Framer:
    """Bytes in (:meth:`feed`), whole messages out (:meth:`next`).  ``chunked``
    switches to RFC 6242 section 4.2 framing; the session sets it once the
    hellos are exchanged and both peers speak base:1.1 (between two calls of
    :meth:`next`, so bytes after the hello are read the new way)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.chunked = False
        self.max_message = max_message
        self._parts: list[bytes] = []       # chunks of the message being received
        self._size = 0

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> bytes | None:
        """The next whole message, or None until more bytes come (FramingError if badly framed)."""
        return self._next_chunked() if self.chunked else self._next_eom()

    def pending(self) -> int:
        """Bytes of an unfinished message held (0 between messages)."""
        return len(self.buf) + self._size

    def _next_eom(self) -> bytes | None:
        i = self.buf.find(EOM)
        if i < 0:
            if len(self.buf) > self.max_message:
                raise FramingError(f"message larger than {self.max_message} bytes")
            return None
        msg = bytes(self.buf[:i])
        del self.buf[:i + len(EOM)]
        return msg

    def _next_chunked(self) -> bytes | None:
        buf = self.buf
        while True:
            if not buf:
                return None
            if buf[:1] != b"\n" or (len(buf) > 1 and buf[1:2] != b"#"):
                raise FramingError("expected a chunk header (LF '#')")
            if len(buf) < 3:
                return None
            if buf[2:3] == b"#":                    # end of chunks
                if len(buf) < 4:
                    return None
                if buf[3:4] != b"\n":
                    raise FramingError("bad end-of-chunks marker")
                del buf[:4]
                if not self._parts:
                    raise FramingError("end-of-chunks without a chunk")
                msg = b"".join(self._parts)
                self._parts, self._size = [], 0
                return msg
            j = buf.find(b"\n", 2, 14)
            digits = bytes(buf[2:j if j >= 0 else 14])
            if not digits.isdigit() or digits[:1] == b"0" or len(digits) > 10:
                raise FramingError("bad chunk size")
            if j < 0:
                return None
            size = int(digits)
            if size > 4294967295:
                raise FramingError("chunk size out of range")
            if self._size + size > self.max_message:
                raise FramingError(f"message larger than {self.max_message} bytes")
            start = j + 1
            if len(buf) < start + size:
                return None
            self._parts.append(bytes(buf[start:start + size]))
            self._size += size
            del buf[:start + size]


def frame(msg: bytes, chunked: bool) -> bytes:
    """``msg`` framed for sending."""
    if not chunked:
        return msg + EOM
    return b"\n#%d\n" % len(msg) + msg + b"\n##\n" if msg else b"\n##\n"


# --- XML ------------------------------------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                          huge_tree=True, remove_comments=True, remove_pis=True)


class MalformedMessage(ValueError):
    """Not well-formed XML, or XML that is not a NETCONF message."""


def parse_xml(data: bytes) -> etree._Element:
    """A message as an element (MalformedMessage if it is not well-formed or has a DOCTYPE)."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as e:
        raise MalformedMessage(f"not well-formed XML: {e}") from None
    except ValueError as e:
        raise MalformedMessage(str(e)) from None
    if root is None:
        raise MalformedMessage("empty message")
    if root.getroottree().docinfo.doctype:
        raise MalformedMessage("a DOCTYPE is not allowed in a NETCONF message")
    return root


def qn(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ns_of(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def elements(e: etree._Element) -> list[etree._Element]:
    """The child elements of ``e`` (no comments, no processing instructions)."""
    return [c for c in e if isinstance(c.tag, str)]


def tostring(e: etree._Element) -> bytes:
    return etree.tostring(e, encoding="UTF-8")


# --- hello ----------------------------------------------------------------------------------------

def hello(capabilities: list[str], session_id: int) -> bytes:
    root = etree.Element(qn(NC, "hello"), nsmap={None: NC})
    caps = etree.SubElement(root, qn(NC, "capabilities"))
    for c in capabilities:
        etree.SubElement(caps, qn(NC, "capability")).text = c
    etree.SubElement(root, qn(NC, "session-id")).text = str(session_id)
    return XML_DECL + tostring(root)


def parse_hello(data: bytes) -> list[str]:
    """The capabilities of a client's hello; MalformedMessage if it is not a valid one."""
    root = parse_xml(data)
    if root.tag != qn(NC, "hello"):
        raise MalformedMessage("expected <hello>")
    if root.find(qn(NC, "session-id")) is not None:
        raise MalformedMessage("a client's <hello> has no <session-id>")
    caps = root.find(qn(NC, "capabilities"))
    if caps is None:
        raise MalformedMessage("<hello> without <capabilities>")
    out = [(c.text or "").strip() for c in caps.findall(qn(NC, "capability"))]
    if BASE_10 not in out and BASE_11 not in out:
        raise MalformedMessage("the client speaks neither base:1.0 nor base:1.1")
    return out


# --- errors and replies ---------------------------------------------------------------------------

@dataclass
class RpcError(Exception):
    """One ``<rpc-error>`` (RFC 6241 section 4.3 and appendix A)."""
    tag: str
    message: str
    type: str = "application"
    path: str | None = None                       # absolute XPath of the node
    nsmap: dict[str, str] = field(default_factory=dict)   # prefixes used in ``path``
    info: list[tuple[str, str]] = field(default_factory=list)   # (element, text) in error-info
    app_tag: str | None = None
    severity: str = "error"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.tag}: {self.path + ': ' if self.path else ''}{self.message}"

    def element(self) -> etree._Element:
        e = etree.Element(qn(NC, "rpc-error"), nsmap={None: NC})
        etree.SubElement(e, qn(NC, "error-type")).text = self.type
        etree.SubElement(e, qn(NC, "error-tag")).text = self.tag
        etree.SubElement(e, qn(NC, "error-severity")).text = self.severity
        if self.app_tag:
            etree.SubElement(e, qn(NC, "error-app-tag")).text = self.app_tag
        if self.path:
            p = etree.SubElement(e, qn(NC, "error-path"), nsmap=self.nsmap or None)
            p.text = self.path
        m = etree.SubElement(e, qn(NC, "error-message"))
        m.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        m.text = self.message
        if self.info:
            info = etree.SubElement(e, qn(NC, "error-info"))
            for name, text in self.info:
                etree.SubElement(info, qn(NC, name)).text = text
        return e


def _reply_root(rpc_attrs: dict[str, str] | None) -> etree._Element:
    root = etree.Element(qn(NC, "rpc-reply"), nsmap={None: NC})
    for k, v in (rpc_attrs or {}).items():
        root.set(k, v)
    return root


def reply(rpc_attrs: dict[str, str] | None, body: etree._Element | None = None) -> bytes:
    """``<rpc-reply>`` with ``body`` (default ``<ok/>``)."""
    root = _reply_root(rpc_attrs)
    if body is None:
        etree.SubElement(root, qn(NC, "ok"))
    else:
        root.append(body)
    return XML_DECL + tostring(root)


def error_reply(rpc_attrs: dict[str, str] | None, errors: list[RpcError]) -> bytes:
    root = _reply_root(rpc_attrs)
    for err in errors:
        root.append(err.element())
    return XML_DECL + tostring(root)
