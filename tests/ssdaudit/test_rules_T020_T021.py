"""T020 (a hand-written mask that keeps only positions of one target value) and T021 (labels independent of the
inputs: two permutations): each buggy loop, written the way people write it, is named; its clean twin is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.findings import Severity
from ssdaudit.training.doctor import Watch, watch

PAD, VOCAB = 0, 12


def failing(w: Watch) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in w.findings() if f.severity in (Severity.ERROR, Severity.WARNING)]


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(VOCAB, 16), nn.Linear(16, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.emb(tokens)))  # (B, L, VOCAB)


def padded_batch(g: torch.Generator, batch: int = 8, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    tokens = torch.randint(1, VOCAB, (batch, length), generator=g)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = PAD
    labels = tokens.roll(-1, 1)
    labels[tokens == PAD] = PAD
    return tokens, labels


def tagging(bug: bool, steps: int = 5, select: str = "index") -> Watch:
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    with watch(model, opt) as w:
        for _ in range(steps):
            tokens, labels = padded_batch(g)
            logits = model(tokens)
            active = labels.view(-1) == PAD if bug else labels.view(-1) != PAD  # the bug: the mask inverted
            if select == "index":
                loss = F.cross_entropy(logits.view(-1, VOCAB)[active], labels.view(-1)[active])
            elif select == "masked_select":
                flat = torch.masked_select(logits.view(-1, VOCAB), active[:, None]).view(-1, VOCAB)
                loss = F.cross_entropy(flat, labels.view(-1)[active])
            else:  # the mask applied after a per-position loss
                per = F.cross_entropy(logits.view(-1, VOCAB), labels.view(-1), reduction="none")
                mask = active.float()
                if select == "after_multiply":
                    loss = (per * mask).sum() / mask.sum()
                elif select == "after_where":
                    loss = torch.where(active, per, torch.zeros_like(per)).sum() / active.sum()
                elif select == "after_index":
                    loss = per[active].mean()
                else:
                    loss = per.masked_select(active).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w


def test_t020_inverted_padding_mask_is_named() -> None:
    w = tagging(bug=True)
    found = [f for f in w.findings() if f.rule == "T020"]
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert "all equal 0" in found[0].message
    line = Path(found[0].location.path).read_text().splitlines()[found[0].location.line - 1]  # the loss call
    assert "F.cross_entropy(logits.view(-1, VOCAB)[active]" in line
    assert w.first_step["T020"] == 3


def test_t020_masked_select_is_named() -> None:
    assert [f.rule for f in tagging(bug=True, select="masked_select").findings() if f.rule == "T020"] == ["T020"]


def test_t020_clean_twin() -> None:
    assert failing(tagging(bug=False)) == []


AFTER = ["after_multiply", "after_where", "after_index", "after_masked_select"]


@pytest.mark.parametrize("select", AFTER)
def test_t020_mask_applied_after_a_per_position_loss_is_named(select: str) -> None:
    """``l = F.cross_entropy(..., reduction="none")`` then the inverted mask by multiplication, ``torch.where``,
    boolean indexing or ``masked_select``: only padding positions get a gradient."""
    w = tagging(bug=True, select=select)
    found = [f for f in w.findings() if f.rule == "T020"]
    assert len(found) == 1 and found[0].severity is Severity.ERROR, failing(w)
    assert "whose target is 0" in found[0].message and "reduction='none'" in found[0].message
    assert found[0].location is not None and found[0].location.path.endswith("test_rules_T020_T021.py")
    assert "reduction=\"none\"" in Path(found[0].location.path).read_text().splitlines()[found[0].location.line - 1]
    assert w.first_step["T020"] == 3
    assert [f.rule for f in w.findings() if f.severity is not Severity.INFO] == ["T020"]


@pytest.mark.parametrize("select", AFTER)
def test_t020_mask_applied_after_a_per_position_loss_clean_twin(select: str) -> None:
    assert failing(tagging(bug=False, select=select)) == []


def test_t020_per_position_loss_weighted_everywhere_or_on_one_class_batches_is_clean() -> None:
    """A per-position loss with per-sample weights (none zero), then batches whose targets are all one value: no mask
    chose among target values (T011's degenerate targets are another rule)."""
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    with watch(head, opt) as w:
        for i in range(8):
            feats = torch.randn(16, 4, generator=g)
            labels = torch.randint(0, 3, (16,), generator=g) if i < 4 else torch.ones(16, dtype=torch.long)
            weights = torch.rand(16, generator=g) + 0.1
            opt.zero_grad()
            (F.cross_entropy(head(feats), labels, reduction="none") * weights).mean().backward()
            opt.step()
    assert [f.rule for f in w.findings() if f.rule == "T020"] == []


def test_t020_losses_stay_bitwise_equal_with_the_gradient_hook() -> None:
    def run(watched: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = Tagger()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)
        out = []
        w = watch(model, opt).attach() if watched else None
        for _ in range(4):
            tokens, labels = padded_batch(g)
            per = F.cross_entropy(model(tokens).view(-1, VOCAB), labels.view(-1), reduction="none")
            mask = (labels.view(-1) == PAD).float()
            loss = (per * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.detach())
        if w is not None:
            w.detach()
        return out

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True)))


