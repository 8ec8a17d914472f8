"""The audits on a CUDA GPU: no false G002, the seed's bug found (not raised) after `.cuda()`.

    python benchmarks/gpu_trust.py            # under 3 minutes on one H100/H200; skips without CUDA
    python benchmarks/gpu_trust.py --quick    # a smoke run: fp32 only, 2 steps of batch 2; on the CPU where there
                                              # is no CUDA: 128 px images (the same models and parameter counts),
                                              # FSDP2 with gloo in 2 processes

For the fixed and the buggy SSDLite (ssds-voc, 300 px, batch 8), 20 training steps under GradFlowMonitor in each
setting (fp32, bf16 autocast, fp16 autocast with GradScaler; each with and without channels_last): the fixed model
must give no finding, the buggy one G001 at `backbone` (1,812,800 parameters) and nothing else. Then
``find_unregistered(buggy.cuda(), x.cuda())`` must return R001 `backbone` with 1,812,800 parameters, no exception.
Last, FSDP2 on CUDA (nccl, one process per GPU, ``tests/data/fsdp2_dcp_worker.py``): G001 at the plain-list layer,
G002 at the unused branch, every gradient norm equal to the unsharded model's, and the DCP save equal to its
torch.save twin.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BACKBONE = 1_812_800
STEPS = 20
BATCH = 8


def train_monitored(model, dtype, channels_last: bool, device: str = "cuda", steps: int = STEPS, batch: int = BATCH):
    from ssdaudit import Severity
    from ssdaudit import GradFlowMonitor
    from ssdaudit.registration.ssdlite_adapter import ssdlite_probe

    device = torch.device(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    make_batch, compute_loss = ssdlite_probe(model, batch)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    model.train()
    with GradFlowMonitor(model, opt) as mon:
        for step in range(steps):
            images, targets = make_batch(step)
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loc, conf = model(images)
            loss = compute_loss((loc.float(), conf.float()), targets)
            opt.zero_grad(set_to_none=True)
            mon.drop_unapplied_grads()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return [f for f in mon.findings() if f.severity is not Severity.INFO]


def fsdp2_check(device: str = "cuda", n: int | None = None) -> bool:
    """The 2-process CPU test's worker, on every GPU here (nccl); True when its figures hold.
    (``fsdp2_check("cpu", 2)`` runs the same harness with gloo on the CPU.)"""
    import json
    import os
    import subprocess
    import tempfile

    from ssdaudit.checkpoints.formats import open_checkpoint
    from ssdaudit.checkpoints.diff import diff_checkpoints

    n = n or torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
             str(ROOT / "tests/data/fsdp2_dcp_worker.py"), tmp],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**os.environ, "FSDP_DEVICE": device, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            print(f"FSDP2 on {device} ({n} processes): the worker failed:\n{proc.stderr[-1500:]}")
            return False
        result = json.loads(Path(tmp, "result.json").read_text())
        same = diff_checkpoints(open_checkpoint(Path(tmp, "dcp")), open_checkpoint(Path(tmp, "full.pth"))).identical
    sharded, reference = result["sharded"], result["reference"]
    findings = sorted((rule, label) for rule, label, _ in sharded["findings"])
    worst = max(abs(sharded["grad_norm"][k] - v) / max(abs(v), 1e-12) for k, v in reference["grad_norm"].items())
    ok = findings == [("G001", "extra"), ("G002", "unused")] and worst < 1e-4 and same
    print(f"FSDP2 on {device} ({n} processes, {sharded['device']}): findings {findings}, worst grad-norm rel. error {worst:.1e}, "
          f"DCP == torch.save twin: {same}: {'ok' if ok else 'WRONG'}")
    return ok


def build(module, size: int = 300):
    """``module.build_model()`` (examples/), for ``size`` px images where that is not 300: ssds-voc's layers and parameters,
    priors for the smaller input."""
    if size == 300:
        return module.build_model()
    import dataclasses

    from ssdlite_model import ssds_voc

    cls = getattr(module, "ModuleListSSDLite", None) or module.PlainListSSDLite
    return cls(dataclasses.replace(ssds_voc(), image_size=size, steps=None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fp32 only, 2 steps of batch 2: a smoke run (on the CPU where there is no CUDA, at 128 px)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_trust: no CUDA device here; skipped (run it on a GPU machine; --quick runs the checks on the CPU)")
        return 0
    import buggy_plain_list
    import fixed_modulelist

    from ssdaudit import find_unregistered

    device = "cuda" if cuda else "cpu"
    if cuda:
        print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__}){' --quick' if args.quick else ''}")
    else:
        print(f"gpu_trust --quick: no CUDA device here; the same checks on the CPU (fp32; FSDP2 with gloo) (torch {torch.__version__})")
    steps, batch = (2, 2) if args.quick else (STEPS, BATCH)
    size = 300 if cuda else 128  # the CPU smoke run: smaller images, the same models (the backbone's parameters)
    dtypes = ((None, "fp32"),) if args.quick else ((None, "fp32"), (torch.bfloat16, "bf16"), (torch.float16, "fp16"))
    start = time.perf_counter()
    failures = 0
    print(f"{'setting':<28} {'model':<7} {'findings':<44} {'ok':>3} {'s':>6}")
    for dtype, dname in dtypes:
        for cl in (False, True):
            for kind, module in (("fixed", fixed_modulelist), ("buggy", buggy_plain_list)):
                t0 = time.perf_counter()
                findings = train_monitored(build(module, size), dtype, cl, device, steps, batch)
                got = [(f.rule, f.path, f.params) for f in findings]
                want = [] if kind == "fixed" else [("G001", "backbone", BACKBONE)]
                ok = got == want
                failures += not ok
                setting = f"{dname}{' + channels_last' if cl else ''}"
                print(f"{setting:<28} {kind:<7} {str(got)[:44]:<44} {'yes' if ok else 'NO':>3} {time.perf_counter() - t0:6.1f}",
                      flush=True)
    buggy = build(buggy_plain_list, size).to(device)
    x = torch.rand(2, 3, size, size, device=device)
    call = f"find_unregistered(buggy{'.cuda()' if cuda else ''}, x{'.cuda()' if cuda else ''})"
    try:
        findings = find_unregistered(buggy, x)
        r001 = [(f.rule, f.path, f.params) for f in findings if f.rule == "R001"]
        ok = r001 == [("R001", "backbone", BACKBONE)]
        note = next((f.message for f in findings if f.rule == "R001"), "")
        print(f"{call}: {r001} {'ok' if ok else 'WRONG'}\n  {note[:300]}")
    except Exception as exc:  # the bug this script guards against
        ok = False
        print(f"{call} raised {exc.__class__.__name__}: {exc}")
    failures += not ok
    failures += not (fsdp2_check("cuda") if cuda else fsdp2_check("cpu", 2))
    print(f"\n{failures} failures, {time.perf_counter() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
