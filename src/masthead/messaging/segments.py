"""How many SMS segments a text takes, and in which encoding (pure functions).

GSM 03.38 7-bit: 160 characters in one segment, 153 per segment when concatenated; the characters
of the extension table take two. Anything outside the alphabet makes the whole text UCS-2: 70
UTF-16 code units in one segment, 67 per segment concatenated (a character outside the BMP, such
as most emoji, takes two units).
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
MAX_SEGMENTS = 10


@dataclass(frozen=True)
class Segmentation:
    encoding: str  # "gsm7" or "ucs2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    @property
    def per_segment(self) -> int:
        single, multi = (160, 153) if self.encoding == "gsm7" else (70, 67)
        return single if self.segments <= 1 else multi


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def segment(text: str) -> Segmentation:
    if is_gsm7(text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, multi, encoding = 160, 153, "gsm7"
    else:
        units = len(text.encode("utf-16-be")) // 2
        single, multi, encoding = 70, 67, "ucs2"
    if units <= single:
        return Segmentation(encoding, units, 1)
    return Segmentation(encoding, units, -(-units // multi))