def test_t020_clean_foreground_of_a_batch_with_two_classes_once() -> None:
    # a detector-like loss over foreground anchors: one class in some batches, two in others: no sustained run
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    with watch(head, opt) as w:
        for i in range(6):
            feats = torch.randn(20, 4, generator=g)
            labels = torch.zeros(20, dtype=torch.long)
            labels[:5] = 1
            labels[5:8] = 2 if i % 2 else 1
            fg = labels > 0
            opt.zero_grad()
            F.cross_entropy(head(feats)[fg], labels[fg]).backward()
            opt.step()
    assert failing(w) == []


def shuffled(bug: bool, steps: int = 60, batch: int = 32, warmup: int = 0, lr: float = 0.1,
             loss_module: bool = False) -> Watch:
    """An MLP on a learnable task; the bug draws one permutation for the inputs and another for the labels."""
    torch.manual_seed(0)
    n = 512
    X = torch.randn(n, 10)
    Y = (X[:, :3] @ torch.tensor([1.0, -1.0, 0.5]) > 0).long() + (X[:, 3] > 1).long()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) if warmup else 1.0)
    criterion = nn.CrossEntropyLoss()
    done = 0
    with watch(model, opt) as w:
        while done < steps:
            perm = torch.randperm(n)
            xs = X[perm]
            ys = Y[torch.randperm(n)] if bug else Y[perm]
            for i in range(0, n, batch):
                opt.zero_grad()
                out = model(xs[i:i + batch])
                (criterion(out, ys[i:i + batch]) if loss_module else F.cross_entropy(out, ys[i:i + batch])).backward()
                opt.step()
                sched.step()
                done += 1
                if done == steps:
                    break
    return w


