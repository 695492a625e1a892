"""Model identity probes at run time: now and then, ask every agent serving a model the same question.

`Prober` is built once in `create_app`. Every `GPUCLUB_PROBE_MINUTES` (give or take half, so a provider cannot
tell probes by their timing; 0 turns the timer off) it probes each model that two or more agents serve; an admin
can also probe one model at once (`probe`). A probe takes a slot of the agent's capacity like any request, so the
scheduler sees it; an agent without a free slot is skipped this time, and no agent is probed twice at once.
The rules (the question, the comparison, what is stored) are in `probes.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.agents import probes
from hub.agents.live import AgentLost, AnswerTooLarge, Link, Registry
from hub.background import cancel
from hub.db import Database

log = logging.getLogger("gpuclub")
TIMEOUT = 30.0
MAX_ANSWER = 64 * 1024  # a few tokens' answer is far smaller


@dataclass
class ProbeRun:
    """What one probe of one model found, for the admin's message."""

    model: str
    agreed: list[str] = field(default_factory=list)
    disagreed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "desk-2: timed out"
    skipped: list[str] = field(default_factory=list)  # busy: no free slot, or already being probed

    @property
    def summary(self) -> str:
        parts = []
        if self.disagreed:
            parts.append(f"disagreeing: {', '.join(self.disagreed)}")
        if self.agreed:
            parts.append(f"agreeing: {', '.join(self.agreed)}")
        if not self.agreed and not self.disagreed:
            parts.append("fewer than two answers, so nothing to compare")
        if self.failed:
            parts.append(f"no answer from {'; '.join(self.failed)}")
        if self.skipped:
            parts.append(f"busy, not probed: {', '.join(self.skipped)}")
        return f"Probed {self.model}: " + "; ".join(parts) + "."


class _NoAnswer(Exception):
    pass


class Prober:
    def __init__(
        self,
        database: Database,
        registry: Registry,
        release: Callable[[Link], None],
        *,
        minutes: float,
        timeout: float = TIMEOUT,
    ) -> None:
        """`release` gives a slot back the way the scheduler does (`Scheduler.release`), so waiting requests get it."""
        self.database = database
        self.registry = registry
        self.release = release
        self.minutes = minutes
        self.timeout = timeout
        self.probing: set[int] = set()  # agent ids with a probe in flight
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.minutes > 0:
            self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel(self.task)

    def serving(self) -> dict[str, list[int]]:
        """Model → the agents that could answer a probe for it now."""
        models: dict[str, list[int]] = {}
        for link in self.registry.links.values():
            if self._serves(link):
                for model in link.models:
                    models.setdefault(model, []).append(link.agent_id)
        return {model: sorted(agents) for model, agents in sorted(models.items())}

    @staticmethod
    def _serves(link: Link) -> bool:
        return link.ready and not link.paused and not link.draining

    async def probe(self, model: str) -> ProbeRun:
        """Ask every agent serving `model` (with a free slot) the same question, compare, and store the verdicts."""
        run = ProbeRun(model)
        links = [link for link in self.registry.links.values() if model in link.models and self._serves(link)]
        targets = []
        for link in links:
            if link.has_room and link.agent_id not in self.probing:
                targets.append(link)
            else:
                run.skipped.append(link.name)
        body = probes.probe_body(model, random.choice(probes.PROMPTS))
        outcomes = await asyncio.gather(*(self._ask(link, body) for link in targets), return_exceptions=True)
        answers: dict[int, str] = {}
        for link, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, str):
                answers[link.agent_id] = outcome
            elif isinstance(outcome, _NoAnswer | AgentLost | AnswerTooLarge | TimeoutError):
                run.failed.append(f"{link.name}: {outcome or 'timed out'}")
            elif isinstance(outcome, BaseException):
                raise outcome
        async with self.database.session() as db:
            verdicts = probes.judge(answers, await probes.reference_for(db, model))
            await probes.record(db, uuid.uuid4().hex, model, answers, verdicts)
        names = {link.agent_id: link.name for link in targets}
        for agent_id, agreed in verdicts.items():
            (run.agreed if agreed else run.disagreed).append(names[agent_id])
        if run.disagreed:
            log.warning("probe of %s: answers disagree (%s)", model, ", ".join(run.disagreed))
        return run

    async def _ask(self, link: Link, body: str) -> str:
        request_id = uuid.uuid4().hex
        self.probing.add(link.agent_id)
        link.in_flight += 1  # the scheduler counts the probe against the agent's capacity
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    exchange = await link.open(request_id, probes.PATH, body)
                    status, _ = await exchange.started
                    raw = await exchange.body(MAX_ANSWER)
            except (AgentLost, AnswerTooLarge, TimeoutError):
                await link.cancel(request_id)
                raise
        finally:
            link.finish(request_id)
            self.probing.discard(link.agent_id)
            self.release(link)  # hands the slot to a waiting request, if any
        if status != 200:
            raise _NoAnswer(f"HTTP {status}")
        text = probes.answer_text(raw)
        if text is None:
            raise _NoAnswer("the answer is not a chat completion")
        return text

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.minutes * 60 * random.uniform(0.5, 1.5))
            for model, agents in self.serving().items():
                if len(agents) < 2:
                    continue  # nothing to compare with (a reference is one of the agents serving it)
                try:
                    await self.probe(model)
                except Exception:
                    log.exception("probing %s failed", model)
