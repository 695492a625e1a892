"""Bills the agents keep for the hub, so a crash of the hub loses no charge for an answer a client received.

When a request ends, the hub signs what it will write (the charge and the usage row, both already held to the
hub's bounds) and sends it to the agent that served it, before the end of the answer goes to the client. The
agent keeps the bill in a small local journal until the hub says it is written (`written`, after the recorder's
commit) and sends what is still unconfirmed again when it reconnects (`bills`). The hub checks its own signature,
that the bill was given to this agent and is at most BILL_DAYS old, and queues it for the recorder, which writes
each request id at most once (the ledger transaction and the usage row are both keyed by it). The bill holds the
hub's own numbers: a provider can keep one back (and lose what it earns) but cannot change or invent one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent import protocol
from hub.ledger.batch import Charge
from hub.proxy.recorder import Finished, Recorder, request_of
from hub.runtime import Tunnels

if TYPE_CHECKING:
    from hub.agents.live import Link

log = logging.getLogger("gpuclub")

BILL_DAYS = 7


class BadBill(ValueError):
    """A bill this hub did not sign for this agent, or too old to believe."""


@dataclass(frozen=True)
class Bills:
    key: bytes

    @classmethod
    def for_secret(cls, secret: str) -> Bills:
        return cls(hmac.new(secret.encode(), b"gpuclub agent bills v1", hashlib.sha256).digest())

    def sign(self, agent_id: int, finished: Finished) -> str:
        usage = dict(finished.usage or {})
        if isinstance(created := usage.get("created_at"), datetime):
            usage["created_at"] = created.isoformat()
        payload = {
            "agent": agent_id,
            "at": int(time.time()),
            "charge": asdict(finished.charge) if finished.charge else None,
            "usage": usage or None,
        }
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        data = base64.urlsafe_b64encode(raw).decode()
        return f"{data}.{self._mac(data)}"

    def verify(self, agent_id: int, bill: object, *, now: float | None = None) -> Finished:
        """The request a bill describes, to be written again; raises BadBill for anything else."""
        if not isinstance(bill, str) or len(bill) > protocol.MAX_BILL or bill.count(".") != 1:
            raise BadBill("not a bill")
        data, mac = bill.split(".")
        if not hmac.compare_digest(mac, self._mac(data)):
            raise BadBill("not signed by this hub")
        try:
            payload = json.loads(base64.urlsafe_b64decode(data))
            if payload["agent"] != agent_id:
                raise BadBill("given to another agent")
            if (now or time.time()) - payload["at"] > BILL_DAYS * 86400:
                raise BadBill(f"older than {BILL_DAYS} days")
            usage = payload["usage"]
            if usage is not None:
                usage["created_at"] = datetime.fromisoformat(usage["created_at"])
            charge = Charge(**payload["charge"]) if payload["charge"] else None
        except (KeyError, TypeError, ValueError) as exc:  # signed by us, but not in this version's shape
            raise BadBill(str(exc) if isinstance(exc, BadBill) else "not a bill this hub can read") from None
        return Finished(charge, usage, agent_id=agent_id, replayed=True)

    def _mac(self, data: str) -> str:
        digest = hmac.new(self.key, data.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def confirm(registry: Tunnels, written: Iterable[Finished]) -> None:
    """Tell each agent which of its bills are written now, so it can forget them (one frame per agent)."""
    by_agent: defaultdict[int, list[str]] = defaultdict(list)
    for finished in written:
        if finished.agent_id is not None:
            by_agent[finished.agent_id].append(request_of(finished))
    for agent_id, ids in by_agent.items():
        if (link := registry.get(agent_id)) is not None:
            link.post(protocol.text("written", ids=ids))


def entries(message: dict[str, Any]) -> list[tuple[str, object]]:
    """The (id, bill) pairs of an agent's `bills` frame; raises ValueError for a malformed frame."""
    bills = message.get("bills")
    if not isinstance(bills, list) or len(bills) > protocol.MAX_BILLS:
        raise ValueError(f"a bills frame carries a list of at most {protocol.MAX_BILLS} bills")
    found: list[tuple[str, object]] = []
    for entry in bills:
        if not isinstance(entry, dict) or not protocol.valid_id(entry.get("id")):
            raise ValueError("a bill without a valid request id")
        found.append((entry["id"], entry.get("bill")))
    return found


def replay(bills: Bills, recorder: Recorder, link: Link, sent: list[tuple[str, object]]) -> None:
    """An agent sent back bills not yet confirmed: queue the good ones, and confirm the bad ones at once (they
    will never be written, so the agent may forget them)."""
    link.bills_sent_back += len(sent)
    if link.bills_sent_back > protocol.MAX_BILLS_PER_CONNECTION:
        raise ValueError(f"more than {protocol.MAX_BILLS_PER_CONNECTION} bills sent back on one connection")
    refused: list[str] = []
    reason = ""
    for bill_id, bill in sent:
        try:
            finished = bills.verify(link.agent_id, bill)
            if request_of(finished) != bill_id:
                raise BadBill("its id is not the request's")
        except BadBill as exc:
            refused.append(bill_id)
            reason = str(exc)
            continue
        recorder.add(finished)
    if sent:
        log.info(
            "agent %s sent %d bills not yet confirmed; %d queued again",
            link.agent_id,
            len(sent),
            len(sent) - len(refused),
        )
    if refused:
        log.warning("agent %s: refused %d bills (%s)", link.agent_id, len(refused), reason)
        link.post(protocol.text("written", ids=refused))
