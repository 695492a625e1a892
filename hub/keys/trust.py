"""Whose GPUs may see a key's prompts: the key's trust scope, a plain value the router checks at every pick.

    any       every GPU the member may use (shared ones and their own): the default
    own       only the member's own GPUs
    trusted   the member's own GPUs and those of the members they named
    verified  the member's own GPUs and agents an admin has marked verified

The member's own GPUs are inside every scope: whoever runs them already sees everything the member sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from hub.errors import BadRequest


class Trust(StrEnum):
    ANY = "any"
    OWN = "own"
    TRUSTED = "trusted"
    VERIFIED = "verified"


REACH = {
    Trust.ANY: "any GPU you may use",
    Trust.OWN: "your own GPUs",
    Trust.TRUSTED: "your own GPUs and those of members you trust",
    Trust.VERIFIED: "your own GPUs and agents an admin has verified",
}


def parse_trust(text: str) -> Trust:
    try:
        return Trust(text.strip().lower() or Trust.ANY)
    except ValueError:
        raise BadRequest(f"Choose whose GPUs the key may use (any, own, trusted or verified), got {text!r}.") from None


def split_emails(text: str) -> list[str]:
    """Addresses as people type a list of them: separated by commas, semicolons, spaces or new lines."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


@dataclass(frozen=True)
class Scope:
    trust: Trust = Trust.ANY
    providers: frozenset[int] = frozenset()  # the members a `trusted` key names

    def admits(self, *, owner_id: int, verified: bool, user_id: int) -> bool:
        """Whether `user_id`'s request under this scope may go to a GPU of `owner_id`."""
        if owner_id == user_id or self.trust is Trust.ANY:
            return True
        if self.trust is Trust.TRUSTED:
            return owner_id in self.providers
        return self.trust is Trust.VERIFIED and verified

    @property
    def limited(self) -> bool:
        return self.trust is not Trust.ANY

    @property
    def reach(self) -> str:
        return REACH[self.trust]


ANY = Scope()