def test_t021_two_permutations_are_named() -> None:
    w = shuffled(bug=True)
    found = [f for f in w.findings() if f.rule == "T021"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert w.first_step["T021"] <= 45


def test_t021_clean_twin() -> None:
    assert failing(shuffled(bug=False)) == []


def test_t021_says_nothing_at_the_start_of_training() -> None:
    # within the first epoch (16 batches) no input has come back, and the first steps of any run (or a hard task not
    # yet learned) look the same: no evidence yet
    assert [f.rule for f in shuffled(bug=True, steps=16).findings() if f.rule == "T021"] == []


@pytest.mark.parametrize("loss_module", [False, True], ids=["F.cross_entropy", "nn.CrossEntropyLoss"])
def test_t021_warns_when_inputs_come_back_with_other_targets_and_only_notes_a_flat_permuted_loss(
        loss_module: bool) -> None:
    """The warning is the inputs of the second epoch coming back with other targets (with the functional loss and with
    a loss module, whose own call comes between the forward and the loss); a clean run that has not started learning
    (a learning rate far too low for 60 steps) gets at most the note of the permuted-loss test."""
    w = shuffled(bug=True, steps=40, loss_module=loss_module)
    found = [f for f in w.findings() if f.rule == "T021"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING and "inputs seen again" in found[0].message
    assert 17 <= w.first_step["T021"] <= 32  # the second epoch
    slow = shuffled(bug=False, steps=60, lr=1e-4, loss_module=loss_module)
    assert failing(slow) == []
    assert [f.severity for f in slow.findings() if f.rule == "T021"] in ([], [Severity.INFO])


def test_t021_text_classification_over_token_ids() -> None:
    """(B, T) token inputs and one class per sequence: a sequence seen again with another label is named; the clean
    twin is not."""
    def run(bug: bool) -> Watch:
        torch.manual_seed(0)
        vocab, length, n = 50, 12, 96
        tokens = torch.randint(0, vocab, (n, length))
        labels = (tokens[:, 0] % 2 == 0).long()
        model = nn.Sequential(nn.Embedding(vocab, 16), nn.Flatten(), nn.Linear(16 * length, 2))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        with watch(model, opt) as w:
            for epoch in range(3):
                order = torch.randperm(n)
                other = torch.randperm(n) if bug else order
                for i in range(0, n, 16):
                    opt.zero_grad()
                    F.cross_entropy(model(tokens[order[i:i + 16]]), labels[other[i:i + 16]]).backward()
                    opt.step()
        return w

    assert [f.rule for f in run(True).findings() if f.severity is Severity.WARNING] == ["T021"]
    assert failing(run(False)) == []


def sparse_rows(columns: int = 20_000, n: int = 256, steps: int = 24) -> Watch:
    """Sparse rows (a bag of words) that the fingerprint cannot tell apart: each row holds one of 10 frequent words,
    in columns the fingerprint reads, and a rare word of its own, in columns it does not read (it reads 16,384 of
    the 20,000). The label belongs to the rare word: a clean run, whose rows share 10 fingerprints across labels."""
    from ssdaudit.training.doctor.checks.shuffled_labels import fingerprint_columns

    torch.manual_seed(0)
    read, _ = fingerprint_columns(columns)
    assert read is not None
    unread = torch.ones(columns, dtype=torch.bool)
    unread[read] = False
    rare = unread.nonzero().squeeze(1)[:n]
    X = torch.zeros(n, columns)
    X[torch.arange(n), read[torch.arange(n) % 10]] = 1.0
    X[torch.arange(n), rare] = 1.0
    Y = torch.arange(n) % 3
    model = nn.Linear(columns, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with watch(model, opt) as w:
        for step in range(steps):
            perm = torch.randperm(n)[:32]
            opt.zero_grad()
            F.cross_entropy(model(X[perm]), Y[perm]).backward()
            opt.step()
    return w


def test_t021_rows_the_fingerprint_cannot_tell_apart_are_no_evidence() -> None:
    """Rows with one fingerprint meet in one batch (with different targets): that fingerprint is no evidence from
    then on, so a clean run whose rows differ only where the fingerprint does not read is not flagged."""
    w = sparse_rows()
    assert [f.rule for f in w.findings() if f.severity is Severity.WARNING] == []
    check = next(c for c in w.checks if c.code == "T021")
    assert len(check.ambiguous) == 10 and not check.conflicts


def test_t021_clean_during_a_long_warm_up() -> None:
    # a real task under a 2000-step linear warm-up (nanoGPT's recipe): 60 steps in, the model has not moved yet, and
    # true and permuted pairs cost the same; that is no evidence while the learning rate still rises
    assert failing(shuffled(bug=False, warmup=2000)) == []


def test_t021_every_10_reads_between_checks_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, Y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    with watch(model, opt, every=10) as w:
        for k in range(45):
            opt.zero_grad()
            F.cross_entropy(model(X[k % 2 * 32:(k % 2 + 1) * 32]), Y[torch.randperm(64)[:32]]).backward()
            opt.step()
            if k % 10 != 0:
                assert not w.ctx._deferred
    assert [f.rule for f in w.findings() if f.rule == "T021"] == ["T021"]
