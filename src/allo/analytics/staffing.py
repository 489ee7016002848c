"""Staffing: how many agents a stream of contacts needs to meet a service level.

Two models of one queue (Poisson arrivals, exponential handle times, first come first served,
any agent takes any contact):

- Erlang C (M/M/N): nobody gives up. The trade's reference, but it overstates the queue when
  customers do leave, and it has no answer once the load reaches the agents.
- Erlang A (M/M/N+M): each waiting contact abandons after an exponential patience. Closer to
  social care, where an unanswered customer goes away, and stable for any number of agents.

Service level, in both, is the share of all offered contacts answered within the target answer
time: a contact that abandons, before or after the target, counts against it.

Chat concurrency: an agent who holds k conversations at once is modelled as k servers, the handle
time being the elapsed time of one conversation (from answer to close, longer than it would take
on its own). N agents are then N·k servers, agents stay whole, and occupancy is the share of those
conversation slots in use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import betainc, logsumexp

# Erlang A cuts the queue where the probability of finding more contacts waiting is provably
# below this, and gives up (ValueError) rather than model a queue longer than the cap.
TAIL_PROBABILITY = 1e-12
MAX_QUEUE_PLACES = 1_000_000


@dataclass(frozen=True)
class Staffing:
    """What a number of agents delivers on an offered load.

    `service_level` is the share of all offered contacts answered within the target.
    `average_speed_of_answer_s` is the mean wait of the contacts that are answered (in Erlang C,
    all of them). `abandonment`, Erlang A only, is the share of offered contacts that give up.
    """

    agents: int
    service_level: float
    probability_of_waiting: float
    occupancy: float
    average_speed_of_answer_s: float
    offered_load_erlangs: float
    abandonment: float | None = None


def offered_load(contacts: float, period_s: float, handle_time_s: float) -> float:
    """Erlangs: the agents' worth of work that arrives, contacts * handle time / period."""
    _check_count("contacts", contacts)
    _check_duration("period", period_s)
    _check_duration("handle time", handle_time_s)
    return contacts * handle_time_s / period_s


def erlang_b(servers: int, load_erlangs: float) -> float:
    """The share of contacts lost with `servers` and no queue.

    By the recursion B(n) = A·B(n-1) / (n + A·B(n-1)): no factorial or power, every step between
    0 and 1, so 10,000 erlangs neither overflow nor lose precision.
    """
    _check_whole("servers", servers, least=0)
    _check_count("load", load_erlangs)
    blocking = 1.0
    for n in range(1, servers + 1):
        blocking = load_erlangs * blocking / (n + load_erlangs * blocking)
    return blocking


def erlang_c(
    agents: int,
    load_erlangs: float,
    handle_time_s: float,
    target_s: float,
    *,
    concurrency: int = 1,
) -> Staffing:
    """Erlang C (M/M/N, nobody abandons) for `agents` agents on `load_erlangs`.

    Probability of waiting C = N·B / (N - A·(1 - B)) from Erlang B, service level
    1 - C·exp(-(N - A)·t / handle time), average speed of answer C·handle time / (N - A),
    occupancy A / N, with N the servers (agents * concurrency).

    With the load at or above the servers the queue grows without end. That is an answer, not an
    error, so that a search over agents can step through it: nobody is answered in time (service
    level 0), everyone waits, the wait is infinite and the agents are always busy.
    """
    _check_agents(agents, concurrency)
    _check_count("load", load_erlangs)
    _check_duration("handle time", handle_time_s)
    _check_duration("target", target_s, zero_allowed=True)
    servers = agents * concurrency
    if servers <= load_erlangs:
        return Staffing(agents, 0.0, 1.0, 1.0, math.inf, load_erlangs)
    blocking = erlang_b(servers, load_erlangs)
    waiting = servers * blocking / (servers - load_erlangs * (1 - blocking))
    spare = servers - load_erlangs
    return Staffing(
        agents=agents,
        service_level=1 - waiting * math.exp(-spare * target_s / handle_time_s),
        probability_of_waiting=waiting,
        occupancy=load_erlangs / servers,
        average_speed_of_answer_s=waiting * handle_time_s / spare,
        offered_load_erlangs=load_erlangs,
    )


