"""What ``params`` knows about a probe and a round trip, as frozen evidence: control flow reads these, never the
text of a finding.

``ProbeStatus``: where the forward probe ran ("cpu", "meta", "placeholder": a CPU copy with placeholder weights,
"none": no example input), which modes ran ("train", "eval") and why a mode failed (mode -> the error, one line).
``RoundTripStatus``: whether the save-reload round trip ran and compared outputs, and why not. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
