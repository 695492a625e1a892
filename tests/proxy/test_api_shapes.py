"""What each API shape reads of a request and an answer, on inputs a hostile member or provider would send."""

from __future__ import annotations

import io
import json
import struct
import wave
from typing import Any

import pytest

from agent import protocol
from hub.agents.live import Link
from hub.errors import BadRequest, PayloadTooLarge
from hub.proxy.apis import BY_NAME
from hub.proxy.apis.audio import wav_ms
from hub.proxy.bounds import bill
from hub.proxy.meter import Relayed, StreamMeter, read_answer

BOUNDARY = "x-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * int(rate * seconds))
    return out.getvalue()


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_a_wav_is_as_long_as_a_decoder_plays_it_whatever_its_byte_rate_field_says() -> None:
    honest = wav(480)
    lying = bytearray(honest)
    struct.pack_into("<I", lying, 28, 0xFFFFFFFF)  # the byte-rate field, which decoders ignore

    assert wav_ms(honest) == 480_000
    assert wav_ms(bytes(lying)) is None  # fields that disagree: no plain WAV, the bytes bound applies


def test_a_wav_whose_data_chunk_claims_nothing_is_measured_to_the_end_of_the_file() -> None:
    audio = bytearray(wav(3))
    struct.pack_into("<I", audio, 40, 0)  # the data chunk's size

    assert wav_ms(bytes(audio)) == 3000


def test_the_hub_reads_only_a_few_dozen_chunks_of_a_wav_looking_for_its_data() -> None:
    honest = wav(2)
    # Two million empty chunks would be two million steps on the event loop: the hub stops looking after 64.
    padded = honest[:12] + b"junk\0\0\0\0" * 64 + honest[12:]

    assert wav_ms(honest[:12] + b"junk\0\0\0\0" * 8 + honest[12:]) == 2000
    assert wav_ms(padded) is None  # the bytes bound applies instead


def test_an_upload_with_the_wav_length_lying_is_held_to_the_bytes_bound() -> None:
    audio = bytearray(wav(8))
    struct.pack_into("<I", audio, 28, 0xFFFFFFFF)
    parsed = BY_NAME["audio/transcriptions"].parse(form(("model", b"w", None), ("file", bytes(audio), "a.wav")), FORM)

    assert parsed.audio_ms_bound == len(audio) * 1000 // 500  # eight seconds at 32 kB/s fit well inside


@pytest.mark.parametrize(
    "parts",
    [
        (("model", b"cheap", None), ("model", b"dear", None), ("file", b"RIFF", "a.wav")),
        (("model", b"w", None), ("file", b"short", "a.wav"), ("file", b"long" * 100, "b.wav")),
        (("model", b"w", None), ("file", b"short", "a.wav"), ("other", b"long" * 100, "b.wav")),
    ],
)
def test_a_form_with_a_field_or_a_file_twice_is_refused(parts: tuple[tuple[str, bytes, str | None], ...]) -> None:
    with pytest.raises(BadRequest, match="more than one"):
        BY_NAME["audio/transcriptions"].parse(form(*parts), FORM)


def test_count_tokens_refuses_to_stream() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with pytest.raises(BadRequest, match="does not stream"):
        BY_NAME["messages/count_tokens"].parse(json.dumps(body).encode(), "application/json")


@pytest.mark.parametrize("name", ["previous_response_id", "conversation", "prompt"])
def test_a_responses_request_that_needs_stored_context_is_refused(name: str) -> None:
    body = {"model": "m", "input": "hi", name: "resp_123"}
    with pytest.raises(BadRequest, match="does not keep responses"):
        BY_NAME["responses"].parse(json.dumps(body).encode(), "application/json")


REASONING = "Let me think about this step by step. " * 30


def _responses_stream() -> list[bytes]:
    events: list[dict[str, Any]] = [
        {"type": "response.reasoning_summary_text.delta", "delta": REASONING},
        {"type": "response.output_text.delta", "delta": "Paris."},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 10, "output_tokens": 250}}},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def test_reasoning_in_a_summary_counts_the_same_plain_and_streamed() -> None:
    api = BY_NAME["responses"]
    whole = {
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": REASONING}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Paris."}]},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 250},
    }
    plain = read_answer(api, json.dumps(whole).encode(), "application/json")
    meter = StreamMeter(api, strip_usage=False, relayed=Relayed())
    for event in _responses_stream():
        meter.feed(event)
    limits = api.limits(api.parse(b'{"model":"m","input":"q","max_output_tokens":300}', ""), 60, 1024)

    assert plain.relayed.text_bytes == meter.relayed.text_bytes == len(REASONING) + len("Paris.")
    for report, relayed in ((plain.report, plain.relayed), (meter.report, meter.relayed)):
        billed = bill(limits, report, relayed)
        assert (billed.counts.completion_tokens, billed.disputed) == (250, False)


async def test_a_request_too_big_for_the_agents_tunnel_is_refused_before_it_is_sent() -> None:
    sent: list[str | bytes] = []

    async def send(frame: str | bytes) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        return None

    link = Link(1, 1, "gpu", True, False, 1, frozenset({"m"}), send, close)
    accents = json.dumps({"model": "m", "messages": [{"role": "user", "content": "é" * (3 * 1024 * 1024)}]})

    with pytest.raises(PayloadTooLarge, match="tunnel"):  # 3 Mi characters are 18 MiB as JSON escapes
        await link.open("a" * 32, "/v1/chat/completions", accents)
    assert sent == [] and link.exchanges == {}
    assert link.max_request_frame == protocol.MAX_FRAME