def erlang_a(
    agents: int,
    load_erlangs: float,
    handle_time_s: float,
    target_s: float,
    patience_s: float,
    *,
    concurrency: int = 1,
) -> Staffing:
    """Erlang A (M/M/N+M): waiting contacts abandon after an exponential patience (mean
    `patience_s`).

    The contacts in the system form a birth-death chain: arrivals at λ, departures at
    min(n, N)·μ (answered contacts finishing) + max(n - N, 0)·θ (waiting ones giving up), with
    μ = 1/handle time and θ = 1/patience. Its stationary distribution is what an arriving contact
    finds (PASTA), so the probability of waiting is P(n ≥ N).

    A contact finding every server busy and j waiting ahead is an absorbing chain over its
    places: it moves up at N·μ + i·θ while i are ahead, is answered at N·μ once none is, and gives
    up at θ all along. So it stays at place i an exponential time at rate N·μ + (i + 1)·θ whatever
    ends it, and is answered with probability Π (N·μ + i·θ)/(N·μ + (i + 1)·θ), that is
    N·μ/(N·μ + (j + 1)·θ), after a wait S, the sum of those stays. Their rates are in arithmetic
    progression, so e^(-θ·S) is Beta(N·μ/θ + 1, j + 1) distributed (the Laplace transform of S is
    that law's moments, as in Rényi's representation of exponential order statistics): P(S ≤ t)
    is a regularised incomplete beta function, exact, and vectorised over j where evaluating the
    chain (`expm_multiply`) costs thousands of steps at 10,000 erlangs.

    `average_speed_of_answer_s` is the mean wait of answered contacts, Σ 1/(N·μ + (i + 1)·θ);
    those who give up are in `abandonment`, not in the average.
    """
    _check_agents(agents, concurrency)
    _check_count("load", load_erlangs)
    _check_duration("handle time", handle_time_s)
    _check_duration("target", target_s, zero_allowed=True)
    _check_duration("patience", patience_s)
    if load_erlangs == 0:
        return Staffing(agents, 1.0, 0.0, 0.0, 0.0, 0.0, abandonment=0.0)
    servers = agents * concurrency
    # Rates in units of μ: arrivals at A, each waiting contact gives up at β.
    beta = handle_time_s / patience_s
    free, busy = _arrival_view(servers, load_erlangs, beta)
    ahead = np.arange(busy.size)
    leave = servers + beta * (ahead + 1)
    abandonment = float(busy @ ((leave - servers) / leave))
    answered_late = busy * (servers / leave)
    wait_if_answered = np.cumsum(1 / leave) * handle_time_s
    in_time = betainc(ahead + 1, servers / beta + 1, -math.expm1(-target_s / patience_s))
    return Staffing(
        agents=agents,
        service_level=free + float(answered_late @ in_time),
        # Rounding can push these a few ulps past 1 when every server is busy.
        probability_of_waiting=min(1.0, float(busy.sum())),
        occupancy=min(1.0, load_erlangs * (1 - abandonment) / servers),
        average_speed_of_answer_s=float(answered_late @ wait_if_answered) / (1 - abandonment),
        offered_load_erlangs=load_erlangs,
        abandonment=abandonment,
    )


def agents_needed(
    contacts: float,
    period_s: float,
    handle_time_s: float,
    target_s: float,
    level: float,
    *,
    patience_s: float | None = None,
    concurrency: int = 1,
) -> Staffing:
    """The fewest whole agents answering `level` of the contacts within `target_s`: Erlang C, or
    Erlang A with a patience.

    `contacts` arrive in `period_s` (100 per 1800 s); the target may be 0 (answered without
    waiting). No contacts need no agents (service level 1). A level of 1 is refused while contacts
    arrive, as some always wait past any target; so is a level still missed at an ample cap
    (A + 50·√A + 100 servers, where waiting is far below floating-point precision).
    """
    load = offered_load(contacts, period_s, handle_time_s)
    _check_duration("target", target_s, zero_allowed=True)
    if not 0 < level <= 1:
        raise ValueError(f"service level must be above 0 and at most 1, not {level}")
    if patience_s is not None:
        _check_duration("patience", patience_s)
    _check_whole("concurrency", concurrency, least=1)
    if load == 0:
        return Staffing(0, 1.0, 0.0, 0.0, 0.0, 0.0, abandonment=None if patience_s is None else 0.0)
    if level == 1:
        raise ValueError(
            "a service level of 1 cannot be reached while contacts arrive: some always wait "
            "longer than the target"
        )

    def at(agents: int) -> Staffing:
        if patience_s is None:
            return erlang_c(agents, load, handle_time_s, target_s, concurrency=concurrency)
        return erlang_a(agents, load, handle_time_s, target_s, patience_s, concurrency=concurrency)

    cap = math.ceil((load + 50 * math.sqrt(load) + 100) / concurrency)
    if patience_s is None:
        # Erlang C answers nobody in time until the servers exceed the load.
        floor = guess = math.floor(load / concurrency) + 1
    else:
        # Servers carry at most their number in erlangs, so fewer than level·A cannot answer a
        # share `level`. Erlang C's answer is a close guess, and starting there spares modelling
        # badly overloaded queues, the long ones, when patience is long.
        floor = max(1, math.floor(level * load / concurrency))
        guess = agents_needed(
            contacts, period_s, handle_time_s, target_s, level, concurrency=concurrency
        ).agents
    return _fewest(at, level, floor, guess, cap)


