"""Cost of ``ssdaudit resume``: the per-step fingerprints against no fingerprints, and the audit's wall time against
the script's own.

Goal (issue 32): the fingerprints cost at most 2% of the CPU SSDLite step (ssds-voc, 300 px, batch 8, SGD with
momentum: ``_steps.ssdlite_step``), the two variants alternating in blocks of steps (medians compared; the time spent
inside the fingerprint hooks is measured too, a figure the noise of other jobs does not blur); and the whole audit
(the first run for N+K steps, the resumed run in a fresh process for K) at most 2.2x the wall time of the script
running its N+K steps alone (examples/resume_no_optimizer_state.py --fixed, alternating, medians).
Run: python benchmarks/resume_overhead.py [--quick] [--blocks N] [--block-steps K] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ssdlite_model import ssds_voc, tiny

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _steps import ssdlite_step, time_methods  # noqa: E402
from _summary import record, set_quick  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def step_overhead(quick: bool, blocks: int, block_steps: int) -> None:
    from ssdaudit.training.resume import patches
    from ssdaudit.training.resume.recorder import Fingerprinter, ResumeRunner

    config = tiny() if quick else ssds_voc()
    batch = 2 if quick else 8
    model, opt, step = ssdlite_step(config, batch)
    what = f"SSDLite {'tiny' if quick else 'ssds-voc'} {config.image_size} px, batch {batch}"
    runner = ResumeRunner(sys.maxsize)
    fp = Fingerprinter(model, opt, runner.recorder)
    runner.fingerprinters.append(fp)
    inside = [0.0]
    time_methods(fp, ("_forward", "_pre", "_post", "backward"), inside)
    times: dict[str, list[float]] = {"no fingerprints": [], "fingerprints": []}
    i = 0
    for b in range(1 + blocks):
        for name in times:
            ts = []
            if name == "fingerprints":
                fp.attach()
                with patches.observing(runner.recorder):
                    for _ in range(block_steps):
                        ts.append(step(i))
                        i += 1
                fp.detach()
            else:
                for _ in range(block_steps):
                    ts.append(step(i))
                    i += 1
            if b > 0:
                times[name].extend(ts)
            elif name == "fingerprints":
                inside[0] = 0.0
    base = statistics.median(times["no fingerprints"])
    med = statistics.median(times["fingerprints"])
    n = len(times["fingerprints"])
    own = inside[0] / n / base
    print(f"{what}, CPU threads {torch.get_num_threads()}, {n} steps per variant (medians)")
    print(f"  no fingerprints {base:.4f} s/step, fingerprints {med:.4f} s/step: ratio {med / base:.3f}, "
          f"inside the fingerprint hooks {100 * own:.2f}% of the step")
    record(f"resume: fingerprint cost per step, {what}", f"{100 * own:.2f}% inside hooks ({med / base:.3f}x)",
           f"no fingerprints {base * 1e3:.0f} ms", med / base, "<= 2% inside hooks", own <= 0.02)


def wall_time(quick: bool, rounds: int) -> None:
    epochs = 3 if quick else 12  # 4 steps per epoch
    at, k = (4, 4) if quick else (24, 24)
    example = str(ROOT / "examples" / "resume_no_optimizer_state.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    alone, audit = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            start = time.perf_counter()
            subprocess.run([sys.executable, example, "--fixed", "--epochs", str((at + k) // 4), "--out", f"{tmp}/a{r}"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            alone.append(time.perf_counter() - start)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "ssdaudit", "resume", "--at", str(at), "--steps", str(k),
                                   "--resume-args", "--resume {checkpoint}", "--", "python", example, "--fixed",
                                   "--epochs", str(epochs), "--out", f"{tmp}/b{r}"], env=env, stdout=subprocess.DEVNULL)
            audit.append(time.perf_counter() - start)
            assert proc.returncode == 0, proc.returncode
    ratio = statistics.median(audit) / statistics.median(alone)
    print(f"audit wall time: script alone for {at + k} steps {statistics.median(alone):.2f} s, ssdaudit resume --at "
          f"{at} --steps {k} {statistics.median(audit):.2f} s: ratio {ratio:.2f} (medians of {rounds})")
    record(f"resume: audit wall time over the script's own ({at}+{k} steps, the example)", f"{ratio:.2f}x",
           f"script alone {statistics.median(alone):.2f} s", ratio, "<= 2.2x", ratio <= 2.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny SSDLite, few blocks, one audit: a smoke run")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--block-steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        set_quick()
        args.blocks, args.block_steps, args.rounds = 2, 2, 1
    step_overhead(args.quick, args.blocks, args.block_steps)
    wall_time(args.quick, args.rounds)


if __name__ == "__main__":
    main()
