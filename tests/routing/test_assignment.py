"""Assignment strategies: balanced, round robin and sticky, within capacity and skills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from allo.routing.assignment import AgentLoad, Need, choose, eligible

T0 = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)


def agent(
    agent_id: int,
    holding: int = 0,
    capacity: int = 3,
    online: bool = True,
    skills: tuple[str, ...] = (),
    idle_minutes: float | None = None,
) -> AgentLoad:
    last = None if idle_minutes is None else T0 - timedelta(minutes=idle_minutes)
    return AgentLoad(agent_id, online, capacity, holding, frozenset(skills), last)


def test_balanced_picks_the_fewest_held_relative_to_capacity() -> None:
    team = [agent(1, holding=2), agent(2, holding=1), agent(3, holding=2, capacity=6)]
    chosen = choose("balanced", team, Need())
    assert chosen is not None and chosen.agent_id == 2
    team = [agent(1, holding=2), agent(3, holding=2, capacity=6)]
    chosen = choose("balanced", team, Need())
    assert chosen is not None and chosen.agent_id == 3


def test_balanced_breaks_ties_by_the_longest_without_a_new_conversation() -> None:
    team = [agent(1, idle_minutes=5), agent(2, idle_minutes=40), agent(3, idle_minutes=12)]
    chosen = choose("balanced", team, Need())
    assert chosen is not None and chosen.agent_id == 2
    never_assigned = agent(4)
    chosen = choose("balanced", [*team, never_assigned], Need())
    assert chosen is not None and chosen.agent_id == 4


def test_nobody_offline_or_full_is_chosen_and_none_means_the_queue_keeps_it() -> None:
    team = [agent(1, online=False), agent(2, holding=3), agent(3, holding=1, online=False)]
    assert eligible(team, Need()) == []
    for strategy in ("balanced", "round_robin", "sticky"):
        assert choose(strategy, team, Need(last_agent_id=1)) is None


def test_skills_the_conversation_needs_are_required() -> None:
    team = [agent(1, skills=("en",)), agent(2, holding=2, skills=("fr", "vip"))]
    chosen = choose("balanced", team, Need(skills=frozenset({"fr"})))
    assert chosen is not None and chosen.agent_id == 2
    assert choose("balanced", team, Need(skills=frozenset({"fr", "de"}))) is None


def test_round_robin_takes_the_next_agent_by_id_and_wraps() -> None:
    team = [agent(3), agent(1), agent(2, holding=3)]
    order = []
    last = None
    for _ in range(4):
        chosen = choose("round_robin", team, Need(), last)
        assert chosen is not None
        order.append(chosen.agent_id)
        last = chosen.agent_id
    assert order == [1, 3, 1, 3]


def test_sticky_returns_to_the_last_agent_when_they_can_take_it() -> None:
    team = [agent(1), agent(2, holding=2)]
    chosen = choose("sticky", team, Need(last_agent_id=2))
    assert chosen is not None and chosen.agent_id == 2
    full = [agent(1), agent(2, holding=3)]
    chosen = choose("sticky", full, Need(last_agent_id=2))
    assert chosen is not None and chosen.agent_id == 1
    chosen = choose("sticky", team, Need(last_agent_id=99))
    assert chosen is not None and chosen.agent_id == 1


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown assignment strategy"):
        choose("random", [agent(1)], Need())
