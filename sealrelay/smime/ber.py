"""A bounded BER/DER element reader and a DER header writer for the outer layers of CMS.

asn1crypto copies every nested element's contents when it parses, so a 25 MB EnvelopedData
would be duplicated once per nesting level. This reader works on a memoryview of the input,
never copies, and hands out the offsets of each element; asn1crypto is then used only for
small parts cut out of the input (algorithm parameters, names, a KeyAgreeRecipientInfo).

Every limit violation raises `MalformedMessage`: a declared length beyond the input, a
primitive element with indefinite length, nesting deeper than `MAX_DEPTH`, missing end-of-
contents octets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from sealrelay.smime.errors import MalformedMessage


# Real CMS nests about a dozen levels; gpgsm and openssl's chunked octet strings add one or two.
MAX_DEPTH = 32

UNIVERSAL = 0
CONTEXT = 2

TAG_INTEGER = 2
TAG_OCTET_STRING = 4
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17


class Element(NamedTuple):
    """One TLV: offsets into the buffer it was read from.

    (A NamedTuple: the reader makes dozens per message, and a frozen attrs class costs several
    times as much to build.)
    """

    tag_class: int
    constructed: bool
    tag: int
    start: int
    #: Where the identifier octets end and the length octets begin.
    identifier_end: int
    content_start: int
    #: Where the contents end: the end-of-contents octets for an indefinite-length element.
    content_end: int
    end: int
    indefinite: bool

    def is_(self, tag_class: int, tag: int) -> bool:
        return self.tag_class == tag_class and self.tag == tag


# Builds an Element from a tuple of its fields without the generated __new__, which takes
# twice as long for the dozens of elements of every message.
_tuple_new = tuple.__new__


class Reader:
    """Reads elements out of one buffer, within a budget of element reads.

    Finding the end of an indefinite-length element means walking everything inside it, and
    each level of CMS nesting walks the chunked content again. The budget bounds that work, so
    a message made of millions of tiny chunks fails fast instead of keeping a worker busy.
    """

    def __init__(self, buf: memoryview, max_reads: int) -> None:
        self.buf = buf
        self._reads_left = max_reads

    def element(self, pos: int, limit: int, depth: int = 0) -> Element:
        """The element starting at `pos`, which must end at or before `limit`."""
        self._reads_left -= 1
        if depth > MAX_DEPTH or self._reads_left < 0:
            raise MalformedMessage(
                "ASN.1 structure is nested too deeply"
                if depth > MAX_DEPTH
                else "ASN.1 structure has too many elements"
            )
        start = pos
        if pos + 2 > limit:
            raise MalformedMessage("ASN.1 data is truncated")
        buf = self.buf
        first = buf[pos]
        # One-octet tags and lengths of up to two octets are read inline: this runs for every
        # element of every message, and the method calls cost as much as the reading.
        if first & 0x1F == 0x1F:
            tag, pos = self._long_tag_number(pos + 1, limit)
        else:
            tag, pos = first & 0x1F, pos + 1
        identifier_end = pos
        constructed = bool(first & 0x20)
        if pos >= limit:
            raise MalformedMessage("ASN.1 data is truncated")
        length_octet = buf[pos]
        if length_octet < 0x80:
            length, pos = length_octet, pos + 1
        elif length_octet == 0x81 and pos + 2 <= limit:
            length, pos = buf[pos + 1], pos + 2
        elif length_octet == 0x82 and pos + 3 <= limit:
            length, pos = (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
        elif length_octet == 0x80:
            if not constructed:
                raise MalformedMessage("primitive ASN.1 element with indefinite length")
            end = self._end_of_contents(pos + 1, limit, depth)
            return _tuple_new(
                Element,
                (first >> 6, constructed, tag, start, identifier_end, pos + 1, end, end + 2, True),
            )
        else:
            length, pos = self._long_length(pos, limit)
        if length > limit - pos:
            raise MalformedMessage("ASN.1 length is larger than the data")
        end = pos + length
        return _tuple_new(
            Element, (first >> 6, constructed, tag, start, identifier_end, pos, end, end, False)
        )

    def _long_tag_number(self, pos: int, limit: int) -> tuple[int, int]:
        """The high-tag-number form: base-128 octets after the identifier octet."""
        tag = 0
        for _ in range(4):  # tags above 2**28 never occur in CMS
            if pos >= limit:
                raise MalformedMessage("ASN.1 data is truncated")
            octet = self.buf[pos]
            pos += 1
            tag = (tag << 7) | (octet & 0x7F)
            if not octet & 0x80:
                return tag, pos
        raise MalformedMessage("ASN.1 tag number is too large")

    def _long_length(self, pos: int, limit: int) -> tuple[int, int]:
        """The long form: an octet 0x80 + n, then n octets of length."""
        count = self.buf[pos] & 0x7F
        pos += 1
        # Eight length octets already exceed any input we accept; more is hostile or broken.
        if count > 8 or pos + count > limit:
            raise MalformedMessage("ASN.1 length is invalid or larger than the data")
        return int.from_bytes(self.buf[pos : pos + count], "big"), pos + count

    def _end_of_contents(self, pos: int, limit: int, depth: int) -> int:
        buf = self.buf
        while True:
            if pos + 2 > limit:
                raise MalformedMessage("ASN.1 indefinite-length element is not terminated")
            if buf[pos] == 0 and buf[pos + 1] == 0:
                return pos
            pos = self.element(pos, limit, depth + 1).end

    def children(self, parent: Element, depth: int = 0) -> Iterator[Element]:
        """The elements directly inside a constructed element, in order."""
        if not parent.constructed:
            raise MalformedMessage("expected a constructed ASN.1 element")
        pos = parent.content_start
        while pos < parent.content_end:
            child = self.element(pos, parent.content_end, depth + 1)
            yield child
            pos = child.end

    def octet_string_chunks(self, element: Element, depth: int = 0) -> Iterator[memoryview]:
        """The payload of an OCTET STRING (under any tag), primitive or BER constructed."""
        if not element.constructed:
            yield self.buf[element.content_start : element.content_end]
            return
        if depth > MAX_DEPTH:
            raise MalformedMessage("ASN.1 structure is nested too deeply")
        for chunk in self.children(element, depth):
            if not chunk.is_(UNIVERSAL, TAG_OCTET_STRING):
                raise MalformedMessage("constructed OCTET STRING holds something else")
            yield from self.octet_string_chunks(chunk, depth + 1)

    def octets(self, element: Element) -> bytes:
        """The payload of an OCTET STRING (under any tag) in one piece."""
        if not element.constructed:
            return bytes(self.buf[element.content_start : element.content_end])
        return b"".join(self.octet_string_chunks(element))

    def bytes_of(self, element: Element) -> bytes:
        """A copy of the whole element (header included)."""
        return bytes(self.buf[element.start : element.end])

    def definite(self, element: Element, depth: int = 0) -> bytes:
        """A copy of a small element with every length definite, for asn1crypto.

        asn1crypto mis-parses indefinite-length elements under a CHOICE (RecipientInfo, rid),
        although BER senders may legitimately use them anywhere.
        """
        encoded = self.bytes_of(element)
        # An indefinite length is the single length octet 0x80: where no such octet occurs at
        # all, every length inside is already definite (and DER senders never use one).
        if not element.constructed or (not element.indefinite and 0x80 not in encoded):
            return encoded
        body = b"".join(self.definite(child, depth + 1) for child in self.children(element, depth))
        identifier = bytes(self.buf[element.start : element.identifier_end])
        return identifier + encode_length(len(body)) + body


class Fields:
    """The elements of a SEQUENCE, taken in order with optional ones skipped over."""

    __slots__ = ("_elements", "_next")

    def __init__(self, reader: Reader, parent: Element, max_count: int) -> None:
        if not parent.constructed:
            raise MalformedMessage("expected a constructed ASN.1 element")
        # `children` inlined: a generator per SEQUENCE costs more than reading its fields.
        elements: list[Element] = []
        pos, end = parent.content_start, parent.content_end
        while pos < end:
            if len(elements) == max_count:
                raise MalformedMessage("ASN.1 SEQUENCE has more fields than allowed")
            child = reader.element(pos, end, 1)
            elements.append(child)
            pos = child.end
        self._elements = elements
        self._next = 0

    def take(self, tag_class: int, tag: int, *, optional: bool = False) -> Element | None:
        if self._next < len(self._elements):
            element = self._elements[self._next]
            if element.tag == tag and element.tag_class == tag_class:
                self._next += 1
                return element
        if optional:
            return None
        raise MalformedMessage(f"ASN.1 field missing or out of order (expected tag {tag})")

    def require(self, tag_class: int, tag: int) -> Element:
        # `take` inlined for the common case: a required field is taken for almost every
        # element of a message.
        index = self._next
        if index < len(self._elements):
            element = self._elements[index]
            if element.tag == tag and element.tag_class == tag_class:
                self._next = index + 1
                return element
        raise MalformedMessage(f"ASN.1 field missing or out of order (expected tag {tag})")

    def end(self) -> None:
        if self._next != len(self._elements):
            raise MalformedMessage("unexpected field at the end of an ASN.1 SEQUENCE")


def encode_length(length: int) -> bytes:
    """DER length octets."""
    if length < 0x80:
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_header(identifier: int, length: int) -> bytes:
    """The DER identifier and length octets of an element with a one-byte tag."""
    return bytes((identifier,)) + encode_length(length)
