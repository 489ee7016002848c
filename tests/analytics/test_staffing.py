"""Erlang C and Erlang A staffing, against published figures, a simulation and each other."""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import time
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.linalg import expm_multiply

from allo.analytics.staffing import agents_needed, erlang_a, erlang_b, erlang_c, offered_load

# The issue's example: 100 contacts per 30 minutes, 180 s to handle each, 80% within 20 s.
EXAMPLE: dict[str, Any] = {
    "contacts": 100,
    "period_s": 1800,
    "handle_time_s": 180,
    "target_s": 20,
    "level": 0.8,
}


def test_the_issues_example_needs_14_agents() -> None:
    result = agents_needed(**EXAMPLE)

    assert result.agents == 14
    assert round(result.service_level, 4) == 0.8884
    assert round(result.probability_of_waiting, 4) == 0.1741
    assert result.offered_load_erlangs == pytest.approx(10)
    assert result.occupancy == pytest.approx(10 / 14)
    assert result.abandonment is None


def test_13_agents_are_not_enough_for_the_issues_example() -> None:
    result = erlang_c(13, 10.0, 180, 20)

    assert round(result.service_level, 4) == 0.7956
    assert result.service_level < 0.8


def test_erlang_b_and_c_match_two_erlangs_on_three_servers_worked_by_hand() -> None:
    # B(3, 2) = (2³/3!) / (1 + 2 + 2²/2! + 2³/3!) = 4/19;
    # C = N·B / (N - A·(1 - B)) = (12/19) / (3 - 30/19) = 4/9.
    result = erlang_c(3, 2.0, 60, 30)

    assert erlang_b(2, 1.0) == pytest.approx(0.2, rel=1e-12)
    assert erlang_b(3, 2.0) == pytest.approx(4 / 19, rel=1e-12)
    assert result.probability_of_waiting == pytest.approx(4 / 9, rel=1e-12)
    assert result.service_level == pytest.approx(1 - 4 / 9 * math.exp(-0.5), rel=1e-12)
    assert result.average_speed_of_answer_s == pytest.approx(4 / 9 * 60, rel=1e-12)
    assert result.occupancy == pytest.approx(2 / 3)


def test_a_target_of_zero_counts_only_contacts_answered_without_waiting() -> None:
    for result in (erlang_c(14, 10.0, 180, 0), erlang_a(14, 10.0, 180, 0, 120)):
        assert result.service_level == pytest.approx(1 - result.probability_of_waiting, abs=1e-12)


def test_erlang_c_at_or_over_capacity_never_reaches_a_level_rather_than_failing() -> None:
    for agents in (5, 10):
        result = erlang_c(agents, 10.0, 180, 20)

        assert result.service_level == 0
        assert result.probability_of_waiting == 1
        assert result.average_speed_of_answer_s == math.inf
        assert result.occupancy == 1


def test_erlang_a_is_stable_with_fewer_agents_than_the_load() -> None:
    result = erlang_a(8, 10.0, 180, 20, 120)

    assert 0 < result.service_level < 0.8
    assert result.abandonment is not None
    # The agents carry at most 8 of the 10 erlangs: at least a fifth of the contacts give up.
    assert 0.2 <= result.abandonment < 1
    assert 0.9 < result.occupancy <= 1
    assert math.isfinite(result.average_speed_of_answer_s)


def test_erlang_a_with_endless_patience_is_erlang_c() -> None:
    for agents in (11, 14, 20):
        a = erlang_a(agents, 10.0, 180, 20, patience_s=1e7)
        c = erlang_c(agents, 10.0, 180, 20)

        assert a.service_level == pytest.approx(c.service_level, abs=1e-4)
        assert a.probability_of_waiting == pytest.approx(c.probability_of_waiting, abs=1e-4)
        assert a.occupancy == pytest.approx(c.occupancy, abs=1e-4)
        assert a.average_speed_of_answer_s == pytest.approx(c.average_speed_of_answer_s, rel=1e-3)
        assert a.abandonment is not None and a.abandonment < 1e-4
    assert agents_needed(**EXAMPLE, patience_s=1e7).agents == 14


