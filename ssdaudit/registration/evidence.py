"""What ``params`` knows about a probe and a round trip, as frozen evidence: control flow reads these, never the
text of a finding.

``ProbeStatus``: where the forward probe ran ("cpu", "meta", "placeholder": a CPU copy with placeholder weights,
"none": no example input), which modes ran ("train", "eval") and why a mode failed (mode -> the error, one line).
``RoundTrip``: what the save-reload round trip saw (``roundtrip.run_roundtrip`` fills it), and its
``RoundTripStatus``: whether it ran and compared outputs, and why not. ``ParamsEvidence``:
everything the rules of ``params`` judge (``registration.rules``), in one frozen object. No torch imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssdaudit.registration.model_index import ModelIndex
    from ssdaudit.registration.move_probe import MoveProbeResult
    from ssdaudit.registration.tracer import ProbeResult

PROBE_PLACES = ("cpu", "meta", "placeholder", "none")


@dataclass(frozen=True)
class ProbeStatus:
    """The forward probe's outcome. ``failures``: (mode, error) in the order the modes ran (train, then eval)."""

    device: str
    modes: tuple[str, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()


    @classmethod
    def skipped(cls) -> "ProbeStatus":
        """No example input: nothing ran and nothing failed."""
        return cls("none")

    @property
    def attempted(self) -> bool:
        """A probe was tried (there was an example input)."""
        return self.device != "none"

    @property
    def ran(self) -> bool:
        """Forward ran in at least one mode (the checks that need a pass had something to judge)."""
        return bool(self.modes)

    @property
    def failure(self) -> str | None:
        """The first mode's error (train's before eval's), or None when every mode ran."""
        return self.failures[0][1] if self.failures else None

    def on(self, device: str) -> "ProbeStatus":
        """The same outcome, recorded as run on ``device``."""
        return ProbeStatus(device, self.modes, self.failures)


@dataclass(frozen=True)
class RoundTripStatus:
    """The save-reload round trip (R007). ``ran``: it was attempted; ``compared``: both outputs were computed and
    compared (a round trip that cannot compare is never "equal"); ``equal``: the verdict, None when not compared;
    ``reason``: why it did not run or did not compare ("" otherwise)."""

    ran: bool
    compared: bool = False
    equal: bool | None = None
    reason: str = ""

    @classmethod
    def not_run(cls, reason: str) -> "RoundTripStatus":
        return cls(False, False, None, reason)


@dataclass
class RoundTrip:
    """What the round trip saw: whether outputs match, the first differing module, strict-load problems.

    ``equal`` is True only when the comparison ran and found no difference; when it could not run, ``equal`` is False
    and ``error`` says why."""

    equal: bool
    first_differing: str | None = None  # qualified name of the first module whose output differs
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    lazy_keys: list[str] = field(default_factory=list)  # keys that exist only after a forward
    max_abs_diff: float = 0.0
    outside: list[str] = field(default_factory=list)  # state of the differing module that did not travel
    error: str | None = None  # why the check could not run
    # the resume case: one more train-mode forward of A and of the reloaded B (same batch, same RNG) disagrees
    resume_differs: bool = False
    resume_attrs: list[str] = field(default_factory=list)  # "path: A's value vs B's", Python state before that step
    resume_keys: list[str] = field(default_factory=list)  # state_dict() keys whose values differ after that step
    resume_output_diff: float = 0.0
    # what could not be compared and why ("`0.flow`: A's is Foo, B's is Bar", "the resume check: forward in train
    # mode raised ..."): never counted as equal
    not_compared: list[str] = field(default_factory=list)

    @property
    def status(self) -> RoundTripStatus:
        """The evidence a report keeps: it ran; it compared outputs unless it could not run (``error``); equal only
        when nothing differed and everything was compared; the reason it did not run or did not compare all."""
        if self.error is not None:
            return RoundTripStatus(True, False, None, self.error)
        equal = self.equal and not self.resume_differs and not self.not_compared
        return RoundTripStatus(True, True, equal, "; ".join(self.not_compared))


@dataclass(frozen=True)
class ParamsEvidence:
    """What the rules of ``params`` judge, collected once. ``index``: the one attribute walk of the probed model
    (``model_index.ModelIndex``); ``status``: the forward probe's outcome; ``trace``: what the passes that ran
    observed (None when no mode ran or there was no input); ``moves``: the dtype-move probe's verdict (None where
    no pass ran); ``roundtrip``: the save-reload round trip (None where it did not run: judged in the audit
    phase only)."""

    index: "ModelIndex"
    status: ProbeStatus
    trace: "ProbeResult | None" = None
    moves: "MoveProbeResult | None" = None
    roundtrip: RoundTrip | None = None
