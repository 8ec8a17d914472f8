"""Cross-rank evidence (T017, T026, T027): what only several ranks together show, through the job's key-value store.

At each of the first ``FIRST_STEPS`` optimizer steps every watching rank posts one small record to the
``RankBoard`` (``ssdaudit.training.doctor.ranks``): float64 checksums (sum, sum of squares) of the optimizer's
parameters before the step, of their gradients before the step and of the parameters after it, and a fingerprint of
the batch of the step's first training forward. One host read per checked step, none after. Sharded parameters
(FSDP2) differ across ranks by design: only their batches are compared. Each rank also posts its own findings.

Rank 0 merges when findings are asked for (``merge``), waiting a short while at most for ranks that have not posted
(a rank without a doctor, or one that crashed, is noted, not waited for again), and judges:

* T026: the parameters differ across ranks before the first step while their gradients are averaged (DDP, or equal
  gradients on every rank: hand-written all_reduce) -- the replicas start apart and never meet;
* T017: parameters equal before the first step differ after one of the first steps (the replicas drift);
* T027: every rank's batches are the same at every compared step in a data-parallel run (no DistributedSampler).

Nothing is judged when a local check already named the cause on this watch (T024, T025, T029).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn

from ssdaudit.core.findings import RULES, Severity
from ssdaudit.training.doctor.checks.base import Check
from ssdaudit.training.doctor.context import Context
from ssdaudit.training.doctor.parallel import fingerprint, is_model_forward, setup_of
from ssdaudit.training.doctor.ranks import WAIT_S, RankBoard, world
from ssdaudit.training.gradflow.sharded import is_dtensor

FIRST_STEPS = 3
_CAUSES = {"T024", "T025", "T029"}  # local findings that already name why replicas differ
_REL = 1e-6


def checksum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(2,) float64 on the tensors' device: the sum and the sum of squares of every element. No host read."""
    device = tensors[0].device if tensors else torch.device("cpu")
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for t in tensors:
        d = t.detach().to(device=device, dtype=torch.float64)
        total[0] += d.sum()
        total[1] += (d * d).sum()
    return total


def _report(ctx: Context, code: str, step: int, message: str, subject: str = "replicas") -> None:
    """A cross-rank finding: judged at merge time, so it has no line of the user's code (unlike ``ctx.report``)."""
    key = (code, subject)
    if key not in ctx.found:
        ctx.found[key] = RULES[code].finding("", message, subject=subject, step=step)
        ctx.first_step.setdefault(code, step)


