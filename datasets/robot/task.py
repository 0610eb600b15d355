"""The swap task's logic: two configurations whose intermediate arrangements demand different moves, so that a policy
without memory succeeds in at most one of them (docs/experiments.md §4).

Arrangements list the object in slots A, B, C (1, 2, or None for empty). With X = (1, 2, –) and Y = (2, 1, –), and
object 1 always moved first:

    configuration 0: X → (–, 2, 1) → (2, –, 1) → Y       moves: 1 A→C, 2 B→A, 1 C→B
    configuration 1: Y → (2, –, 1) → (–, 2, 1) → X       moves: 1 B→C, 2 A→B, 1 C→A

Both intermediate arrangements occur in both configurations with different next moves, and each configuration ends
where the other one starts. A memoryless policy (a function of the current arrangement) therefore finishes at most
one configuration (:func:`memoryless_success`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

Arrangement = tuple[int | None, int | None, int | None]

X: Arrangement = (1, 2, None)
Y: Arrangement = (2, 1, None)
START = (X, Y)  # configuration c starts at START[c] ...
GOAL = (Y, X)  # ... and must end at GOAL[c]


class Move(NamedTuple):
    obj: int  # 1 or 2
    src: int  # slot index 0..2
    dst: int


def apply(arrangement: Arrangement, move: Move) -> Arrangement:
    """The arrangement after ``move``; raises when the move is impossible (wrong object, occupied target)."""
    if arrangement[move.src] != move.obj or arrangement[move.dst] is not None:
        raise ValueError(f"move {move} is impossible in arrangement {arrangement}")
    slots = list(arrangement)
    slots[move.src], slots[move.dst] = None, move.obj
    return tuple(slots)  # type: ignore[return-value]


def plan(configuration: int) -> list[Move]:
    """The expert's three moves for configuration 0 or 1: park object 1 in the free slot, move object 2 into the slot
    object 1 left, bring object 1 into the slot object 2 left."""
    if configuration not in (0, 1):
        raise ValueError(f"configuration must be 0 or 1, got {configuration}")
    start = START[configuration]
    a1, a2, free = start.index(1), start.index(2), start.index(None)
    return [Move(1, a1, free), Move(2, a2, a1), Move(1, free, a2)]


Policy = Callable[[Arrangement, list[Move]], "Move | None"]


def rollout(start: Arrangement, policy: Policy, limit: int = 12) -> Arrangement | None:
    """Run a symbolic policy (current arrangement, moves made so far → next move or None to stop) and return the
    arrangement where it stops; None when it has not stopped after ``limit`` moves (it never finishes)."""
    arrangement, history = start, []
    for _ in range(limit):
        move = policy(arrangement, history)
        if move is None:
            return arrangement
        arrangement = apply(arrangement, move)
        history.append(move)
    return None


def expert_policy(configuration: int) -> Policy:
    """The scripted expert in symbolic form: it remembers how many moves it has made."""
    moves = plan(configuration)
    return lambda arrangement, history: moves[len(history)] if len(history) < len(moves) else None


def all_memoryless_policies() -> list[dict[Arrangement, Move | None]]:
    """Every memoryless policy: each of the six arrangements of two objects in three slots is mapped to one of its two
    legal moves or to "stop" (3⁶ = 729 policies)."""
    states = [(a, b, c) for a in (1, 2, None) for b in (1, 2, None) for c in (1, 2, None)]
    states = [s for s in states if sorted(v for v in s if v is not None) == [1, 2]]
    options = {s: [None, *_legal_moves(s)] for s in states}
    policies: list[dict[Arrangement, Move | None]] = [{}]
    for s in states:
        policies = [{**p, s: m} for p in policies for m in options[s]]
    return policies


def memoryless_success(policy: dict[Arrangement, Move | None]) -> list[bool]:
    """Whether a memoryless policy finishes configuration 0 and configuration 1."""
    out = []
    for c in (0, 1):
        try:
            final = rollout(START[c], lambda a, h: policy.get(a))
        except ValueError:
            final = None
        out.append(final == GOAL[c])
    return out


def _legal_moves(arrangement: Arrangement) -> list[Move]:
    free = [i for i, v in enumerate(arrangement) if v is None]
    return [Move(obj, src, dst) for src, obj in enumerate(arrangement) if obj is not None for dst in free]
