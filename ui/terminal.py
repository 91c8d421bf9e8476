"""Text for a terminal from untrusted data: session ids, tool and model names come from OTLP senders and
upstreams, and a control character in one (ESC starting a colour or cursor sequence, a carriage return
overwriting a line) would act on the user's terminal instead of being read. Every CLI table and text report
passes its document through `visible_doc` before formatting; JSON output is left as it is (JSON escapes)."""

from __future__ import annotations

from typing import Any

# C0 (U+0000..U+001F), DEL (U+007F) and C1 (U+0080..U+009F): each shown as its escape, e.g. ESC as \x1b.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def visible(text: str) -> str:
    """`text` with every control character written out as a visible escape (\\x1b, \\x0a, \\x9b, ...)."""
    return text.translate(_CONTROLS)


def visible_doc(doc: Any) -> Any:
    """A copy of a JSON document with every string, keys included, made `visible`; other values unchanged."""
    if isinstance(doc, str):
        return visible(doc)
    if isinstance(doc, dict):
        return {visible_doc(k): visible_doc(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [visible_doc(v) for v in doc]
    return doc
