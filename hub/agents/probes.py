"""Model identity probes: the rules. Every agent serving a model gets the same small question; do the answers agree?

A probe is a normal chat completion (temperature 0, a fixed seed, a few tokens) from the hub itself: no member
sends it, so nobody pays for it and no usage row counts it. Batching on the GPU makes temperature 0 not quite
deterministic, so answers are compared by their words, not their bytes: two answers match when most of their words
are shared. With a reference agent (an admin's choice) an answer agrees when it matches the reference's; without
one, when it matches at least half of the other answers. A disagreement is only shown to admins and to the agent's
owner: nothing is paused or charged on probes alone. The runtime that sends probes is `prober.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.agents.models import Agent, ProbeReference, ProbeResult
from hub.errors import BadRequest, NotFound

PATH = "/v1/chat/completions"
# Questions with one short, unambiguous answer: a smaller or different model tends to word it differently. One is
# picked per run (all agents of a run get the same one), so a provider cannot match a single fixed prompt.
PROMPTS = (
    "List the first eight prime numbers, separated by commas.",
    "Name the planets of the solar system in order from the sun.",
    "Spell the word 'probability' backwards.",
    "Write the days of the week starting from Monday.",
)
SEED = 20261201
MAX_TOKENS = 8
# Below this share of common words two answers do not match. Reruns of one model at temperature 0 share nearly all
# of their words; a different model's eight tokens rarely share half.
THRESHOLD = 0.6
EXCERPT = 200
LATEST = 500  # results read back for the admin page: the latest run of every model is among them
_WORD = re.compile(r"\w+")


def probe_body(model: str, prompt: str) -> str:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": SEED,
            "max_tokens": MAX_TOKENS,
            "stream": False,
        }
    )


def answer_text(raw: bytes) -> str | None:
    """The text of a chat completion's first choice, or None when the body is not one."""
    try:
        body = json.loads(raw)
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def similarity(a: str, b: str) -> float:
    """The share of words two answers have in common (1.0: the same words, 0.0: none)."""
    first, second = Counter(words(a)), Counter(words(b))
    longest = max(sum(first.values()), sum(second.values()))
    if longest == 0:
        return 1.0
    return sum((first & second).values()) / longest


def judge(answers: dict[int, str], reference: int | None = None) -> dict[int, bool]:
    """Whether each agent's answer agrees; empty when there is nothing to compare an answer with.

    With a reference that answered, agreeing means matching it. Otherwise an answer agrees when it matches at least
    half of the others: of three, the odd one out disagrees; of two that differ, both do (nobody can tell which).
    """
    if reference is not None and reference in answers:
        expected = answers[reference]
        return {agent: agent == reference or similarity(text, expected) >= THRESHOLD for agent, text in answers.items()}
    if len(answers) < 2:
        return {}
    verdicts = {}
    for agent, text in answers.items():
        matches = sum(similarity(text, other) >= THRESHOLD for peer, other in answers.items() if peer != agent)
        verdicts[agent] = 2 * matches >= len(answers) - 1
    return verdicts


async def record(db: AsyncSession, run: str, model: str, answers: dict[int, str], verdicts: dict[int, bool]) -> None:
    for agent_id, agreed in verdicts.items():
        text = answers[agent_id]
        db.add(
            ProbeResult(
                run=run,
                model=model,
                agent_id=agent_id,
                answer_sha256=hashlib.sha256(" ".join(words(text)).encode()).hexdigest(),
                excerpt=" ".join(text.split())[:EXCERPT],
                agreed=agreed,
            )
        )
    await db.commit()


async def reference_for(db: AsyncSession, model: str) -> int | None:
    row = await db.get(ProbeReference, model)
    return row.agent_id if row else None


