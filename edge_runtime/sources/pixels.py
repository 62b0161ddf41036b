"""Camera pixel formats (GenICam PFNC names and codes) -> what preprocessing takes: uint8 gray or uint8 BGR.

Industrial cameras deliver raw buffers in the format their ``PixelFormat`` feature names. :func:`to_image`
converts one buffer once, at capture time, so that the rest of the pipeline sees what it sees for image files:

* ``Mono8`` -> HxW uint8 as is; ``Mono10`` / ``Mono12`` / ``Mono16`` (little-endian, one 16-bit word a pixel,
  unpacked) -> HxW uint8 scaled by ``2 ** (8 - bits)``, rounded to the nearest (half to even) and saturated, so
  that full scale stays full scale and stray high bits cannot wrap around;
* ``Bayer{RG,GB,GR,BG}{8,10,12,16}`` (the two letters name the top-left 2x2 cell, first row) -> HxWx3 BGR,
  deepened formats scaled to 8 bits as above, then demosaiced (bilinear, OpenCV);
* ``RGB8`` / ``BGR8`` / ``RGBa8`` / ``BGRa8`` -> HxWx3 BGR (alpha dropped).

Packed formats (``Mono12p``, ``Mono12Packed``, ...) are not converted: set the camera to an unpacked one
(``--set PixelFormat=Mono12``); the error says so and lists the formats converted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.errors import SourceError


@dataclass(frozen=True)
class PixelFormat:
    """One convertible pixel format: PFNC name and code, bits of data per pixel, channels, how to convert."""

    name: str
    code: int
    bits: int  # significant bits per sample
    channels: int  # samples per pixel in the buffer
    conversion: int | None = None  # cv2.COLOR_* to BGR (None: gray stays gray)

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bits == 8 else 2


def _table() -> dict[str, PixelFormat]:
    formats = [
        PixelFormat("Mono8", 0x01080001, 8, 1),
        PixelFormat("Mono10", 0x01100003, 10, 1),
        PixelFormat("Mono12", 0x01100005, 12, 1),
        PixelFormat("Mono16", 0x01100007, 16, 1),
        PixelFormat("RGB8", 0x02180014, 8, 3, cv2.COLOR_RGB2BGR),
        PixelFormat("BGR8", 0x02180015, 8, 3),
        PixelFormat("RGBa8", 0x02200016, 8, 4, cv2.COLOR_RGBA2BGR),
        PixelFormat("BGRa8", 0x02200017, 8, 4, cv2.COLOR_BGRA2BGR),
    ]
    # PFNC codes of the Bayer formats, in the order GR, RG, GB, BG, per depth
    bayer_codes = {8: 0x01080008, 10: 0x0110000C, 12: 0x01100010, 16: 0x0110002E}
    demosaic = {"GR": cv2.COLOR_BayerGRBG2BGR, "RG": cv2.COLOR_BayerRGGB2BGR, "GB": cv2.COLOR_BayerGBRG2BGR,
                "BG": cv2.COLOR_BayerBGGR2BGR}
    for bits, first in bayer_codes.items():
        for offset, pattern in enumerate(("GR", "RG", "GB", "BG")):
            formats.append(PixelFormat(f"Bayer{pattern}{bits}", first + offset, bits, 1, demosaic[pattern]))
    return {f.name: f for f in formats}


PIXEL_FORMATS: dict[str, PixelFormat] = _table()
_BY_CODE = {f.code: f for f in PIXEL_FORMATS.values()}


def pixel_format(name_or_code: str | int) -> PixelFormat:
    """The convertible format named (PFNC name, case-insensitive) or numbered (PFNC code); SourceError if none."""
    if isinstance(name_or_code, int):
        found = _BY_CODE.get(name_or_code)
    else:
        found = next((f for n, f in PIXEL_FORMATS.items() if n.lower() == str(name_or_code).lower()), None)
    if found is None:
        shown = f"0x{name_or_code:08X}" if isinstance(name_or_code, int) else repr(name_or_code)
        raise SourceError(f"pixel format {shown} is not converted; set the camera to one of "
                          f"{', '.join(PIXEL_FORMATS)} (e.g. --set PixelFormat=Mono8)")
    return found


def to_image(data: bytes | bytearray | memoryview | np.ndarray, fmt: PixelFormat | str | int, width: int,
             height: int) -> np.ndarray:
    """One camera buffer -> HxW uint8 (mono) or HxWx3 uint8 BGR (colour, Bayer); see the module docstring.

    ``data`` is the raw buffer (bytes or a 1-D/any-shape array of its bytes or samples). Row padding at the end
    of the buffer is ignored; a buffer shorter than ``width * height`` pixels raises ValueError.
    """
    fmt = fmt if isinstance(fmt, PixelFormat) else pixel_format(fmt)
    dtype = np.dtype(np.uint8) if fmt.bytes_per_sample == 1 else np.dtype("<u2")
    if isinstance(data, (bytes, bytearray, memoryview)):
        usable = len(memoryview(data).cast("B")) // dtype.itemsize * dtype.itemsize
        array = np.frombuffer(data, dtype=dtype, count=usable // dtype.itemsize)
    else:
        array = np.asarray(data)
        if array.dtype != dtype:  # the buffer's bytes, seen as samples
            raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            array = raw[: raw.size // dtype.itemsize * dtype.itemsize].view(dtype)
    samples = width * height * fmt.channels
    array = array.reshape(-1)
    if array.size < samples:
        raise ValueError(f"{fmt.name} buffer of {array.size} samples is too short for {width}x{height} "
                         f"({samples} samples)")
    array = array[:samples].reshape((height, width, fmt.channels) if fmt.channels > 1 else (height, width))
    if fmt.bits > 8:
        array = cv2.convertScaleAbs(array, alpha=2.0 ** (8 - fmt.bits))  # rounds and saturates; a new array
    elif fmt.conversion is None:
        return array.copy()  # never a view of the driver's buffer, which is queued again for the next frame
    if fmt.conversion is None:
        return array
    return cv2.cvtColor(np.ascontiguousarray(array), fmt.conversion)
