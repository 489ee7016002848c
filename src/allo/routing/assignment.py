"""Who gets a conversation: the team's assignment strategy, over its agents' current load.

The choice is pure: the service reads the agents' loads inside the transaction that assigns (under
the team's lock, so two workers never both fill an agent's last place) and the simulator keeps
them in memory; both call `choose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

STRATEGIES = ("balanced", "round_robin", "sticky")

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AgentLoad:
    """An agent as assignment sees it, for one kind of channel."""

    agent_id: int
    online: bool
    capacity: int  # conversations of this kind of channel the agent can hold at once
    holding: int  # conversations of this kind the agent holds now
    skills: frozenset[str] = frozenset()
    last_assigned_at: datetime | None = None

    @property
    def has_room(self) -> bool:
        return self.online and self.holding < self.capacity


@dataclass(frozen=True)
class Need:
    """What a conversation asks of the agent who takes it."""

    skills: frozenset[str] = frozenset()
    last_agent_id: int | None = None  # who last answered this contact, for sticky assignment


def eligible(agents: Sequence[AgentLoad], need: Need) -> list[AgentLoad]:
    """Online agents with room left and every skill the conversation needs."""
    return [agent for agent in agents if agent.has_room and need.skills <= agent.skills]


def choose(
    strategy: str,
    agents: Sequence[AgentLoad],
    need: Need,
    last_round_robin: int | None = None,
) -> AgentLoad | None:
    """The agent to assign, or None when nobody can take it now (it stays in the queue).

    balanced: the fewest conversations held relative to capacity, then the longest without a
    new one. round_robin: the next agent by id after `last_round_robin`. sticky: the agent who
    last answered this contact when they can take it, else balanced.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown assignment strategy {strategy!r}: one of {STRATEGIES}")
    candidates = eligible(agents, need)
    if not candidates:
        return None
    if strategy == "sticky":
        for agent in candidates:
            if agent.agent_id == need.last_agent_id:
                return agent
    if strategy == "round_robin":
        ordered = sorted(candidates, key=lambda agent: agent.agent_id)
        after = [
            agent
            for agent in ordered
            if last_round_robin is None or agent.agent_id > last_round_robin
        ]
        return (after or ordered)[0]
    return min(candidates, key=_balance_key)


def _balance_key(agent: AgentLoad) -> tuple[float, datetime, int]:
    return (agent.holding / agent.capacity, agent.last_assigned_at or _NEVER, agent.agent_id)