def test_patience_lets_fewer_agents_meet_the_issues_example() -> None:
    result = agents_needed(**EXAMPLE, patience_s=120)

    assert result.agents == 12
    assert round(result.service_level, 4) == 0.8256
    assert round(result.probability_of_waiting, 4) == 0.2798
    assert result.abandonment is not None and round(result.abandonment, 4) == 0.0616
    assert erlang_a(11, 10.0, 180, 20, 120).service_level < 0.8


def test_erlang_a_service_level_is_the_absorbing_chain_solved_with_expm_multiply() -> None:
    # The module uses a closed form (an incomplete beta function) for the chain of places a
    # waiting contact passes; here the chain itself, with the stationary distribution from the
    # plain product formula.
    servers, load, handle, target, patience = 11, 10.0, 180.0, 20.0, 120.0
    mu, theta = 1 / handle, 1 / patience
    places = 200
    weights = [1.0]
    for n in range(1, servers + places):
        weights.append(
            weights[-1] * (load * mu) / (min(n, servers) * mu + max(n - servers, 0) * theta)
        )
    stationary = np.array(weights) / sum(weights)
    size = places + 2  # places 0…places-1 ahead, then "answered", then "abandoned"
    answered, abandoned = places, places + 1
    rates = sparse.lil_array((size, size))
    for ahead in range(places):
        move_up = servers * mu + ahead * theta
        rates[answered if ahead == 0 else ahead - 1, ahead] += move_up
        rates[abandoned, ahead] += theta
        rates[ahead, ahead] -= move_up + theta
    start = np.zeros(size)
    start[:places] = stationary[servers:]
    final = expm_multiply(rates.tocsc() * target, start)

    result = erlang_a(servers, load, handle, target, patience)

    assert result.service_level == pytest.approx(
        stationary[:servers].sum() + final[answered], abs=1e-9
    )
    assert result.probability_of_waiting == pytest.approx(stationary[servers:].sum(), abs=1e-12)


def simulate_erlang_a(
    servers: int,
    contacts_per_s: float,
    handle_time_s: float,
    patience_s: float,
    target_s: float,
    contacts: int,
    seed: int,
) -> dict[str, float]:
    """M/M/N+M, first come first served, contact by contact: a contact's wait until an agent is
    free depends only on those ahead that stayed, so each one either gives up (its patience is
    shorter than that wait) or takes the earliest agent free after it arrives."""
    rng = random.Random(seed)
    free_at = [0.0] * servers  # a heap: when each agent is next free
    now = 0.0
    waited = in_time = gave_up = answered = 0
    total_wait = 0.0
    warm_up = contacts // 50  # the queue starts empty: count once it has filled
    for number in range(warm_up + contacts):
        now += rng.expovariate(contacts_per_s)
        wait = max(0.0, free_at[0] - now)
        gives_up = wait > rng.expovariate(1 / patience_s)
        if not gives_up:
            heapq.heapreplace(free_at, now + wait + rng.expovariate(1 / handle_time_s))
        if number < warm_up:
            continue
        waited += wait > 0
        if gives_up:
            gave_up += 1
        else:
            answered += 1
            in_time += wait <= target_s
            total_wait += wait
    return {
        "service_level": in_time / contacts,
        "abandonment": gave_up / contacts,
        "probability_of_waiting": waited / contacts,
        "average_speed_of_answer_s": total_wait / answered,
    }


@pytest.mark.parametrize(
    ("agents", "concurrency", "patience_s"), [(11, 1, 120.0), (9, 1, 60.0), (6, 2, 30.0)]
)
def test_erlang_a_agrees_with_a_simulation_of_the_queue(
    agents: int, concurrency: int, patience_s: float
) -> None:
    simulated = simulate_erlang_a(
        agents * concurrency, 1 / 18, 180, patience_s, 20, contacts=300_000, seed=agents
    )

    result = erlang_a(agents, 10.0, 180, 20, patience_s, concurrency=concurrency)

    assert result.service_level == pytest.approx(simulated["service_level"], abs=0.01)
    assert result.abandonment == pytest.approx(simulated["abandonment"], abs=0.01)
    assert result.probability_of_waiting == pytest.approx(
        simulated["probability_of_waiting"], abs=0.01
    )
    assert result.average_speed_of_answer_s == pytest.approx(
        simulated["average_speed_of_answer_s"], rel=0.05
    )