async def set_reference(db: AsyncSession, actor: User, model: str, agent_id: int | None) -> Agent | None:
    """Make `agent_id` the reference for `model`, or (None) go back to comparing with the majority."""
    require_admin(actor)
    model = model.strip()
    if not model or len(model) > 200:
        raise BadRequest("Please say which model (at most 200 characters).")
    if agent_id is None:
        await db.exec(delete(ProbeReference).where(col(ProbeReference.model) == model))
        await db.commit()
        return None
    agent = await db.get(Agent, agent_id)
    if agent is None or agent.revoked_at is not None:
        raise NotFound("No such GPU.")
    await db.merge(ProbeReference(model=model, agent_id=agent.pk, set_by=actor.pk))
    await db.commit()
    return agent


@dataclass(frozen=True)
class ProbeAnswer:
    agent_id: int
    agent: str  # "desk-4090 (pat@lab.example.org)"
    agreed: bool
    excerpt: str
    at: datetime


@dataclass(frozen=True)
class ModelProbes:
    model: str
    reference: int | None
    serving: list[tuple[int, str]]  # the agents serving it now, for the reference choice
    latest: list[ProbeAnswer]  # the last run's answers

    @property
    def disagreements(self) -> int:
        return sum(not answer.agreed for answer in self.latest)


async def _labels(db: AsyncSession, agent_ids: set[int]) -> dict[int, str]:
    if not agent_ids:
        return {}
    rows = await db.exec(
        select(Agent.id, Agent.name, User.email)
        .join(User, col(User.id) == col(Agent.user_id))
        .where(col(Agent.id).in_(agent_ids))
    )
    return {agent_id: f"{name} ({email})" for agent_id, name, email in rows.all() if agent_id is not None}


async def overview(db: AsyncSession, actor: User, serving: dict[str, list[int]]) -> list[ModelProbes]:
    """Every model served now (`serving`: model → live agent ids) or probed before, with its last run."""
    require_admin(actor)
    results = (await db.exec(select(ProbeResult).order_by(col(ProbeResult.id).desc()).limit(LATEST))).all()
    runs: dict[str, str] = {}
    for result in results:
        runs.setdefault(result.model, result.run)
    latest = [result for result in results if runs.get(result.model) == result.run]
    references = {row.model: row.agent_id for row in (await db.exec(select(ProbeReference))).all()}
    ids = {r.agent_id for r in latest} | set(references.values()) | {a for agents in serving.values() for a in agents}
    labels = await _labels(db, ids)
    models = sorted(set(serving) | set(runs) | set(references))
    return [
        ModelProbes(
            model=model,
            reference=references.get(model),
            serving=[(agent_id, labels.get(agent_id, f"agent {agent_id}")) for agent_id in serving.get(model, [])],
            latest=[
                ProbeAnswer(r.agent_id, labels.get(r.agent_id, "a removed GPU"), r.agreed, r.excerpt, r.created_at)
                for r in sorted(latest, key=lambda r: r.agent_id)
                if r.model == model
            ],
        )
        for model in models
    ]


@dataclass(frozen=True)
class ProbeFlag:
    model: str
    disagreed: int
    probes: int


async def flags_by_agent(db: AsyncSession, agent_ids: list[int], since: datetime) -> dict[int, list[ProbeFlag]]:
    """Per agent, the models whose probe answers disagreed at least once since `since` (for the owner's page)."""
    if not agent_ids:
        return {}
    disagreed = func.sum(case((col(ProbeResult.agreed).is_(False), 1), else_=0))
    rows = await db.exec(
        select(ProbeResult.agent_id, ProbeResult.model, disagreed, func.count())
        .where(col(ProbeResult.agent_id).in_(agent_ids), col(ProbeResult.created_at) >= since)
        .group_by(col(ProbeResult.agent_id), col(ProbeResult.model))
        .order_by(col(ProbeResult.model))
    )
    flags: dict[int, list[ProbeFlag]] = {}
    for agent_id, model, bad, probes in rows.all():
        if bad:
            flags.setdefault(agent_id, []).append(ProbeFlag(model, int(bad), int(probes)))
    return flags
