"""Audio transcription and translation: a multipart upload (the `file`, and `model` as a form field), passed on
byte for byte, billed per second of audio at the model's price per audio minute.

The seconds come from the answer (`usage: {type: "duration", seconds}`, or `duration` in verbose_json) and are
bounded by what the hub read of the upload itself: a WAV header gives the exact length (rounded up to a whole
second, as servers report it); any other file is held to at most one second per 500 bytes (4 kbit/s, below any
codec's speech bitrate). Without a report the hub bills the WAV's length, or one second per 16,000 bytes
(128 kbit/s), flagged as estimated. Tokens are billed only when the server reports them (`usage.type: tokens`).
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from hub.errors import BadRequest
from hub.proxy.apis.base import Api, Outgoing, Parsed, add_text
from hub.proxy.bounds import PROMPT_BASE_ALLOWANCE, Limits
from hub.proxy.meter import Relayed, Report, whole

BYTES_PER_SECOND_BOUND = 500
BYTES_PER_SECOND_GUESS = 16_000
AUDIO_TOKENS_PER_SECOND = 50  # Whisper's encoder makes 50 frames a second; audio LLMs use fewer tokens than that
_FIELDS = ("model", "stream", "response_format", "language", "prompt")


def read_form(raw: bytes, content_type: str) -> tuple[dict[str, str], bytes | None]:
    """The text fields of a multipart form, and the bytes of its `file`; BadRequest for anything unreadable.

    A field sent twice is refused: servers differ on which one they use (Go and cpp-httplib take the first), so
    the hub could price one model and file while the server runs another.
    """
    kind, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise BadRequest("Send the audio as a multipart form (multipart/form-data) with 'file' and 'model' fields.")
    fields: dict[str, str] = {}
    audio: bytes | None = None
    seen: set[str] = set()
    part: MultipartSegment | None = None
    data = bytearray()
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=64) as parser:
            for event in [*parser.parse(raw), *parser.parse(b"")]:
                if isinstance(event, MultipartSegment):
                    part, data = event, bytearray()
                    if part.name in seen or (part.filename is not None and "file" in seen):
                        raise BadRequest(f"The form has more than one '{part.name}' field (or file); send one.")
                    seen.add("file" if part.filename is not None else part.name or "")
                elif event is not None:
                    data += event
                elif part is not None:
                    if part.name == "file":
                        audio = bytes(data)
                    elif part.name in _FIELDS and len(data) <= 4096:
                        fields[part.name] = data.decode("utf-8", "replace")
                    part = None
    except MultipartError:
        raise BadRequest("We could not read the multipart form of your request.") from None
    return fields, audio


_WAV_FORMATS = (1, 3, 0xFFFE)  # PCM, IEEE float, extensible
_WAV_CHUNKS = 64  # real files have a handful; a file of empty chunks must not cost the hub a long loop


def wav_ms(audio: bytes) -> int | None:
    """The length of a WAV file in milliseconds, the most a decoder can get out of it; None if not a plain WAV.

    Decoders play sample_rate * block_align bytes a second whatever the header's byte-rate field says, and may
    read past a data chunk's stated size, so the length is the bytes from the data chunk to the end of the file
    at that rate. A header whose fields disagree is no plain WAV (the caller falls back to the bytes bound).
    """
    if len(audio) < 12 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return None
    offset, per_second = 12, 0
    for _ in range(_WAV_CHUNKS):
        if offset + 8 > len(audio):
            return None
        chunk, size = audio[offset : offset + 4], struct.unpack_from("<I", audio, offset + 4)[0]
        if chunk == b"fmt " and size >= 16 and offset + 24 <= len(audio):
            kind, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", audio, offset + 8)
            plain = kind in _WAV_FORMATS and channels > 0 and bits % 8 == 0 and align == channels * bits // 8
            if not plain or not 1000 <= rate <= 768_000 or byte_rate != rate * align or align == 0:
                return None
            per_second = rate * align
        elif chunk == b"data":
            return math.ceil((len(audio) - offset - 8) * 1000 / per_second) if per_second else None
        offset += 8 + size + (size & 1)
    return None


def _seconds_ms(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return math.ceil(value * 1000)


class Transcriptions(Api):
    name = "audio/transcriptions"
    title = "the audio transcription API"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        fields, audio = read_form(raw, content_type)
        if not fields.get("model"):
            error = BadRequest("You must provide a model parameter (the form field 'model').")
            error.code = "missing_model"
            raise error
        if not audio:
            raise BadRequest("You must provide the audio as the form field 'file'.")
        exact = wav_ms(audio)
        # Servers report whole seconds, rounded up (Whisper's do): the bound allows that much over the exact length.
        bound = math.ceil(exact / 1000) * 1000 if exact is not None else len(audio) * 1000 // BYTES_PER_SECOND_BOUND
        body: dict[str, Any] = dict(fields)
        return Parsed(
            body,
            raw,
            fields["model"],
            stream=fields.get("stream", "").strip().lower() == "true",
            content_type=content_type,
            audio_ms_bound=bound,
            audio_ms_known=exact if exact is not None else len(audio) * 1000 // BYTES_PER_SECOND_GUESS,
        )

    def outgoing(self, parsed: Parsed) -> Outgoing:
        return Outgoing(base64.b64encode(parsed.raw).decode("ascii"), encoding="base64")

    def limits(self, parsed: Parsed, body_bytes: int, default_max_tokens: int) -> Limits:
        # Token-priced audio models report tokens instead: at most AUDIO_TOKENS_PER_SECOND of the longest the audio
        # can be (and never more than its bytes), plus the form's text; the text they wrote bounds the output.
        seconds = -(-(parsed.audio_ms_bound or 0) // 1000)
        prompt = min(body_bytes, seconds * AUDIO_TOKENS_PER_SECOND) + len(parsed.body.get("prompt", ""))
        return Limits(
            prompt + PROMPT_BASE_ALLOWANCE,
            default_max_tokens,
            0,
            1,
            explicit=False,
            audio_ms=parsed.audio_ms_bound or 0,
            audio_ms_guess=parsed.audio_ms_known or 0,
        )

    def plain(self, text: str, relayed: Relayed) -> Report | None:
        super().plain(text, relayed)
        return Report(0, 0)  # no tokens to bill; the seconds are the hub's own (`Limits.audio_ms_guess`)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        if not isinstance(payload, dict):
            return None
        relayed.choices = max(relayed.choices, 1)
        add_text(relayed, payload.get("text"))
        return _usage(payload)

    def event(self, payload: Any, relayed: Relayed) -> Report | None:
        """A streamed transcription: `transcript.text.delta` events, then `transcript.text.done` with the usage."""
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "transcript.text.delta":
            relayed.choices = max(relayed.choices, 1)
            add_text(relayed, payload.get("delta"))
        elif kind == "transcript.text.done":
            return _usage(payload)
        return None


def _usage(payload: dict[str, Any]) -> Report:
    """Tokens (`usage.type: tokens`), or seconds (`usage.seconds`, verbose_json's `duration`), or neither."""
    usage = payload.get("usage")
    if isinstance(usage, dict) and usage.get("type") == "tokens":
        return Report(whole(usage.get("input_tokens")), whole(usage.get("output_tokens")), audio_ms=0)
    seconds = usage.get("seconds") if isinstance(usage, dict) else payload.get("duration")
    return Report(0, 0, audio_ms=None if seconds is None else _seconds_ms(seconds))


class Translations(Transcriptions):
    name = "audio/translations"
    title = "the audio translation API"