def test_two_conversations_at_once_is_erlang_c_on_twice_the_servers() -> None:
    assert erlang_c(7, 10.0, 180, 20, concurrency=2) == dataclasses.replace(
        erlang_c(14, 10.0, 180, 20), agents=7
    )
    assert erlang_a(7, 10.0, 180, 20, 120, concurrency=2) == dataclasses.replace(
        erlang_a(14, 10.0, 180, 20, 120), agents=7
    )
    for contacts in (37, 100, 250, 1000):
        alone = agents_needed(contacts, 1800, 180, 20, 0.8).agents
        two_at_once = agents_needed(contacts, 1800, 180, 20, 0.8, concurrency=2).agents

        assert two_at_once == math.ceil(alone / 2)


def test_10000_erlangs_are_staffed_well_under_a_second_without_overflow() -> None:
    started = time.perf_counter()
    c = agents_needed(100_000, 1800, 180, 20, 0.8)
    a = agents_needed(100_000, 1800, 180, 20, 0.8, patience_s=1800)
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5
    assert c.offered_load_erlangs == pytest.approx(10_000)
    assert 10_000 < c.agents < 10_100
    assert c.service_level >= 0.8 > erlang_c(c.agents - 1, 10_000.0, 180, 20).service_level
    assert a.agents <= c.agents
    assert a.service_level >= 0.8 > erlang_a(a.agents - 1, 10_000.0, 180, 20, 1800).service_level
    for result in (c, a):
        figures = (
            result.probability_of_waiting,
            result.occupancy,
            result.average_speed_of_answer_s,
        )
        assert all(math.isfinite(figure) for figure in figures)


def test_no_contacts_need_no_agents() -> None:
    result = agents_needed(0, 1800, 180, 20, 0.8)
    patient = agents_needed(0, 1800, 180, 20, 1.0, patience_s=60)

    assert (result.agents, result.service_level, result.abandonment) == (0, 1.0, None)
    assert (patient.agents, patient.service_level, patient.abandonment) == (0, 1.0, 0.0)


def test_a_level_of_one_cannot_be_reached_while_contacts_arrive() -> None:
    with pytest.raises(ValueError, match="cannot be reached"):
        agents_needed(**EXAMPLE | {"level": 1.0})
    with pytest.raises(ValueError, match="cannot be reached"):
        agents_needed(**EXAMPLE | {"level": 1.0}, patience_s=120)


def test_the_highest_levels_short_of_one_are_reached() -> None:
    result = agents_needed(**EXAMPLE | {"level": 0.999999})

    assert result.service_level >= 0.999999
    assert erlang_c(result.agents - 1, 10.0, 180, 20).service_level < 0.999999


def test_a_patience_too_long_for_an_overloaded_queue_is_refused() -> None:
    with pytest.raises(ValueError, match="patience is too long"):
        erlang_a(8, 10.0, 180, 20, 1e9)


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        ({"contacts": -1}, "contacts"),
        ({"contacts": math.nan}, "contacts"),
        ({"contacts": math.inf}, "contacts"),
        ({"period_s": 0}, "period"),
        ({"period_s": math.nan}, "period"),
        ({"handle_time_s": -180}, "handle time"),
        ({"handle_time_s": 0}, "handle time"),
        ({"target_s": -1}, "target"),
        ({"target_s": math.nan}, "target"),
        ({"level": 0}, "service level"),
        ({"level": 1.5}, "service level"),
        ({"level": math.nan}, "service level"),
        ({"patience_s": 0}, "patience"),
        ({"patience_s": -60}, "patience"),
        ({"patience_s": math.nan}, "patience"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
    ],
)
def test_bad_inputs_are_refused_naming_what_is_wrong(wrong: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        agents_needed(**EXAMPLE | wrong)


def test_the_models_refuse_no_agents_and_fractional_agents() -> None:
    with pytest.raises(ValueError, match="agents"):
        erlang_c(0, 10.0, 180, 20)
    with pytest.raises(ValueError, match="agents"):
        erlang_a(2.5, 10.0, 180, 20, 120)


def test_offered_load_is_contacts_times_handle_time_over_the_period() -> None:
    assert offered_load(100, 1800, 180) == 10
    assert offered_load(0, 60, 1) == 0
