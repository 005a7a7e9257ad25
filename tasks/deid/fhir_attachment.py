"""Text attachments (DocumentReference.content.attachment, DiagnosticReport.presentedForm): base64 -> text, whatever
the sender did to it, or a refusal that names the rule.

Senders wrap base64 at 76 columns (MIME), declare a charset (`text/plain; charset=ISO-8859-1`), paste a Latin-1 line
into UTF-8 text, or send HTML. Each used to be staged as an empty note. Text decoded the wrong way is no better:
the scrubber cannot see a name inside mojibake or between interleaved NULs. So: a declared charset is honoured, a
UTF-8 (or undeclared) attachment is decoded line by line with a Windows-1252 / Latin-1 fallback for the odd line,
markup is reduced to its text, and what still does not read as text raises `AttachmentUndecodable`
(rule attachment_undecodable): the resource is quarantined, never staged with the text missing.

De-identification re-encodes every text attachment as `text/plain; charset=utf-8` (TEXT_PLAIN), so the notes
table reads the scrubbed text back with the same `decode_attachment`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from html.parser import HTMLParser

from tasks.deid.errors import DeidError

TEXT_PLAIN = "text/plain; charset=utf-8"
MARKUP_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml"})
UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968"})  # decoded per line, with fallback
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # controls no text file holds (tab, LF, FF, CR are fine)
BLOCK_TAGS = frozenset({"p", "br", "div", "li", "tr", "td", "th", "table", "ul", "ol", "pre", "section", "article",
                        "header", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "title", "blockquote"})


class AttachmentUndecodable(DeidError):
    """A text attachment whose bytes cannot be turned into text; the message says why, never what it holds."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__("attachment_undecodable", f"{where}: {why}")


def media_type(content_type: object) -> tuple[str, str | None]:
    """('text/plain', 'iso-8859-1') from 'text/plain; charset=ISO-8859-1'; the charset is None when not declared."""
    mime, *params = str(content_type or "").split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip("\"'"):
            charset = value.strip().strip("\"'").lower()
    return mime.strip().lower(), charset


def is_text(content_type: object) -> bool:
    mime, _ = media_type(content_type)
    return mime.startswith("text/") or mime in MARKUP_TYPES


def decode_attachment(content_type: object, data: object, where: str) -> str:
    """The text of a text attachment (markup reduced to text); AttachmentUndecodable when there is none to read."""
    mime, charset = media_type(content_type)
    text = decode_bytes(_base64(data, where), charset, where)
    return markup_to_text(text) if mime in MARKUP_TYPES else text


def _base64(data: object, where: str) -> bytes:
    """Standard base64, with the line breaks and spaces of MIME wrapping (RFC 2045) and missing padding forgiven."""
    if not isinstance(data, str):
        raise AttachmentUndecodable(where, "data is not a base64 string")
    compact = re.sub(r"\s+", "", data)
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise AttachmentUndecodable(where, "data is not valid base64") from None


def decode_bytes(raw: bytes, charset: str | None, where: str) -> str:
    """Bytes -> text: a byte-order mark first, then the declared charset; UTF-8 (the default) line by line."""
    codec = next((name for bom, name in BOMS if raw.startswith(bom)), None)
    if codec is None and charset is not None and charset not in UTF8_NAMES:
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            raise AttachmentUndecodable(where, "the declared charset is not one Python knows") from None
    try:
        text = raw.decode(codec) if codec else "\n".join(decode_line(line) for line in raw.split(b"\n"))
    except UnicodeDecodeError:
        raise AttachmentUndecodable(where, "the bytes are not text in the declared charset") from None
    if NOT_TEXT.search(text):
        raise AttachmentUndecodable(where, "the decoded data holds control characters: not text")
    return text


def decode_line(line: bytes) -> str:
    """One line (or one document) as UTF-8; one that is not (a Latin-1 line in a UTF-8 note) as Windows-1252, else
    Latin-1. Shared by notes and by the NDJSON reader (tasks/ingest/fhir_manifest.py)."""
    for codec in ("utf-8", "cp1252"):
        try:
            return line.decode(codec)
        except UnicodeDecodeError:
            continue
    return line.decode("latin-1")


class _TextOf(HTMLParser):
    """The character data of an HTML/XHTML document, a line break at each block element, scripts and styles out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def markup_to_text(markup: str) -> str:
    """HTML or XHTML -> plain text (entities resolved, whitespace tidied: one blank line at most between blocks)."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
