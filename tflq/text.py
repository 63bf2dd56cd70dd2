"""Text taken from a model or a file, made safe to print: control characters become escapes."""
from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """`text` with every control or format character (newline, ESC, CR, bidi overrides...) shown as
    a Python escape, so a name from a model cannot forge terminal lines or colours."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == " " or unicodedata.category(ch)[0] not in "CZ" or unicodedata.category(ch) == "Zs":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