def _fewest(
    at: Callable[[int], Staffing], level: float, floor: int, guess: int, cap: int
) -> Staffing:
    """The fewest agents in floor…cap reaching `level`, the service level growing with agents.

    Gallops away from the guess (1, 2, 4… agents) until the answer is bracketed, then bisects:
    a few dozen evaluations at most, even at 10,000 erlangs.
    """
    tried: dict[int, Staffing] = {}

    def meets(agents: int) -> bool:
        if agents not in tried:
            tried[agents] = at(agents)
        return tried[agents].service_level >= level

    # `failing` misses the level (floor - 1 standing for "too few"), `meeting` reaches it.
    step = 1
    if meets(guess):
        failing, meeting = floor - 1, guess
        while meeting > floor:
            probe = max(floor, meeting - step)
            if not meets(probe):
                failing = probe
                break
            meeting, step = probe, 2 * step
    else:
        failing = guess
        while True:
            if failing >= cap:
                raise ValueError(
                    f"a service level of {level} is not reached even with {cap} agents"
                )
            probe = min(cap, failing + step)
            if meets(probe):
                break
            failing, step = probe, 2 * step
        meeting = probe
    while meeting - failing > 1:
        middle = (failing + meeting) // 2
        if meets(middle):
            meeting = middle
        else:
            failing = middle
    return tried[meeting]


def _arrival_view(servers: int, load: float, beta: float) -> tuple[float, NDArray[np.float64]]:
    """What an arriving contact finds: P(a server is free), and P(all busy and j waiting) for
    j = 0…J, β being the abandonment rate in units of the service rate.

    Worked in logarithms relative to P(n = N), so neither A^N/N! nor a long queue overflows.
    The ratio between successive places, A / (N + j·β), only falls, so once below 1 the rest of
    the tail is under a geometric series: the queue is cut at the first place where that bound
    is below TAIL_PROBABILITY, then normalised. A queue still growing at MAX_QUEUE_PLACES is
    refused (ValueError).
    """
    # P(n)/P(N) for n < N: each step down from N multiplies by m/A, m = N … n+1.
    log_free = logsumexp(np.cumsum(np.log(np.arange(servers, 0, -1) / load)))
    places = 256
    while True:
        log_ratio = math.log(load) - np.log(servers + beta * np.arange(1, places + 1))
        log_busy = np.concatenate(([0.0], np.cumsum(log_ratio)))
        log_total = np.logaddexp(log_free, logsumexp(log_busy))
        # Tail beyond place j ≤ P(j)·r / (1 - r), r the next ratio; -expm1 is 1 - r, and is not
        # positive while r ≥ 1, where no bound holds.
        settled = np.exp(log_busy[:-1] + log_ratio - log_total) < TAIL_PROBABILITY * -np.expm1(
            log_ratio
        )
        if settled.any():
            break
        if places >= MAX_QUEUE_PLACES:
            raise ValueError(
                f"with {servers} servers the queue does not settle within "
                f"{MAX_QUEUE_PLACES:,} waiting contacts: patience is too long for this load "
                "(leave it out for Erlang C)"
            )
        places = min(4 * places, MAX_QUEUE_PLACES)
    log_busy = log_busy[: int(settled.argmax()) + 1]
    log_total = np.logaddexp(log_free, logsumexp(log_busy))
    return float(np.exp(log_free - log_total)), np.exp(log_busy - log_total)


def _check_count(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number ≥ 0, not {value}")


def _check_duration(name: str, seconds: float, *, zero_allowed: bool = False) -> None:
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_allowed):
        bound = "≥ 0" if zero_allowed else "above 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, not {seconds}")


def _check_whole(name: str, value: int, *, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number ≥ {least}, not {value!r}")


def _check_agents(agents: int, concurrency: int) -> None:
    _check_whole("agents", agents, least=1)
    _check_whole("concurrency", concurrency, least=1)
