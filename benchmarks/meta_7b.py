"""Audit a 7-billion-parameter transformer definition on the meta device: seconds and peak memory.

torchinfo is tried on the same meta model for comparison (a CPU build would need ~27 GB for fp32 weights,
more than this 24 GiB machine has). Run: python benchmarks/meta_7b.py
--quick: the same model with a tiny config (2 layers of width 64): a smoke run of the same code.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

# vocab, dim, layers, hidden, heads
LLAMA_7B = dict(vocab=32_000, dim=4096, layers=32, hidden=11_008, heads=32)
TINY = dict(vocab=1000, dim=64, layers=2, hidden=172, heads=4)


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        h = self.norm2(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


class Llama7B(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, hidden, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny config of the same model: a smoke run of the same code")
    args = parser.parse_args()
    set_quick(args.quick)
    from ssdaudit import audit_params

    config = TINY if args.quick else LLAMA_7B
    print(f"config: {', '.join(f'{k} {v:,}' for k, v in config.items())}{' (--quick)' if args.quick else ''}")
    base = peak_mb()
    start = time.perf_counter()
    with torch.device("meta"):
        model = Llama7B(**config)
        tokens = torch.zeros(1, 16, dtype=torch.long)
    report = audit_params(model, example_input=tokens)
    audit_s = time.perf_counter() - start
    audit_peak = peak_mb()
    print(f"{'measurement':<44} {'value':>16}")
    print(f"{'parameters (registered)':<44} {report.registered_params:>16,}")
    print(f"{'predicted checkpoint bytes (fp32)':<44} {report.checkpoint_bytes:>16,}")
    print(f"{'error findings':<44} {len(report.errors):>16}")
    print(f"{'ssdaudit build + audit, seconds':<44} {audit_s:>16.2f}")
    print(f"{'peak RSS before / after, MB':<44} {base:>7.0f} / {audit_peak:>6.0f}")
    try:
        import torchinfo

        start = time.perf_counter()
        torchinfo.summary(model, input_data=tokens, device="meta", verbose=0)
        print(f"{'torchinfo.summary on meta, seconds':<44} {time.perf_counter() - start:>16.2f}")
    except Exception as exc:  # torchinfo reads tensor values, which meta tensors lack
        print(f"{'torchinfo.summary on meta':<44} failed: {exc.__class__.__name__}: {str(exc)[:80]}")
    print(f"{'peak RSS at the end, MB':<44} {peak_mb():>16.0f}")
    size = (f"{report.registered_params:,} params" if args.quick
            else f"{report.registered_params / 1e9:.2f}B params (fp32 CPU build needs ~27 GB)")
    record(f"params: {'tiny' if args.quick else '7B'} transformer on meta", f"{audit_s:.2f} s, {audit_peak:.0f} MB peak",
           size, None, "runs on 24 GiB", audit_peak < 24 * 1024)


if __name__ == "__main__":
    main()
