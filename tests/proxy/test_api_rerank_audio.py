"""Rerank and audio transcription through the hub (RAG pipelines and meeting-notes tools): answers pass through
unchanged; rerank costs its input tokens, a transcription its seconds of audio at the model's price per minute."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.proxy.metering import START, Club, balance, consumer, open_club, rows, wav
from tests.support.cluster import Member

QUERY = {"model": "m", "query": "red apple", "documents": ["a red car", "a red apple", "the blue sky"]}


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with open_club(tmp_path_factory.mktemp("hub")) as running:
        yield running


def sdk(club: Club, who: Member) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0, timeout=30)


def rerank(club: Club, who: Member, body: dict[str, Any], path: str = "/v1/rerank") -> httpx.Response:
    headers = {"Authorization": f"Bearer {who.key}"}
    return httpx.post(f"{club.hub.url}{path}", headers=headers, json=body, timeout=30)


def upload(club: Club, who: Member, audio: bytes, *, path: str = "transcriptions", **fields: Any) -> httpx.Response:
    """A multipart upload as curl or an SDK sends it; `fake` (a dict) goes as a form field holding JSON."""
    form = {"model": "whisper"} | {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    return httpx.post(
        f"{club.hub.url}/v1/audio/{path}",
        headers={"Authorization": f"Bearer {who.key}"},
        data=form,
        files={"file": ("meeting.wav", audio, "audio/wav")},
        timeout=30,
    )


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_a_rerank_comes_back_unchanged_and_costs_its_input_tokens(club: Club, path: str) -> None:
    alice = consumer(club, f"alice{path.count('/')}@lab.example.org")

    through = rerank(club, alice, QUERY, path)
    direct = httpx.post(f"{club.full.url}/v1/rerank", json=QUERY, timeout=30)

    assert through.status_code == 200
    assert through.content == direct.content
    results = through.json()["results"]
    assert [result["index"] for result in results] == [1, 0, 2]  # "a red apple", then "a red car"
    assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
    (row,) = rows(club, alice, 1)
    # Two words of query and nine of documents; a reranker generates nothing.
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"], row["status"]) == ("rerank", 11, 0, 200)
    assert balance(club, alice) == START - 11


def test_a_rerank_claiming_a_trillion_tokens_is_billed_at_most_the_bytes_sent(club: Club) -> None:
    bob = consumer(club, "bob@lab.example.org")
    lie = {"prompt_tokens": 10**12, "total_tokens": 10**12}

    through = rerank(club, bob, QUERY | {"fake": {"usage": lie}})

    assert through.status_code == 200 and through.json()["usage"] == lie
    (row,) = rows(club, bob, 1)
    assert row["disputed"] is True and row["reported_prompt_tokens"] == 10**12
    assert 0 < row["prompt_tokens"] < 1000 and row["completion_tokens"] == 0
    assert balance(club, bob) == START - row["prompt_tokens"]


def test_a_rerank_reporting_only_total_tokens_is_billed_for_them(club: Club) -> None:
    carol = consumer(club, "carol@lab.example.org")

    through = rerank(club, carol, QUERY | {"fake": {"usage": {"total_tokens": 7}}})

    assert through.status_code == 200
    (row,) = rows(club, carol, 1)
    assert (row["prompt_tokens"], row["estimated"]) == (7, False)
    assert balance(club, carol) == START - 7


def test_a_transcription_arrives_whole_and_costs_its_seconds_at_the_audio_price(club: Club) -> None:
    dave = consumer(club, "dave@lab.example.org")
    audio = wav(3)

    with sdk(club, dave) as client:
        answer = client.audio.transcriptions.create(model="whisper", file=("meeting.wav", audio, "audio/wav"))

    assert answer.text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    assert answer.usage is not None and answer.usage.type == "duration" and answer.usage.seconds == 3
    received = httpx.get(f"{club.full.url}/fake/stats").json()["last_body"]
    assert received["model"] == "whisper"
    assert received["file"]["sha256"] == hashlib.sha256(audio).hexdigest()  # the upload reached the GPU unchanged
    (row,) = rows(club, dave, 1)
    assert (row["endpoint"], row["model"], row["status"], row["audio_ms"]) == (
        "audio/transcriptions",
        "whisper",
        200,
        3000,
    )
    assert row["disputed"] is False
    assert balance(club, dave) == START - 3  # one credit a second, and nothing for tokens


def test_a_translation_in_verbose_json_comes_back_unchanged_and_is_billed_the_same_way(club: Club) -> None:
    erin = consumer(club, "erin@lab.example.org")
    audio = wav(2)

    through = upload(club, erin, audio, path="translations", response_format="verbose_json", language="de")

    assert through.status_code == 200
    assert through.json()["task"] == "translate" and through.json()["duration"] == 2.0
    assert httpx.get(f"{club.full.url}/fake/stats").json()["last_body"]["language"] == "de"
    (row,) = rows(club, erin, 1)
    assert (row["endpoint"], row["audio_ms"]) == ("audio/translations", 2000)
    assert balance(club, erin) == START - 2


def test_a_transcription_as_plain_text_comes_back_as_text(club: Club) -> None:
    frank = consumer(club, "frank@lab.example.org")

    through = upload(club, frank, wav(1), response_format="text")

    assert through.status_code == 200
    assert through.headers["content-type"].startswith("text/plain")
    assert through.text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    (row,) = rows(club, frank, 1)
    # No usage in a text answer: the WAV header says 1 s, and a transcription is billed by the second, not by
    # tokens guessed from its text.
    assert (row["status"], row["audio_ms"], row["prompt_tokens"], row["completion_tokens"]) == (200, 1000, 0, 0)
    assert balance(club, frank) == START - 1


def test_a_server_claiming_a_million_seconds_for_a_two_second_wav_is_billed_two(club: Club) -> None:
    gina = consumer(club, "gina@lab.example.org")

    through = upload(club, gina, wav(2), fake={"usage": {"type": "duration", "seconds": 1_000_000}})

    assert through.status_code == 200 and through.json()["usage"]["seconds"] == 1_000_000
    (row,) = rows(club, gina, 1)
    assert (row["audio_ms"], row["disputed"]) == (2000, True)
    assert balance(club, gina) == START - 2


def test_audio_the_hub_cannot_measure_is_billed_at_most_at_four_kilobits_a_second(club: Club) -> None:
    hana = consumer(club, "hana@lab.example.org")
    mp3 = b"\xff\xfb\x90\x00" + bytes(9_996)  # 10,000 bytes of something that is not a WAV: at most 20 s

    through = httpx.post(
        f"{club.hub.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {hana.key}"},
        data={"model": "whisper", "fake": json.dumps({"seconds": 3600})},
        files={"file": ("call.mp3", mp3, "audio/mpeg")},
        timeout=30,
    )

    assert through.status_code == 200 and through.json()["usage"]["seconds"] == 3600
    (row,) = rows(club, hana, 1)
    assert (row["audio_ms"], row["disputed"]) == (20_000, True)
    assert balance(club, hana) == START - 20


def test_an_honest_server_is_believed_about_audio_the_hub_cannot_measure(club: Club) -> None:
    ivy = consumer(club, "ivy@lab.example.org")

    through = httpx.post(
        f"{club.hub.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {ivy.key}"},
        data={"model": "whisper", "fake": json.dumps({"seconds": 12})},
        files={"file": ("call.mp3", bytes(10_000), "audio/mpeg")},
        timeout=30,
    )

    assert through.status_code == 200
    (row,) = rows(club, ivy, 1)
    assert (row["audio_ms"], row["disputed"]) == (12_000, False)
    assert balance(club, ivy) == START - 12
