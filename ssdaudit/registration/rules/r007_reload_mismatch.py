"""R007: the save-reload round trip found state that a checkpoint loses (outputs differ after a reload, a strict
load fails, or resuming changes training); a round trip that could not run or could not compare a module is an
N004 note saying what was not compared and why: it never passes as a clean result. The round trip itself is the
evidence (``roundtrip.run_roundtrip``); the cause is taken from the earlier findings when one covers the differing
module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ssdaudit.core.findings import RULES, Finding, Severity, rules_tagged
from ssdaudit.registration.evidence import ParamsEvidence, RoundTrip
from ssdaudit.registration.rules import Phase

CODE = "R007"
ALSO = ("N004",)
PHASE = Phase.AUDIT
ORDER = 60

_CONTAINER_RULES = rules_tagged("container")


def check(evidence: ParamsEvidence, earlier: Sequence[Finding]) -> Iterator[Finding]:
    """The verdict on the round trip of ``evidence`` (nothing where it did not run)."""
    if evidence.roundtrip is not None:
        yield from judge_roundtrip(evidence.roundtrip, earlier)


def judge_roundtrip(rt: RoundTrip, known: Sequence[Finding]) -> list[Finding]:
    """R007 when the reloaded model's outputs differ (or the strict load fails), with the cause from the container
    findings in ``known`` when one covers the differing module; N004 notes for what could not run or compare."""
    if rt.error is not None:
        return [RULES["N004"].finding("<roundtrip>", "the save-reload round trip (R007) could not run, so state lost "
                                      f"in a checkpoint was not compared: {rt.error}")]
    notes = [RULES["N004"].finding("<roundtrip>", "the save-reload round trip (R007) did not compare "
                                   + "; ".join(rt.not_compared[:3]) + (" ..." if len(rt.not_compared) > 3 else ""))
             ] if rt.not_compared else []
    return _roundtrip_r007(rt, known) + notes


def _roundtrip_r007(rt: RoundTrip, known: Sequence[Finding]) -> list[Finding]:
    """The R007 finding of a round trip that ran (none when it found no difference)."""
    if rt.equal and not rt.resume_differs:
        return []
    if rt.unexpected_keys or rt.missing_keys:
        parts = []
        if rt.lazy_keys:
            parts.append(f"{len(rt.lazy_keys)} key(s) exist only after a forward (created lazily): {', '.join(rt.lazy_keys[:3])}")
        others = [k for k in rt.unexpected_keys if k not in rt.lazy_keys]
        if others:
            parts.append(f"{len(others)} unexpected: {', '.join(others[:3])}")
        if rt.missing_keys:
            parts.append(f"{len(rt.missing_keys)} missing: {', '.join(rt.missing_keys[:3])}")
        path = (rt.lazy_keys or rt.unexpected_keys or rt.missing_keys)[0].rsplit(".", 1)[0]
        return [RULES["R007"].finding(path,
                        "load_state_dict(strict=True) of the saved state into a freshly built model fails: " + "; ".join(parts))]
    if rt.resume_differs:
        return [_resume_finding(rt)]
    where = rt.first_differing if rt.first_differing else "<model>"
    cause = ""
    covering = [f for f in known if f.rule in _CONTAINER_RULES and f.params
                and (where == f.path or where.startswith(f.path + "."))]
    path = where
    if covering:
        f = covering[0]
        path = f.path
        cause = f"; cause: {f.rule} `{f.path}` ({f.params:,} parameters outside state_dict())"
    elif rt.outside:
        cause = f"; state outside tensors (not in state_dict()): {', '.join(rt.outside)}"
    else:  # a plain tensor attribute forward reads inside the differing module: a rebuild makes it anew
        inside = [f for f in known if f.rule in ("R004", "R008") and f.severity is not Severity.INFO
                  and (where == "<model>" or f.path == where or f.path.startswith(where + "."))]
        if inside:
            cause = (f"; likely cause: {inside[0].rule} `{inside[0].path}`, a plain tensor outside state_dict(): a "
                     "reload keeps the new build's values")
    return [RULES["R007"].finding(path,
        f"after a save and reload the outputs differ; first module whose output differs: `{where}`{cause}",
    )]


def _resume_finding(rt: RoundTrip) -> Finding:
    """R007 for the resume case, naming the Python attributes that differed before the step (the likely cause)."""
    what = []
    if rt.resume_output_diff:
        what.append(f"outputs differ (max |a - b| {rt.resume_output_diff:.3g})")
    if rt.resume_keys:
        more = ", ..." if len(rt.resume_keys) > 3 else ""
        what.append(f"state_dict() after it differs in {', '.join(f'`{k}`' for k in rt.resume_keys[:3])}{more}")
    if rt.resume_attrs:
        path = rt.resume_attrs[0].split(":", 1)[0]
        cause = ("; Python state outside state_dict() that the checkpoint lost: "
                 + ", ".join(f"`{a}`" for a in rt.resume_attrs[:4]) + (", ..." if len(rt.resume_attrs) > 4 else "")
                 + " (keep it in a buffer, e.g. register_buffer(name, torch.tensor(value)), or get_extra_state())")
    else:
        path = rt.resume_keys[0].rsplit(".", 1)[0] if rt.resume_keys else "<model>"
        cause = ""
    return RULES["R007"].finding(path,
        "resuming from a checkpoint changes training: after a save and reload, one more train-mode forward on the "
        f"same batch and RNG {' and '.join(what)}{cause}")
