"""`ssdaudit diff` on two ~1 GB checkpoints against a naive torch.load + compare, and `cat A B` as the read floor;
again with A as a torch.distributed.checkpoint (DCP) directory (read through DCP's reader, tensor by tensor).

Goal (issue: ssdaudit diff): the compare phase (after imports) within 2x of the read floor, and peak RSS under
a quarter of the naive way's. Each contender runs in its own process so that peak RSS is its own.
Run: python benchmarks/diff_speed.py [--gb 1.0]   (as root it also measures a cold page cache)
     python benchmarks/diff_speed.py --quick     (2 x 8 MiB, one run each, page cache left alone: a smoke run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NAIVE = r"""
import json, resource, sys, time, torch
t0 = time.perf_counter()
a = torch.load(sys.argv[1], weights_only=True)
b = torch.load(sys.argv[2], weights_only=True)
changed = [k for k in a if k in b and not torch.equal(a[k], b[k])]
diffs = {k: float((a[k] - b[k]).abs().max()) for k in changed}
print(json.dumps({"seconds": time.perf_counter() - t0, "changed": len(changed),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OURS = r"""
import json, resource, sys, time
from ssdaudit.checkpoints.formats import open_checkpoint
from ssdaudit.checkpoints.diff import diff_checkpoints
import torch
t0 = time.perf_counter()
r = diff_checkpoints(open_checkpoint(sys.argv[1]), open_checkpoint(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - t0, "changed": len(r.changed),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

FLOOR = r"""
import json, resource, sys, time
import torch
print(json.dumps({"seconds": 0.0, "changed": 0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def make_checkpoints(folder: Path, gb: float) -> tuple[Path, Path]:
    import torch

    n_tensors = 16
    numel = int(gb * 2**30 / 4 / n_tensors)
    gen = torch.Generator().manual_seed(0)
    a = {f"layer{i}.weight": torch.randn(numel, generator=gen) for i in range(n_tensors)}
    # Half the tensors change, as between two training checkpoints with a frozen part.
    b = {k: v + 1e-3 * torch.randn(numel, generator=gen) if i % 2 else v for i, (k, v) in enumerate(a.items())}
    pa, pb = folder / "a.pth", folder / "b.pth"
    torch.save(a, pa)
    torch.save(b, pb)
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(a, checkpoint_id=str(folder / "a_dcp"), no_dist=True)
    return pa, pb


def run_python(code: str, pa: Path, pb: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(pa), str(pb)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (needs root on Linux); False where that is not allowed."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cold(fn):
    """``fn`` with the files evicted from the page cache first."""
    def run(*args):
        drop_page_cache()
        return fn(*args)

    return run


def cat_seconds(pa: Path, pb: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cat", str(pa), str(pb)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=None, help="size of each checkpoint in GiB (default 1; 1/128 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small checkpoints, one run per contender, no cold-cache runs: a smoke run of the same code")
    parser.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_quick(args.quick)
    args.gb = args.gb or (1 / 128 if args.quick else 1.0)
    repeats = 1 if args.quick else 2
    if args.write:
        make_checkpoints(Path(args.write), args.gb)
        return
    with tempfile.TemporaryDirectory(prefix="diff_speed_") as tmp:
        # Written by a child process: a parent holding 2 GB would inflate every child's ru_maxrss (fork copies it).
        subprocess.run([sys.executable, __file__, "--write", tmp, "--gb", str(args.gb)], check=True, cwd=ROOT)
        pa, pb = Path(tmp) / "a.pth", Path(tmp) / "b.pth"
        size = pa.stat().st_size + pb.stat().st_size
        cat_seconds(pa, pb)  # warm the page cache: every contender reads warm files
        floor_read = min(cat_seconds(pa, pb) for _ in range(3))
        floor = run_python(FLOOR, pa, pb)
        naive = min((run_python(NAIVE, pa, pb) for _ in range(repeats)), key=lambda r: r["seconds"])
        ours = min((run_python(OURS, pa, pb) for _ in range(repeats)), key=lambda r: r["seconds"])
        ours_dcp = min((run_python(OURS, Path(tmp) / "a_dcp", pb) for _ in range(repeats)), key=lambda r: r["seconds"])
        # --quick leaves the page cache alone: emptying it slows everything else on the machine
        can_drop = not args.quick and drop_page_cache()
        if can_drop:  # the same three, each starting from an empty page cache
            cold_floor = cold(cat_seconds)(pa, pb)
            cold_naive = cold(run_python)(NAIVE, pa, pb)
            cold_ours = cold(run_python)(OURS, pa, pb)
        start = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "ssdaudit.cli", "diff", str(pa), str(pb), "--format", "json"],
                             capture_output=True, text=True, cwd=ROOT)
        cli_wall = time.perf_counter() - start
    assert naive["changed"] == ours["changed"] == ours_dcp["changed"] == 8, (naive, ours, ours_dcp)
    assert cli.returncode == 1, cli.stderr
    rows = [
        ("read floor: cat A B > /dev/null", floor_read, None),
        ("naive: torch.load both + compare", naive["seconds"], naive["rss_mb"]),
        ("ssdaudit diff (compare phase)", ours["seconds"], ours["rss_mb"]),
        ("ssdaudit diff, A as a DCP directory", ours_dcp["seconds"], ours_dcp["rss_mb"]),
        ("ssdaudit diff CLI (whole process)", cli_wall, None),
        ("python + import torch (RSS floor)", None, floor["rss_mb"]),
    ]
    print(f"two checkpoints of {size / 2 / 2**30:.3g} GiB each, warm page cache, {8} of 16 tensors changed\n")
    print(f"{'contender':38} {'seconds':>9} {'peak RSS MB':>12}")
    for name, sec, rss in rows:
        print(f"{name:38} {'' if sec is None else f'{sec:9.2f}':>9} {'' if rss is None else f'{rss:12.0f}':>12}")
    if can_drop:
        print(f"\ncold page cache (dropped before each): cat {cold_floor:.2f} s, naive {cold_naive['seconds']:.2f} s, "
              f"ssdaudit compare phase {cold_ours['seconds']:.2f} s ({cold_ours['seconds'] / cold_floor:.2f}x the read floor)")
    else:
        print(f"\ncold page cache: not measured ({'--quick' if args.quick else 'dropping the page cache needs root'})")
    time_ratio = ours["seconds"] / floor_read
    rss_ratio = ours["rss_mb"] / naive["rss_mb"]
    print(f"\ncompare phase / read floor: {time_ratio:.1f}x (goal <= 2x): {'met' if time_ratio <= 2 else 'MISSED'}")
    print(f"compare phase / naive:      {ours['seconds'] / naive['seconds']:.2f}x")
    print(f"peak RSS / naive:           {rss_ratio:.2f} (goal < 0.25): {'met' if rss_ratio < 0.25 else 'MISSED'}")
    print(f"RSS above the torch floor:  ours {ours['rss_mb'] - floor['rss_mb']:.0f} MB, naive {naive['rss_mb'] - floor['rss_mb']:.0f} MB")
    record(f"diff: compare 2x{args.gb:.3g} GiB vs cat read floor", f"{ours['seconds']:.2f} s", f"cat {floor_read:.2f} s, naive {naive['seconds']:.2f} s",
           time_ratio, "<= 2x floor", time_ratio <= 2)
    if can_drop:
        cold_ratio = cold_ours["seconds"] / cold_floor
        record(f"diff: compare 2x{args.gb:.3g} GiB, cold cache", f"{cold_ours['seconds']:.2f} s",
               f"cat {cold_floor:.2f} s, naive {cold_naive['seconds']:.2f} s", cold_ratio, "<= 2x floor", cold_ratio <= 2)
    dcp_rss = ours_dcp["rss_mb"] / naive["rss_mb"]
    # A DCP chunk cannot be memory-mapped: each tensor is read whole (as from safetensors), so the bound is the
    # largest tensor, not the 4M-element chunk of the torch.save path.
    print(f"DCP A: peak RSS / naive:    {dcp_rss:.2f}; above the torch floor {ours_dcp['rss_mb'] - floor['rss_mb']:.0f} MB "
          f"(largest tensor {size / 2 / 16 / 2**20:.0f} MB)")
    record("diff: DCP dir vs torch.save, peak RSS vs naive", f"{ours_dcp['rss_mb']:.0f} MB ({ours_dcp['seconds']:.2f} s)",
           f"naive {naive['rss_mb']:.0f} MB", dcp_rss, "tensor-bounded", None)
    record("diff: peak RSS vs naive torch.load", f"{ours['rss_mb']:.0f} MB", f"naive {naive['rss_mb']:.0f} MB", rss_ratio,
           "< 0.25", rss_ratio < 0.25)


if __name__ == "__main__":
    main()
