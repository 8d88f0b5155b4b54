"""ICAO Doc 9303 Part 10 (8th ed., 2021) Logical Data Structure 1: EF.COM, DG1, DG2 — build and parse.

* the LDS1 eMRTD application is selected by its AID ``A0 00 00 02 47 10 01`` (9303-10, LDS1 application
  selection);
* its elementary files have fixed FIDs and short EF identifiers (9303-10, LDS1 file table): EF.COM 011E
  (SFI 1E), EF.SOD 011D (SFI 1D), DGn 01nn (SFI n);
* EF.COM (9303-10 §4.6.1) is ``60 { 5F01 LDS version "aabb", 5F36 Unicode version "aabbcc", 5C tag list }``;
  the versions are ASCII digits (Part 11 Appendix D.4 reads ``60145F0104303130365F3606303430303030
  5C026175`` = LDS 1.6, Unicode 4.0.0, DG1 and DG2);
* DG1 (9303-10 §4.7.1) is ``61 { 5F1F MRZ }`` — for a TD3 document the two 44-character lines, concatenated;
* DG2 (9303-10 §4.7.2) is ``75 { 7F61 { 02 count, 7F60 { A1 biometric header template, 5F2E biometric
  data block } ... } }``; the header carries the ICAO header version (80), the biometric type (81, 02 =
  facial features, CBEFF / ISO/IEC 19785-3), the format owner (87, 0101 = ISO/IEC JTC 1/SC 37) and the
  format type (88, 0008 = face image); the data block is an ISO/IEC 19794-5:2005 facial record holding the
  JPEG or JPEG 2000 image.

Everything here is bytes in, bytes out: no I/O. :class:`LdsError` names the file and the element that is
wrong; it never contains MRZ text (personal data).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cardkit.errors import ParseError, RecordError, TlvError
from cardkit.profiles.mrz import LINE_LENGTH, Td3
from cardkit.tlv import Tlv, ber_build, ber_decode_one, ber_encode

__all__ = [
    "AID",
    "COM",
    "DG_TAGS",
    "LDS_VERSION",
    "SOD",
    "UNICODE_VERSION",
    "EfCom",
    "FaceImage",
    "LdsError",
    "LdsFile",
    "data_group_of_tag",
    "dg1",
    "dg2",
    "ef_com",
    "face_record",
    "image_size",
    "lds_file",
    "parse_dg1",
    "parse_dg2",
    "parse_ef_com",
]

log = logging.getLogger(__name__)

#: ICAO 9303-10 (LDS1 application selection): AID of the LDS1 eMRTD application (RID A000000247 = ICAO, PIX 1001).
AID = bytes.fromhex("A0000002471001")
#: ICAO 9303-10 §4.6.1: LDS version 1.7 and Unicode version 4.0.0, as ASCII digits.
LDS_VERSION = "0107"
UNICODE_VERSION = "040000"

# ICAO 9303-10 §4.6.1 / §4.7: the tags of EF.COM, EF.SOD and the data groups.
TAG_COM = 0x60
TAG_SOD = 0x77
TAG_LDS_VERSION = 0x5F01
TAG_UNICODE_VERSION = 0x5F36
TAG_TAG_LIST = 0x5C
TAG_MRZ = 0x5F1F
# ICAO 9303-10 §4.7.2 (DG2) and ISO/IEC 7816-11 biometric templates.
TAG_BIT_GROUP = 0x7F61  # biometric information group template
TAG_BIT = 0x7F60  # biometric information template
TAG_BIT_COUNT = 0x02  # number of instances
TAG_BHT = 0xA1  # biometric header template
TAG_BDB = 0x5F2E  # biometric data block
TAG_BDB_ENCIPHERED = 0x7F2E
TAG_BHT_VERSION = 0x80  # ICAO header version
TAG_BHT_TYPE = 0x81  # biometric type
TAG_BHT_OWNER = 0x87  # format owner
TAG_BHT_FORMAT = 0x88  # format type
BHT_VERSION = b"\x01\x01"
BIOMETRIC_TYPE_FACE = b"\x02"  # CBEFF biometric type "facial features" (ISO/IEC 19785-3)
FORMAT_OWNER_SC37 = b"\x01\x01"  # ISO/IEC JTC 1/SC 37
FORMAT_TYPE_FACE = b"\x00\x08"  # ISO/IEC 19794-5 face image

#: ICAO 9303-10 §4.7: data group number -> tag.
DG_TAGS: dict[int, int] = {1: 0x61, 2: 0x75, 3: 0x63, 4: 0x76, 5: 0x65, 6: 0x66, 7: 0x67, 8: 0x68, 9: 0x69,
                           10: 0x6A, 11: 0x6B, 12: 0x6C, 13: 0x6D, 14: 0x6E, 15: 0x6F, 16: 0x70}
_TAG_DGS = {tag: dg for dg, tag in DG_TAGS.items()}

# ISO/IEC 19794-5:2005 §5.4-§5.7: facial record (general header, facial information, image information).
_FAC_FORMAT = b"FAC\x00"
_FAC_VERSION = b"010\x00"
_FAC_HEADER = 14  # format 4, version 4, record length 4, number of facial images 2
_FAC_INFO = 20  # record data length 4, feature points 2, gender, eye, hair, mask 3, expression 2, pose 3+3
_FAC_IMAGE_INFO = 12  # face image type, image data type, width 2, height 2, colour space, source, device 2, quality 2
_FAC_FULL_FRONTAL = 0x01  # §5.7.1 face image type
_FAC_SOURCE_DIGITAL_CAMERA = 0x02  # §5.7.6 source type "static photograph from a digital still-image camera"
_FAC_COLOUR_RGB24 = 0x01  # §5.7.5 image colour space
_IMAGE_TYPES = {"jpeg": 0x00, "jpeg2000": 0x01}  # §5.7.2 image data type
_IMAGE_TYPE_NAMES = {v: k for k, v in _IMAGE_TYPES.items()}


class LdsError(ParseError):
    """An LDS object (EF.COM, a data group, EF.SOD) that is not well formed, or a value that cannot go into one.

    The message names the file and the element; it never holds MRZ text or image bytes.
    """


@dataclass(frozen=True)
class LdsFile:
    """An elementary file of the LDS1 application: name ("EF.COM", "DG1" ...), FID, SFI and BER tag."""

    name: str
    fid: bytes
    sfi: int
    tag: int
    data_group: int | None = None


#: ICAO 9303-10 (LDS1 file table): EF.COM (011E, SFI 1E) and EF.SOD (011D, SFI 1D).
COM = LdsFile("EF.COM", bytes.fromhex("011E"), 0x1E, TAG_COM)
SOD = LdsFile("EF.SOD", bytes.fromhex("011D"), 0x1D, TAG_SOD)


def lds_file(name: str | int) -> LdsFile:
    """The LDS file for ``"EF.COM"``, ``"EF.SOD"``, ``"DG1"``..``"DG16"`` or a data group number 1..16."""
    if name in ("EF.COM", "COM"):
        return COM
    if name in ("EF.SOD", "SOD"):
        return SOD
    number = name if isinstance(name, int) else (int(name[2:]) if name[:2] == "DG" and name[2:].isdigit() else 0)
    if number not in DG_TAGS:
        raise LdsError(f"{name!r} is not an LDS1 file (EF.COM, EF.SOD, DG1..DG16)")
    # ICAO 9303-10 (LDS1 file table): DGn has FID 01nn (hex) and SFI n.
    return LdsFile(f"DG{number}", bytes((0x01, number)), number, DG_TAGS[number], number)


def data_group_of_tag(tag: int) -> int:
    """The data group number of an LDS tag (``0x61`` -> 1); LdsError for other tags."""
    try:
        return _TAG_DGS[tag]
    except KeyError:
        raise LdsError(f"tag {tag:02X} is not a data group tag (ICAO 9303-10 §4.7)") from None


def _decode(data: bytes, tag: int, what: str) -> Tlv:
    if not isinstance(data, (bytes, bytearray)):
        raise LdsError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        obj, used = ber_decode_one(bytes(data))
    except TlvError as exc:
        raise LdsError(f"{what} is not BER-TLV: {exc}") from None
    if obj.tag != tag:
        raise LdsError(f"{what} must start with tag {tag:02X}, found {obj.tag:02X}")
    if used != len(data):
        raise LdsError(f"{what} has {len(data) - used} byte(s) after its data object")
    return obj


def _child(obj: Tlv, tag: int, what: str) -> Tlv:
    try:
        found = obj.find(tag)
    except TlvError as exc:
        raise LdsError(f"{what}: {exc}") from None
    if found is None:
        raise LdsError(f"{what} has no data object {tag:02X}")
    return found


# ---------------------------------------------------------------------------------------------- EF.COM


@dataclass(frozen=True)
class EfCom:
    """The decoded EF.COM: versions as printed ("0107", "040000") and the data groups present."""

    lds_version: str
    unicode_version: str
    data_groups: tuple[int, ...]


def _version(value: str, digits: int, what: str) -> bytes:
    if not (isinstance(value, str) and len(value) == digits and value.isdigit()):
        raise LdsError(f"EF.COM {what} must be {digits} digits, got {value!r}")
    return value.encode("ascii")


def ef_com(data_groups: Iterable[int], *, lds_version: str = LDS_VERSION,
           unicode_version: str = UNICODE_VERSION) -> bytes:
    """EF.COM (ICAO 9303-10 §4.6.1) listing ``data_groups`` (numbers 1..16) in the order given."""
    groups = list(data_groups)
    for dg in groups:
        if dg not in DG_TAGS:
            raise LdsError(f"EF.COM: data group {dg!r} is not 1..16")
    if len(set(groups)) != len(groups):
        raise LdsError("EF.COM: a data group is listed twice")
    return ber_build(TAG_COM, [
        ber_encode(TAG_LDS_VERSION, _version(lds_version, 4, "LDS version")),
        ber_encode(TAG_UNICODE_VERSION, _version(unicode_version, 6, "Unicode version")),
        ber_encode(TAG_TAG_LIST, bytes(DG_TAGS[dg] for dg in groups)),
    ])


def parse_ef_com(data: bytes) -> EfCom:
    """Decode EF.COM; LdsError names the element that is missing or wrong."""
    obj = _decode(data, TAG_COM, "EF.COM")
    versions = []
    for tag, digits, what in ((TAG_LDS_VERSION, 4, "LDS version"), (TAG_UNICODE_VERSION, 6, "Unicode version")):
        raw = _child(obj, tag, "EF.COM").value
        if len(raw) != digits or not raw.isdigit():
            raise LdsError(f"EF.COM {what} (tag {tag:04X}) must be {digits} ASCII digits")
        versions.append(raw.decode("ascii"))
    tags = _child(obj, TAG_TAG_LIST, "EF.COM").value
    groups = tuple(data_group_of_tag(t) for t in tags)
    return EfCom(versions[0], versions[1], groups)


# ---------------------------------------------------------------------------------------------- DG1


def dg1(mrz: Td3 | tuple[str, str]) -> bytes:
    """DG1 (ICAO 9303-10 §4.7.1) of a TD3 document: ``61 { 5F1F line1 ‖ line2 }``."""
    line1, line2 = mrz.lines() if isinstance(mrz, Td3) else mrz
    if len(line1) != LINE_LENGTH or len(line2) != LINE_LENGTH:
        raise LdsError(f"DG1: a TD3 MRZ has two lines of {LINE_LENGTH} characters")
    text = line1 + line2
    if not text.isascii():
        raise LdsError("DG1: the MRZ holds non-ASCII characters")
    return ber_build(DG_TAGS[1], [ber_encode(TAG_MRZ, text.encode("ascii"))])


def parse_dg1(data: bytes) -> Td3:
    """Decode DG1 of a TD3 document and verify every check digit (RecordError names the field)."""
    obj = _decode(data, DG_TAGS[1], "DG1")
    raw = _child(obj, TAG_MRZ, "DG1").value
    if len(raw) != 2 * LINE_LENGTH:
        raise LdsError(f"DG1: MRZ data of {len(raw)} characters; only TD3 ({2 * LINE_LENGTH}) is supported")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise LdsError("DG1: the MRZ data is not ASCII") from None
    try:
        return Td3.parse(text[:LINE_LENGTH], text[LINE_LENGTH:])
    except RecordError as exc:
        raise LdsError(f"DG1: {exc}") from None


# ---------------------------------------------------------------------------------------------- DG2


@dataclass(frozen=True)
class FaceImage:
    """One face from DG2: the image bytes and what the facial record says about them."""

    image: bytes
    image_type: str
    width: int
    height: int

    def __repr__(self) -> str:
        return f"FaceImage({self.image_type}, {self.width}x{self.height}, {len(self.image)} bytes)"


def image_size(image: bytes) -> tuple[str, int, int]:
    """(``"jpeg"`` | ``"jpeg2000"``, width, height) read from the image's own header.

    JPEG: the SOFn segment (ITU-T T.81 §B.2.2); JPEG 2000: the ``ihdr`` box of a JP2 file or the SIZ marker of
    a codestream (ITU-T T.800 §I.5.3.1, §A.5.1).
    """
    if image[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(image):
            if image[pos] != 0xFF:
                raise LdsError(f"face image: JPEG marker expected at byte {pos}")
            marker = image[pos + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                pos += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", image[pos + 2:pos + 4])
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if pos + 9 > len(image):
                    break
                height, width = struct.unpack(">HH", image[pos + 5:pos + 9])
                return "jpeg", width, height
            if marker == 0xDA:  # start of scan before any frame header
                break
            pos += 2 + length
        raise LdsError("face image: JPEG without a frame header (SOFn)")
    if image[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        at = image.find(b"ihdr")
        if at < 0 or at + 12 > len(image):
            raise LdsError("face image: JP2 file without an image header box (ihdr)")
        height, width = struct.unpack(">II", image[at + 4:at + 12])
        return "jpeg2000", width, height
    if image[:4] == b"\xff\x4f\xff\x51" and len(image) >= 16:
        width, height, x0, y0 = struct.unpack(">IIII", image[8:24]) if len(image) >= 24 else (0, 0, 0, 0)
        return "jpeg2000", width - x0, height - y0
    raise LdsError("face image: neither JPEG nor JPEG 2000 (ISO/IEC 19794-5 §5.7.2 allows only these)")


def face_record(image: bytes) -> bytes:
    """An ISO/IEC 19794-5:2005 facial record with one full-frontal image (no feature points, properties
    unspecified), the biometric data block of DG2."""
    kind, width, height = image_size(image)
    if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
        raise LdsError(f"face image: size {width}x{height} does not fit ISO/IEC 19794-5 (1..65535)")
    image_info = struct.pack(">BBHHBBHH", _FAC_FULL_FRONTAL, _IMAGE_TYPES[kind], width, height,
                             _FAC_COLOUR_RGB24, _FAC_SOURCE_DIGITAL_CAMERA, 0, 0)
    data_length = _FAC_INFO + _FAC_IMAGE_INFO + len(image)
    # facial record data length, feature points 0, gender/eye/hair unspecified (0), feature mask 0,
    # expression unspecified, pose angles and their uncertainty unspecified (§5.5)
    info = struct.pack(">IHBBB3sH3s3s", data_length, 0, 0, 0, 0, bytes(3), 0, bytes(3), bytes(3))
    header = _FAC_FORMAT + _FAC_VERSION + struct.pack(">IH", _FAC_HEADER + data_length, 1)
    return header + info + image_info + image


def _parse_face_record(bdb: bytes) -> FaceImage:
    if len(bdb) < _FAC_HEADER + _FAC_INFO + _FAC_IMAGE_INFO or bdb[:4] != _FAC_FORMAT:
        raise LdsError("DG2: the biometric data block is not an ISO/IEC 19794-5 facial record ('FAC')")
    record_length, count = struct.unpack(">IH", bdb[8:14])
    if record_length != len(bdb):
        raise LdsError(f"DG2: facial record length {record_length} but the data block holds {len(bdb)} bytes")
    if count < 1:
        raise LdsError("DG2: facial record with no face image")
    data_length, points = struct.unpack(">IH", bdb[14:20])
    at = _FAC_HEADER + _FAC_INFO + 8 * points
    if at + _FAC_IMAGE_INFO > len(bdb) or _FAC_HEADER + data_length > len(bdb):
        raise LdsError("DG2: facial record truncated")
    _, data_type, width, height = struct.unpack(">BBHH", bdb[at:at + 6])
    image = bdb[at + _FAC_IMAGE_INFO:_FAC_HEADER + data_length]
    kind = _IMAGE_TYPE_NAMES.get(data_type)
    if kind is None:
        raise LdsError(f"DG2: image data type {data_type:02X} is neither JPEG (00) nor JPEG 2000 (01)")
    return FaceImage(image, kind, width, height)


def dg2(images: bytes | Iterable[bytes]) -> bytes:
    """DG2 (ICAO 9303-10 §4.7.2) with one biometric information template per face image."""
    faces = [images] if isinstance(images, (bytes, bytearray)) else list(images)
    if not 1 <= len(faces) <= 0xFF:
        raise LdsError(f"DG2 holds 1..255 face images, got {len(faces)}")
    header = ber_build(TAG_BHT, [
        ber_encode(TAG_BHT_VERSION, BHT_VERSION),
        ber_encode(TAG_BHT_TYPE, BIOMETRIC_TYPE_FACE),
        ber_encode(TAG_BHT_OWNER, FORMAT_OWNER_SC37),
        ber_encode(TAG_BHT_FORMAT, FORMAT_TYPE_FACE),
    ])
    templates = [ber_build(TAG_BIT, [header, ber_encode(TAG_BDB, face_record(bytes(f)))]) for f in faces]
    group = ber_build(TAG_BIT_GROUP, [ber_encode(TAG_BIT_COUNT, bytes((len(faces),))), *templates])
    return ber_build(DG_TAGS[2], [group])


def parse_dg2(data: bytes) -> list[FaceImage]:
    """The face images of DG2 (instances counted and checked against the header)."""
    obj = _decode(data, DG_TAGS[2], "DG2")
    group = _child(obj, TAG_BIT_GROUP, "DG2")
    count_do = _child(group, TAG_BIT_COUNT, "DG2 biometric information group template")
    if len(count_do.value) != 1:
        raise LdsError("DG2: the number of instances (tag 02) must be one byte")
    try:
        templates = group.find_all(TAG_BIT)
    except TlvError as exc:
        raise LdsError(f"DG2: {exc}") from None
    if len(templates) != count_do.value[0]:
        raise LdsError(f"DG2 announces {count_do.value[0]} instance(s) but holds {len(templates)}")
    faces = []
    for i, bit in enumerate(templates, start=1):
        what = f"DG2 instance {i}"
        bht = _child(bit, TAG_BHT, what)
        owner, ftype = _child(bht, TAG_BHT_OWNER, what).value, _child(bht, TAG_BHT_FORMAT, what).value
        if (owner, ftype) != (FORMAT_OWNER_SC37, FORMAT_TYPE_FACE):
            raise LdsError(f"{what}: format {owner.hex().upper()}/{ftype.hex().upper()} is not an ISO/IEC 19794-5 "
                           "face (0101/0008)")
        if bit.find(TAG_BDB_ENCIPHERED) is not None:
            raise LdsError(f"{what}: the biometric data block is enciphered (7F2E); not supported")
        faces.append(_parse_face_record(_child(bit, TAG_BDB, what).value))
    return faces
