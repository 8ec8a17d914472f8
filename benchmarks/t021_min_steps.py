"""T021 (labels independent of the inputs) at several values of ``MIN_STEPS``: how often it warns on clean short runs
(false alarms) and how often, and when, it warns on the same runs with their labels shuffled apart from the inputs
(the warning: inputs seen again with other targets; the permuted-loss test alone makes a note, counted apart).

A measurement, not a speed target (issue 31, "T021 needs 40 steps"): the tasks are a nanoGPT-like character
transformer (AdamW, clipping), MNIST-like CNNs on synthetic digits (SGD with and without momentum, Adadelta,
label smoothing, mixup written as two cross-entropies), and a tabular MLP; each clean and with its labels drawn
by a second permutation, for ``--seeds`` seeds and ``--steps`` optimizer steps.
Run: python benchmarks/t021_min_steps.py [--quick] [--thresholds 15,20,40] [--seeds 3] [--steps 60] [--tasks a,b]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssdaudit.training.doctor.checks.shuffled_labels as shuffled_labels  # noqa: E402
from ssdaudit.training.doctor import watch  # noqa: E402


def gpt(vocab, d=32, t=16):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        def forward(self, x):
            L = x.shape[1]
            mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(t, d)
            self.blocks = nn.Sequential(Block(), Block())
            self.head = nn.Linear(d, vocab)
        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            return self.head(self.blocks(x))
    return GPT()


TEXT = ("the quick brown fox jumps over the lazy dog. " * 3 + "to be or not to be, that is the question. "
        "all that glitters is not gold. a journey of a thousand miles begins with a single step. ") * 40


def nanogpt(seed, steps, shuffle, lr=1e-3, warmup=0):
    torch.manual_seed(seed)
    chars = sorted(set(TEXT)); V = len(chars)
    data = torch.tensor([chars.index(c) for c in TEXT])
    model = gpt(V)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) if warmup else 1.0)
    g = torch.Generator().manual_seed(seed)
    with watch(model, opt) as w:
        for _ in range(steps):
            ix = torch.randint(len(data) - 17, (8,), generator=g)
            x = torch.stack([data[i:i + 16] for i in ix])
            y = torch.stack([data[i + 1:i + 17] for i in ix])
            if shuffle:  # the targets of other sequences
                y = y[torch.randperm(8, generator=g)].roll(3, 1)
            loss = F.cross_entropy(model(x).view(-1, V), y.view(-1), ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    return w


def mnist_like(seed, steps, shuffle, lr=0.01, momentum=0.0, smoothing=0.0, mixup=False, batch=64, noise=1.0,
               normalize=False, adadelta=False):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(100 + seed)
    protos = torch.rand(10, 1, 28, 28, generator=g)
    n = 2048
    Y = torch.randint(0, 10, (n,), generator=g)
    X = protos[Y] + noise * torch.randn(n, 1, 28, 28, generator=g)
    if normalize:
        X = (X - X.mean()) / X.std()
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, 1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = (torch.optim.Adadelta(model.parameters(), lr=lr) if adadelta
           else torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum))
    done = 0
    with watch(model, opt) as w:
        while done < steps:
            perm = torch.randperm(n, generator=g)
            ys = Y[torch.randperm(n, generator=g)] if shuffle else Y[perm]
            xs = X[perm]
            for i in range(0, n - batch + 1, batch):
                x, y = xs[i:i + batch], ys[i:i + batch]
                opt.zero_grad()
                if mixup:
                    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
                    p = torch.randperm(batch, generator=g)
                    out = model(lam * x + (1 - lam) * x[p])
                    loss = lam * F.cross_entropy(out, y, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(out, y[p], label_smoothing=smoothing)
                else:
                    loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    break
    return w


def tabular(seed, steps, shuffle, lr=0.1, batch=32):
    torch.manual_seed(seed)
    n = 512
    X = torch.randn(n, 10)
    Y = (X[:, :3] @ torch.tensor([1.0, -1.0, 0.5]) > 0).long() + (X[:, 3] > 1).long()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    done = 0
    with watch(model, opt) as w:
        while done < steps:
            perm = torch.randperm(n)
            xs, ys = X[perm], (Y[torch.randperm(n)] if shuffle else Y[perm])
            for i in range(0, n, batch):
                opt.zero_grad()
                F.cross_entropy(model(xs[i:i + batch]), ys[i:i + batch]).backward()
                opt.step()
                done += 1
                if done == steps:
                    break
    return w


TASKS = {
    "nanogpt_adamw1e-3": lambda s, n, sh: nanogpt(s, n, sh),
    "nanogpt_adamw3e-4": lambda s, n, sh: nanogpt(s, n, sh, lr=3e-4),
    "mnist_sgd0.01": lambda s, n, sh: mnist_like(s, n, sh),
    "mnist_sgd0.01_m0.9": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9),
    "mnist_sgd0.001_m0.9": lambda s, n, sh: mnist_like(s, n, sh, lr=0.001, momentum=0.9),
    "mnist_hard_noise3": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9, noise=3.0),
    "mnist_smooth0.1": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9, smoothing=0.1),
    "mnist_mixup": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9, mixup=True),
    "tabular_sgd0.1": lambda s, n, sh: tabular(s, n, sh),
    "mnistn_adadelta1": lambda s, n, sh: mnist_like(s, n, sh, lr=1.0, adadelta=True, normalize=True),
    "mnistn_sgd0.01_m0.5": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.5, normalize=True),
    "mnistn_noise3_sgd0.01_m0.5": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.5, normalize=True, noise=3.0),
    "mnistn_smooth_mixup": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9, normalize=True, smoothing=0.1, mixup=True),
    "tabular_sgd0.01": lambda s, n, sh: tabular(s, n, sh, lr=0.01),
    "mnist_easy_adadelta1": lambda s, n, sh: mnist_like(s, n, sh, lr=1.0, adadelta=True, normalize=True, noise=0.3),
    "mnist_easy_sgd0.01_m0.5": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.5, normalize=True, noise=0.3),
    "mnist_easy_smooth_mixup": lambda s, n, sh: mnist_like(s, n, sh, momentum=0.9, normalize=True, noise=0.3, smoothing=0.1, mixup=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, one task, 40 steps")
    parser.add_argument("--thresholds", default="15,20,40")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    thresholds = [int(t) for t in args.thresholds.split(",")]
    tasks = args.tasks.split(",")
    seeds = args.seeds
    if args.quick:
        thresholds, seeds, args.steps = [40], 1, 40
        tasks = ["tabular_sgd0.1"]
    saved = shuffled_labels.MIN_STEPS
    try:
        for task in tasks:
            for shuffle in (False, True):
                for m in thresholds:
                    shuffled_labels.MIN_STEPS = m
                    start = time.time()
                    runs = [TASKS[task](seed, args.steps, shuffle) for seed in range(seeds)]
                    found = [[f for f in w.findings() if f.rule == "T021"] for w in runs]
                    warned = [w.first_step.get("T021") if any(f.severity.value != "info" for f in fs) else None
                              for w, fs in zip(runs, found)]
                    noted = sum(1 for fs in found if fs and all(f.severity.value == "info" for f in fs))
                    named = sum(f is not None for f in warned)
                    print(f"{task:28s} {'shuffled' if shuffle else 'clean   '} MIN_STEPS={m:2d}: warned {named}/{seeds}"
                          f" first steps {warned}, noted only {noted}/{seeds} ({time.time() - start:.0f}s)", flush=True)
    finally:
        shuffled_labels.MIN_STEPS = saved


if __name__ == "__main__":
    main()
