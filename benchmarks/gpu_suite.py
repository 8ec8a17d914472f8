"""The GPU figures in one run (issue: fast on a GPU too): monitor overhead, detection with post-processing,
batch-1 latency, training throughput. Under 4 minutes on one H100/H200; skips cleanly without CUDA.

    python benchmarks/gpu_suite.py                 # on a CUDA machine
    python benchmarks/gpu_suite.py --device cpu --quick   # a smoke run of the same code paths on the CPU
    python benchmarks/gpu_suite.py --quick         # the same smoke run, on CUDA where there is one, else on the CPU

Timing: CUDA events around blocks of steps, warm-up excluded, medians; with and without the monitor alternate
block by block so that clock and thermal drift hit both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


class Timer:
    """Seconds of GPU work between start() and stop() (CUDA events), or wall time on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def measure(self, fn, repeats: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000 / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats


def build(device: torch.device, quick: bool, cl: bool):
    import ssdlite_model

    cfg = ssdlite_model.tiny() if quick else ssdlite_model.ssds_voc()
    model = ssdlite_model.build_ssdlite(cfg).to(device)
    return (model.to(memory_format=torch.channels_last) if cl else model), cfg


def monitor_overhead(device: torch.device, quick: bool) -> list[tuple[str, float, float]]:
    """Per-step time of a bf16 + channels_last training step with and without GradFlowMonitor (every 1 and 10)."""
    from ssdaudit import GradFlowMonitor
    from ssdaudit.registration.ssdlite_adapter import ssdlite_probe

    batch, block, blocks = (4, 2, 3) if quick else (32, 10, 8)
    model, cfg = build(device, quick, cl=device.type == "cuda")
    make_batch, compute_loss = ssdlite_probe(model, batch)
    images, targets = make_batch(0)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    timer = Timer(device)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loc, conf = model(images)
        loss = compute_loss((loc.float(), conf.float()), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    rows = []
    for every in (1, 10):
        plain, watched = [], []
        for _ in range(blocks):
            plain.append(timer.measure(step, block))
            with GradFlowMonitor(model, opt, every=every):
                watched.append(timer.measure(step, block))
        p, w = statistics.median(plain), statistics.median(watched)
        rows.append((f"monitor every={every}", p, w))
    return rows


def detection_throughput(device: torch.device, quick: bool) -> tuple[float, float, float]:
    """img/s of detect() (network + decode + top-k + NMS), of the network alone, and of torchvision ssdlite320."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from ssdlite_model.optimize import fold_batchnorm

    batch = 2 if quick else 64
    model, cfg = build(device, quick, cl=device.type == "cuda")
    model = fold_batchnorm(model.eval())
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    timer = Timer(device)
    with torch.inference_mode():
        model.detect(x)
        full = batch / timer.measure(lambda: model.detect(x), 2 if quick else 20)
        net = batch / timer.measure(lambda: model(x), 2 if quick else 20)
        tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).to(device).eval()
        xs = list(torch.rand(batch, 3, 320, 320, device=device))
        tv(xs)
        ref = batch / timer.measure(lambda: tv(xs), 1 if quick else 10)
    return full, net, ref


def batch_one(device: torch.device, quick: bool) -> dict[str, float]:
    """img/s at batch 1: eager fp32, eager bf16, and fp32 replayed from a CUDA graph."""
    from ssdlite_model.optimize import fold_batchnorm

    model, cfg = build(device, quick, cl=device.type == "cuda")
    model = fold_batchnorm(model.eval())
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device)
    timer = Timer(device)
    n = 2 if quick else 200
    out = {}
    with torch.inference_mode():
        model(x)
        out["eager fp32"] = 1 / timer.measure(lambda: model(x), n)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(x)
            out["eager bf16"] = 1 / timer.measure(lambda: model(x), n)
    if device.type == "cuda":
        static = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                model(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            model(static)
        out["CUDA graph fp32"] = 1 / timer.measure(graph.replay, n)
    return out


def training_throughput(device: torch.device, quick: bool) -> float:
    """img/s of the trainer's own step loop on synthetic shapes (data included), after one warm-up epoch part."""
    import tempfile

    import ssdlite_model
    from ssdlite_model.train import Trainer, TrainSettings

    batch = 4 if quick else 64
    n = batch * (2 if quick else 30)
    with tempfile.TemporaryDirectory() as out:
        s = TrainSettings(data="synthetic", epochs=1, batch_size=batch, n_train=n, n_val=batch, out=out,
                          progress=False, eval_every=100, device=device.type, amp="bf16" if device.type == "cuda" else "off",
                          image_size=96 if quick else 300, width_mult=0.35 if quick else 1.0,
                          workers=0 if quick else 12)
        trainer = Trainer(s, base_config=ssdlite_model.tiny() if quick else ssdlite_model.ssds_voc())
        records = trainer.fit()
    return records[-1]["images_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description="GPU figures of ssdaudit and ssdlite")
    parser.add_argument("--device", default=None, help="cuda (the default), or cpu for a smoke run with --quick")
    parser.add_argument("--quick", action="store_true",
                        help="Tiny model and batches: a smoke run of the code paths (on the CPU where there is no CUDA).")
    args = parser.parse_args()
    set_quick(args.quick)
    if args.device is None:
        args.device = "cpu" if args.quick and not torch.cuda.is_available() else "cuda"
        if args.device == "cpu":
            print("gpu_suite --quick: no CUDA device here; the smoke run goes on the CPU (the CUDA-graph row needs CUDA)")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device here; skipped (run it on a GPU machine)")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}{' (quick)' if args.quick else ''}")
    start = time.perf_counter()
    for label, plain, watched in monitor_overhead(device, args.quick):
        overhead = (watched - plain) / plain
        goal = 0.01 if label.endswith("every=1") else 0.002
        print(f"{label:<22} {plain * 1e3:8.2f} ms -> {watched * 1e3:8.2f} ms per step  {overhead:+.1%} (goal <= {goal:.1%})")
        record(f"gpu: {label} ({name})", f"{overhead:+.1%}", f"{plain * 1e3:.1f} ms plain step", None, f"<= {goal:.1%}",
               overhead <= goal)
    full, net, ref = detection_throughput(device, args.quick)
    print(f"detect() with post-processing: {full:,.0f} img/s (network alone {net:,.0f}; torchvision ssdlite320 {ref:,.0f})")
    record(f"gpu: detection with post-processing ({name})", f"{full:,.0f} img/s", f"torchvision {ref:,.0f} img/s",
           full / ref, ">= 5,000 img/s", full >= 5000)
    b1 = batch_one(device, args.quick)
    print("batch 1: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in b1.items()))
    best = max(b1.values())
    record(f"gpu: network batch 1 ({name})", f"{best:,.0f} img/s", ", ".join(f"{k} {v:,.0f}" for k, v in b1.items()), None,
           ">= 1,500 img/s", best >= 1500)
    train = training_throughput(device, args.quick)
    print(f"training: {train:,.0f} img/s")
    record(f"gpu: training throughput ({name})", f"{train:,.0f} img/s", "synthetic shapes, bf16", None, ">= 2,500 img/s",
           train >= 2500)
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
