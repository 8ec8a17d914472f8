"""Non-finite rules (F): where the first NaN or Inf of a training run came from, named by ``ssdaudit.watch`` and
``ssdaudit watch``.

A cheap on-device guard notices the first non-finite gradient or parameter; only then is the step localised (a
replay of the model's forward and backward on the saved inputs under an op-level trace, or a trace of the following
steps, or of a re-run of the script up to that step). Each finding names the place the value was *produced from
finite inputs*: the input batch (F001), a forward operation (F002), a backward operation (F003) or the optimizer's
update (F004). F005/F006 are about dynamic loss scaling (GradScaler), which skips steps on inf gradients by design.
Their consequences: a non-finite gradient (G006), exploding gradients (G005).
"""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

W = ("watch",)

register(
    Rule(
        causes=("G006",),
        code="F001", name="non-finite-input", severity=Severity.ERROR,
        summary="the input batch already holds NaN or Inf: the first non-finite value of the run came with the data",
        why="a corrupted sample (a division by a zero std in preprocessing, a bad file, an uninitialised buffer) "
            "turns the loss and then every weight into NaN; nothing in the model is at fault and no change to it helps.",
        fix="find the sample (the finding names the batch, the tensor and the rows) and repair or filter it in the "
            "dataset; guard the preprocessing's divisions with an eps",
        bad_example="x = (x - x.mean()) / x.std()          # a constant image: std 0, x/0 = NaN",
        good_example="x = (x - x.mean()) / (x.std() + 1e-6)",
        found_by=W,
    ),
    Rule(
        causes=("G005", "G006"),
        code="F002", name="non-finite-forward", severity=Severity.ERROR,
        summary="a forward operation (log, div, exp, sqrt, pow, softmax over an all-masked row ...) produced NaN or Inf "
                "from finite inputs",
        why="one NaN in the forward reaches the loss, every gradient and, after the next step, every weight: the run "
            "is lost at that step although it only shows later (a NaN loss, G006).",
        fix="the usual fix for the operation the finding names: log_softmax instead of log(softmax(...)), an eps in "
            "a division or under a sqrt/log, subtract the max before exp, clamp the input; inputs that are already "
            "huge mean training diverged earlier (a lower learning rate, gradient clipping)",
        bad_example="p = F.softmax(logits, dim=-1)\nloss = -(target * torch.log(p)).sum(-1).mean()   # log(0) = -inf",
        good_example="loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()",
        found_by=W,
    ),
    Rule(
        causes=("G006",),
        code="F003", name="non-finite-backward", severity=Severity.ERROR,
        summary="the forward was finite, but the gradient of one operation is NaN or Inf (sqrt of an exact 0, the "
                "norm of a zero vector)",
        why="d sqrt(x)/dx = 1/(2 sqrt(x)) is infinite at 0 and the norm's gradient x/|x| is 0/0 for a zero vector: the "
            "loss looks fine, the gradients are NaN and the next step turns the weights into NaN.",
        fix="add an eps inside the sqrt/norm (torch.sqrt(x + 1e-12), F.normalize(x, eps=...)), or clamp its input "
            "away from the point where the gradient is infinite",
        bad_example="dist = ((a - b) ** 2).sum(-1).sqrt()   # a == b: gradient 1/0",
        good_example="dist = ((a - b) ** 2).sum(-1).add(1e-12).sqrt()",
        found_by=W,
    ),
    Rule(
        causes=("G005", "G006"),
        code="F004", name="non-finite-update", severity=Severity.ERROR,
        summary="the optimizer's update turned a parameter into NaN or Inf although its gradient was finite",
        why="a learning rate far too high (or fp16 weights updated in place) makes the update overflow: the "
            "update-to-weight ratio, normally about 1e-3, grows by orders of magnitude before the weights overflow.",
        fix="lower the learning rate (by the factor the update-to-weight ratio is above 1e-3), clip gradients, keep "
            "fp32 master weights",
        bad_example="opt = torch.optim.SGD(model.parameters(), lr=1e4)",
        good_example="opt = torch.optim.SGD(model.parameters(), lr=1e-2)",
        found_by=W,
    ),
    Rule(
        code="F005", name="scaler-skipped-step", severity=Severity.INFO,
        summary="dynamic loss scaling (GradScaler) skipped optimizer steps on inf/NaN gradients during training, by design",
        why="GradScaler skips a step whose scaled gradients overflowed and lowers the scale: an isolated skip is how "
            "it works and costs one step. Only skips that keep happening are a problem (F006).",
        fix="nothing to do; when they become frequent, see F006",
        bad_example="scaler.step(opt)     # inf in the scaled gradients: this step is skipped, the scale halves",
        good_example="scaler.step(opt)\nscaler.update()",
        found_by=W,
    ),
    Rule(
        causes=("G006",),
        code="F006", name="scaler-skips-every-step", severity=Severity.ERROR,
        summary="GradScaler keeps skipping steps: the gradients are non-finite at every scale, so the model does not train",
        why="each skip halves the scale; when the scale falls by orders of magnitude and the steps are still skipped, "
            "the gradients are NaN/Inf for a reason no scale fixes (a NaN in the forward, an fp16 overflow in an "
            "activation): training has stopped while the loop runs on.",
        fix="find the operation the finding names (F002/F003) and fix it; for an fp16 activation overflow use bf16 "
            "autocast or keep that operation in fp32",
        bad_example="with torch.autocast('cuda', torch.float16):\n    loss = model(x).exp().sum()     # overflows in fp16",
        good_example="with torch.autocast('cuda', torch.bfloat16):\n    loss = model(x).exp().sum()",
        found_by=W,
    ),
)
