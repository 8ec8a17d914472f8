"""``StepLog``: what happened to one optimizer's gradients since its last ``optimizer.step()``, as typed events in
order. The ``Watch`` records them from its hooks and taps; checks read them at ``on_step_pre`` (and ``on_clip``)."""

from __future__ import annotations

import enum
from collections.abc import Iterator


class StepEvent(enum.Enum):
    """One event of a step."""

    BACKWARD = "backward"  # a backward pass reached the optimizer's parameters
    ZERO_GRAD = "zero_grad"  # zero_grad() of the optimizer or the model
    CLIP = "clip"  # clip_grad_norm_ over the optimizer's parameters
    SCALE = "scale"  # GradScaler.scale of a loss
    UNSCALE = "unscale"  # GradScaler.unscale_ of this optimizer
    OTHER_STEP = "other_step"  # a step of another optimizer: the backwards before it were that optimizer's


class StepLog:
    """The events since the last step, in order; cleared by the ``Watch`` after each step (and after a step that
    GradScaler skipped, or one that raised)."""

    def __init__(self) -> None:
        self._events: list[StepEvent] = []

    def add(self, event: StepEvent) -> None:
        self._events.append(event)

    def clear(self) -> None:
        self._events.clear()

    def __contains__(self, event: object) -> bool:
        return event in self._events

    def __iter__(self) -> Iterator[StepEvent]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"StepLog([{', '.join(e.value for e in self._events)}])"

    def _last(self, event: StepEvent) -> int | None:
        for i in range(len(self._events) - 1, -1, -1):
            if self._events[i] is event:
                return i
        return None

    def after_last(self, event: StepEvent) -> list[StepEvent] | None:
        """The events after the last ``event``; None when ``event`` did not happen."""
        last = self._last(event)
        return None if last is None else self._events[last + 1:]

    def since(self, event: StepEvent) -> list[StepEvent]:
        """The events after the last ``event``, or all of them when it did not happen."""
        after = self.after_last(event)
        return list(self._events) if after is None else after