def _differ(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return False
    return any(abs(x - y) > _REL * max(abs(y), 1e-12) for x, y in zip(a, b))


class CrossRankEvidence(Check):
    code = "T017"
    also = ("T026", "T027")
    module_types = ()  # root calls only: the batch of the model's forward

    def __init__(self) -> None:
        self.board: RankBoard | None = None
        self.opened = False
        self.batch: torch.Tensor | None = None  # fingerprint of this step's first training forward input
        self.pre: tuple[torch.Tensor, torch.Tensor] | None = None  # parameter and gradient checksums before the step
        self.shapes = ""
        self.sent_found = -1  # how many findings this rank last posted
        self.noted: set[str] = set()

    # --- every watching rank: post -------------------------------------------------------------------------

    def on_module_pre(self, ctx: Context, module: nn.Module, args: tuple[Any, ...], root: bool) -> None:
        if (root and ctx.step < FIRST_STEPS and self.batch is None and (self.board is not None or not self.opened)
                and is_model_forward(ctx, module) and world()[1] > 1):
            self.batch = fingerprint(args)

    def _params(self, ctx: Context) -> list[torch.Tensor]:
        return [p for p in ctx.params() if not is_dtensor(p)]

    def on_step_pre(self, ctx: Context) -> None:
        if ctx.step >= FIRST_STEPS:
            return
        if not self.opened:
            self.opened = True
            self.board = RankBoard.open()
            shapes = [tuple(p.shape) for p in ctx.params()]
            self.shapes = f"{zlib.crc32(repr(shapes).encode()):08x}"
        if self.board is None:
            return
        params = self._params(ctx)
        grads = [p.grad for p in params if p.grad is not None]
        self.pre = (checksum(params), checksum([g for g in grads if not is_dtensor(g)]))

    def on_step_post(self, ctx: Context) -> None:
        board = self.board
        if board is None:
            return
        self._post_found(ctx)
        if ctx.step >= FIRST_STEPS or self.pre is None:
            return
        setup = setup_of(ctx)
        kind = setup.kind if setup is not None else "plain"
        after = checksum(self._params(ctx))
        parts = [self.pre[0], self.pre[1], after.to(self.pre[0].device)]
        batch = self.batch
        if batch is not None:
            parts.append(batch.to(self.pre[0].device))
        values = torch.cat(parts).tolist()  # the one host read of this step
        self.batch, self.pre = None, None
        sharded = kind == "fsdp"
        board.post(f"step{ctx.current}", {
            "kind": kind, "shapes": self.shapes,
            "before": None if sharded else values[0:2], "grad": None if sharded else values[2:4],
            "after": None if sharded else values[4:6], "batch": values[6:9] if batch is not None else None})

    def _post_found(self, ctx: Context, key: str = "found") -> None:
        """Rank r > 0: its findings, for rank 0 to report (posted when they change; ``final`` when findings are asked
        for on that rank)."""
        board = self.board
        if board is None or board.rank == 0 or (len(ctx.found) == self.sent_found and key == "found"):
            return
        self.sent_found = len(ctx.found)
        board.post(key, [[f.rule, f.path, f.subject, f.message, f.severity.value, f.params,
                              str(f.location) if f.location else None, ctx.first_step.get(f.rule)]
                             for f in ctx.found.values()])

    # --- rank 0: merge and judge ---------------------------------------------------------------------------

    def merge(self, ctx: Context) -> None:
        """Called when findings are asked for: ranks > 0 post their findings; rank 0 adds the other ranks' findings
        and judges the records of the first steps."""
        board = self.board
        if board is None:
            return
        if board.rank != 0:
            self._post_found(ctx, "final")
            return
        steps = range(1, min(ctx.step, FIRST_STEPS) + 1)
        records = {s: board.collect(f"step{s}") for s in steps}
        # each rank's findings: its final list (posted when findings are asked for there, as the runner does on
        # every rank), else the last list it posted at a step
        remote = {**board.collect("found", wait_s=0.0), **board.collect("final", wait_s=WAIT_S / 2)}
        for r, items in sorted(remote.items()):
            if r != 0:
                self._add_remote(ctx, r, items)
        self._note(ctx, board, records)
        if not records or not records[1] or _CAUSES & {code for code, _ in ctx.found}:
            return
        self._judge(ctx, records)

    def _add_remote(self, ctx: Context, rank: int, items: list[list[Any]]) -> None:
        for rule, path, subject, message, severity, params, location, step in items:
            key = (rule, path or subject or "")
            if key in ctx.found or rule not in RULES:
                continue
            ctx.found[key] = RULES[rule].finding(path, f"{message} (on rank {rank})", severity=Severity(severity),
                                                 subject=subject, params=params, location=location, step=step)
            if step is not None:
                ctx.first_step[rule] = min(step, ctx.first_step.get(rule, step))

    def _note(self, ctx: Context, board: RankBoard, records: dict[int, dict[int, Any]]) -> None:
        heard = {r for recs in records.values() for r in recs}
        silent = sorted(set(range(board.size)) - heard - {0})
        notes = []
        if records and silent:
            notes.append(f"cross-rank checks: rank(s) {silent} of {board.size} posted no evidence within {WAIT_S:g} s "
                         f"(no doctor attached there, or stopped): judged from rank(s) {sorted(heard)} only")
        if board.closed:
            notes.append(f"cross-rank checks stopped: the job's key-value store failed ({board.error})")
        for n in notes:
            if n not in self.noted:
                self.noted.add(n)
                ctx.notes.append(n)

    def _judge(self, ctx: Context, records: dict[int, dict[int, Any]]) -> None:
        first = records[1]
        mine = first.get(0)
        if mine is None:
            return
        ranks = sorted(r for r, rec in first.items() if rec["shapes"] == mine["shapes"])
        if len(ranks) < 2:
            return
        kind = mine["kind"]
        grads_equal = mine["grad"] is not None and mine["grad"][1] > 0 and not any(
            _differ(first[r]["grad"], mine["grad"]) for r in ranks)
        parallel = kind in ("ddp", "fsdp") or grads_equal
        apart = [r for r in ranks if _differ(first[r]["before"], mine["before"])]
        if apart and (kind == "ddp" or grads_equal):
            sums = ", ".join(f"rank {r}: {first[r]['before'][0]:.6g}" for r in ranks)
            _report(ctx, "T026", 1, f"before the first step the parameters of rank(s) {apart} differ from rank 0's "
                    f"(parameter sums {sums}) while every rank's gradients are averaged: the replicas start apart "
                    "and never meet")
        elif not apart and parallel:
            for s, recs in records.items():
                drift = [r for r in ranks if r in recs and _differ(recs[r]["after"], recs[0]["after"] if 0 in recs else None)]
                if drift:
                    sums = ", ".join(f"rank {r}: {recs[r]['after'][0]:.6g}" for r in ranks if r in recs)
                    _report(ctx, "T017", s, f"after step {s} the parameters of rank(s) {drift} differ from rank 0's "
                            f"(parameter sums {sums}), equal before the first step: the gradients were not "
                            "averaged alike on every rank")
                    break
        if parallel:
            compared = [recs for recs in records.values()
                        if all(r in recs and recs[r]["batch"] is not None for r in ranks)]
            if compared and all(recs[r]["batch"] == recs[0]["batch"] for recs in compared for r in ranks):
                _report(ctx, "T027", 1, f"the {len(ranks)} ranks trained on the same batches at each of the first "
                        f"{len(compared)} steps (equal batch fingerprints): no DistributedSampler (or the same "
                        "seed and shard on every rank), so the job does the work of one rank", subject="batches")
