"""Image sizes from file headers in plain Python, for the verify pass of a folder.

Reading a few bytes at each end of a file costs ~10 µs; a tf.data element that reads a file
costs ~50-100 µs before anything is decoded (measured on 40k JPEGs, 2 cores). So complete
JPEGs and PNGs are measured here, and only the other files are decoded by TensorFlow.
"""

from __future__ import annotations

import os
import struct

__all__ = ["read_header"]

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk: zero length, type, CRC
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_HUFFMAN_8BIT = frozenset([0xC0, 0xC1, 0xC2])
# Markers without a length field.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
# PNG colour type -> channels TensorFlow decodes it to, without and with a tRNS chunk.
_PNG_CHANNELS = {0: (1, 2), 2: (3, 4), 3: (3, 4), 4: (2, 2), 6: (4, 4)}
_HEAD = 4096
_MAX_WALK = 1 << 20  # EXIF blocks with thumbnails run to tens of KB; a megabyte is not a header


def read_header(path, size):
    """`[height, width, channels, is_jpeg]` of a complete JPEG or PNG, else None.

    "Complete" means the structure is whole at both ends: a JPEG's markers lead to its frame
    header and the file ends in the end-of-image marker; a PNG has its signature, header chunk
    and final IEND chunk. A truncated file lacks the end marker. Anything else (other formats,
    damaged or unusual files) returns None, for TensorFlow to decode.

    Args:
        path: The file (str).
        size: Its size in bytes (from the listing).

    Returns:
        A list of 4 ints, or None.
    """
    if size < 32:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.read(fd, _HEAD)
        tail = os.pread(fd, 12, size - 12)
        if head[:2] == _JPEG_SOI and tail[-2:] == _JPEG_EOI:
            return _jpeg_frame(fd, head)
        if head[:8] == _PNG_SIGNATURE and tail == _PNG_IEND and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            channels = _PNG_CHANNELS.get(head[25])
            if channels and width and height:
                # tRNS comes before the first IDAT; past the first 4 KB only gray vs
                # gray + alpha could be wrong, and both count as gray
                trns, idat = head.find(b"tRNS", 33), head.find(b"IDAT", 33)
                alpha = trns != -1 and (idat == -1 or trns < idat)
                return [height, width, channels[alpha], 0]
        return None
    except OSError:
        return None
    finally:
        os.close(fd)


def _jpeg_frame(fd, head):
    """Walks the JPEG markers from offset 2 to the start of the scan, checking the frame
    header and the Huffman tables on the way (the header damage libjpeg refuses); None when
    they do not lead there (no frame header, a byte that is not a marker, past `_MAX_WALK`)."""
    pos, buf, start = 2, head, 0  # buf holds the file's bytes from offset `start`
    frame = None
    while pos < _MAX_WALK:
        if pos + 4 > start + len(buf):
            buf, start = os.pread(fd, _HEAD, pos), pos
            if len(buf) < 4:
                return None
        i = pos - start
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: the headers are complete
            return frame
        (length,) = struct.unpack(">H", buf[i + 2:i + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF or marker == 0xC4:
            if i + 2 + length > len(buf):
                buf, start = os.pread(fd, max(_HEAD, length + 2), pos), pos
                i = 0
            segment = buf[i + 4:i + 2 + length]
            if len(segment) != length - 2:
                return None
            if marker == 0xC4:
                if not _huffman_ok(segment):
                    return None
            else:
                # Only 8-bit Huffman frames (baseline, extended, progressive) are vouched
                # for; 12-bit, lossless and arithmetic-coded ones are left to the decoder.
                if frame is not None or len(segment) < 6 or marker not in _JPEG_HUFFMAN_8BIT \
                        or segment[0] != 8:
                    return None
                height, width = struct.unpack(">HH", segment[1:5])
                channels = segment[5]
                if not (height and width and channels):
                    return None
                frame = [height, width, channels, 1]
        pos += 2 + length
    return None


def _huffman_ok(segment):
    """A DHT segment is whole tables: class/id byte, 16 code counts, at most 256 symbols."""
    k = 0
    while k < len(segment):
        counts = segment[k + 1:k + 17]
        if len(counts) < 16 or segment[k] >> 4 > 1 or sum(counts) > 256:
            return False
        k += 17 + sum(counts)
    return k == len(segment)
