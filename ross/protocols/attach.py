# -*- test-case-name: ross.test.test_attach -*-
"""
Attach framing shared by RunInteractive, Attach and Exec: detach-key
detection on the input stream, docker's key syntax.
"""

from __future__ import annotations

from ross.errors import InvalidArgument

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"

_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(text: str) -> bytes:
    """
    docker's detach-key syntax ("ctrl-p,ctrl-q", "ctrl-a,x") as the bytes a
    terminal sends; "" means the default, "none" disables detaching (b"").
    """
    if not text:
        text = DEFAULT_DETACH_KEYS
    if text == "none":
        return b""
    keys = bytearray()
    for key in text.split(","):
        key = key.strip()
        if key.lower().startswith("ctrl-") and len(key) == 6:
            c = key[5].lower()
            if "a" <= c <= "z":
                keys.append(ord(c) - ord("a") + 1)
                continue
            if c in _SPECIAL:
                keys.append(_SPECIAL[c])
                continue
        elif len(key) == 1 and key.isprintable() and key.isascii():
            keys.append(ord(key))
            continue
        raise InvalidArgument(f"Invalid detach keys ({text}) provided")
    return bytes(keys)


class DetachScanner:
    """
    Finds the detach sequence in input that arrives in pieces. Bytes that
    might be the start of the sequence are held back until the next piece
    tells (docker does the same); everything else passes through at once.
    """

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """
        Returns (bytes to forward, whether the sequence was seen). After the
        sequence, the rest of C{data} is dropped: the client is leaving.
        """
        if not self.keys:
            return data, False
        data = self._held + data
        self._held = b""
        found = data.find(self.keys)
        if found >= 0:
            return data[:found], True
        # Hold back a suffix that is a prefix of the sequence.
        for n in range(min(len(self.keys) - 1, len(data)), 0, -1):
            if data.endswith(self.keys[:n]):
                self._held = data[-n:]
                return data[:-n], False
        return data, False

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held
