"""Training-loop rules (T): the silent errors of a user's own loop, named by ``ssdaudit.watch`` and ``ssdaudit watch``.

Each rule is found at runtime from hooks on the user's unchanged loop (``ssdaudit.training.doctor``). The
heuristic ones (modes, input statistics, one class per batch) say what they saw and can be silenced with
``watch(..., ignore=["T0xx"])`` or ``ssdaudit watch --ignore T0xx``.

What each rule can cause (``causes``: those findings, seen at its step or later, are folded under it as its
consequences), only where the mechanism is direct: T001 -> G005, G006 (gradients summed over the steps grow with the
step count until the run diverges); T002, T004, T013, T014 -> G004 (the step changes nothing: gradients cleared, lr
0, gradients clipped to max_norm / scale, updates rounded away); T005 -> G002, G004 (no gradient reaches the
optimizer's parameters), G003 and T007 (an optimizer built on another copy holds tensors the model does not use, and
the model that runs looks frozen); T006, T012 -> G005, G006 (BatchNorm on frozen statistics, inputs far from unit
scale: activations and gradients grow until they overflow); T011 -> G006 (every target ignored: the mean loss is
0/0); T015 -> G003 (the optimizer holds the replaced tensors, not the new ones).
"""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

W = ("watch",)

register(
    Rule(
        code="T001", name="gradients-never-cleared", severity=Severity.ERROR,
        summary="gradients accumulate across optimizer steps because nothing clears them",
        why="backward() adds to .grad: without zero_grad() each step applies the sum of every gradient so far, so the "
            "effective learning rate grows with the step count and training diverges or stalls while nothing raises.",
        fix="call optimizer.zero_grad() once per step (before backward, or right after step)",
        bad_example="for x, y in loader:\n    loss_fn(model(x), y).backward()\n    opt.step()            # .grad keeps growing",
        good_example="for x, y in loader:\n    opt.zero_grad()\n    loss_fn(model(x), y).backward()\n    opt.step()",
        found_by=W,
        causes=("G005", "G006"),
    ),
    Rule(
        code="T002", name="gradients-cleared-before-step", severity=Severity.ERROR,
        summary="gradients are cleared or zeroed between backward() and optimizer.step()",
        why="the step sees no gradient, so it changes nothing (or only applies weight decay and momentum): "
            "the loss is computed and backpropagated every step and thrown away.",
        fix="call zero_grad() before backward() (or after step()), never between them; clip with a positive max_norm",
        bad_example="loss.backward()\nopt.zero_grad()           # clears what backward just computed\nopt.step()",
        good_example="opt.zero_grad()\nloss.backward()\nopt.step()",
        found_by=W,
        causes=("G004",),
    ),
    Rule(
        code="T003", name="zero-grad-in-accumulation", severity=Severity.ERROR,
        summary="zero_grad() runs between the backward passes of one gradient-accumulation window",
        why="each micro-batch's gradient is discarded before the next one is added, so the step uses only the last "
            "micro-batch: the effective batch is k times smaller than intended and the loss is not scaled for it.",
        fix="call zero_grad() once per optimizer step, right after step(), not per micro-batch",
        bad_example="for i, (x, y) in enumerate(loader):\n    opt.zero_grad()\n    (loss_fn(model(x), y) / k).backward()\n"
                    "    if (i + 1) % k == 0:\n        opt.step()",
        good_example="for i, (x, y) in enumerate(loader):\n    (loss_fn(model(x), y) / k).backward()\n"
                     "    if (i + 1) % k == 0:\n        opt.step()\n        opt.zero_grad()",
        found_by=W,
    ),
    Rule(
        code="T004", name="learning-rate-collapse", severity=Severity.ERROR,
        summary="a learning rate that is 0, or collapses in the first 100 steps because its schedule is spent long before "
                "the run ends",
        why="a scheduler stepped per batch with a horizon counted in epochs (or a horizon shorter than the run) drives "
            "the learning rate to nothing within a few steps: the run continues and nothing learns. A decay that follows "
            "the scheduler's own design at the rate it is stepped (StepLR stepped per epoch, OneCycleLR over the whole "
            "run) is not reported; a horizon (T_max, total_steps, total_iters) stepped past while training goes on, or "
            "a step schedule stepped once per optimizer step that loses 10x, is.",
        fix="step the scheduler at the granularity its horizon is counted in (per epoch, or a horizon in batches); "
            "a learning rate set to 0 (or below) by hand or by a default: give the optimizer a positive lr",
        bad_example="sched = CosineAnnealingLR(opt, T_max=epochs)\nfor x, y in loader:\n    ...\n    opt.step()\n"
                    "    sched.step()          # per batch: lr reaches 0 after `epochs` batches",
        good_example="sched = CosineAnnealingLR(opt, T_max=epochs * len(loader))   # per-batch horizon",
        found_by=W,
        causes=("G004",),
    ),
    Rule(
        code="T005", name="backward-reaches-no-parameter", severity=Severity.ERROR,
        summary="an optimizer step whose backward reached none of the optimizer's parameters",
        why="a loss computed under no_grad or from detached outputs has no graph back to the model; forcing "
            "loss.requires_grad = True makes backward() run without error, and no parameter ever gets a gradient. "
            "Or the backward reaches parameters, only not the optimizer's: it was built on another copy of the model "
            "(copy.deepcopy(model) after the optimizer), so the model that trains is never stepped.",
        fix="compute the loss from the model's outputs with gradients enabled (never set requires_grad on a loss); build "
            "the optimizer from the model you train, not from a copy made before it (copy.deepcopy)",
        bad_example="with torch.no_grad():\n    out = model(x)\nloss = loss_fn(out, y)\nloss.requires_grad = True\nloss.backward()",
        good_example="out = model(x)\nloss = loss_fn(out, y)\nloss.backward()",
        found_by=W,
        causes=("G002", "G003", "G004", "T007"),
    ),
    Rule(
        code="T006", name="training-in-eval-mode", severity=Severity.WARNING,
        summary="a training forward ran BatchNorm or Dropout in eval mode while their parameters are being trained",
        why="after a validation pass, model.eval() stays in effect until model.train(): BatchNorm uses frozen running "
            "statistics and Dropout is off, so the model trains differently from what the code says.",
        fix="call model.train() at the start of every training epoch (after each validation pass)",
        bad_example="for epoch in range(n):\n    for x, y in loader: ...      # trains in eval mode from epoch 2 on\n"
                    "    model.eval(); validate(model)",
        good_example="for epoch in range(n):\n    model.train()\n    for x, y in loader: ...\n    model.eval(); validate(model)",
        message="{count} of {total} BatchNorm/Dropout modules in eval mode in the training forward of step {step} "
                "(e.g. {path}) while their parameters train",
        found_by=W,
        causes=("G005", "G006"),
    ),
    Rule(
        code="T007", name="frozen-batchnorm-statistics-move", severity=Severity.WARNING,
        summary="a frozen module (requires_grad False, not in the optimizer, or in no optimizer and never updated) runs "
                "BatchNorm in train mode",
        why="its parameters are frozen but its running mean and variance are still overwritten by every batch, so a "
            "frozen teacher or backbone drifts and behaves differently at evaluation. Inside the trained path (a "
            "frozen backbone under a trained head, torchvision's feature-extraction recipe) statistics adapting to "
            "the new data are the recipe, and the finding is an info note; a module run by itself that trains "
            "nothing (a teacher, whose output is a target) or run under no_grad is a warning.",
        fix="put frozen modules in eval mode after every model.train() (teacher.eval(), or override train())",
        bad_example="teacher.requires_grad_(False)\nmodel.train()            # the teacher's BatchNorm statistics move",
        good_example="teacher.requires_grad_(False)\nteacher.eval()",
        message="{count} frozen BatchNorm modules ran in train mode (e.g. {path}): their running statistics move",
        found_by=W,
    ),
    Rule(
        code="T008", name="random-in-eval-forward", severity=Severity.WARNING,
        summary="functional dropout ran with training=True inside a module in eval mode",
        why="F.dropout defaults to training=True: an eval-mode forward stays random, so validation scores are noisy "
            "and lower than the model's real quality, and inference is not reproducible.",
        fix="pass training=self.training to functional dropout, or use nn.Dropout",
        bad_example="x = F.dropout(x, p=0.5)",
        good_example="x = F.dropout(x, p=0.5, training=self.training)",
        found_by=W,
    ),
    Rule(
        code="T009", name="probabilities-to-logit-loss", severity=Severity.ERROR,
        summary="probabilities fed to a loss that expects logits (softmax before CrossEntropyLoss, sigmoid before BCEWithLogitsLoss)",
        why="the loss applies its own (log-)softmax or sigmoid: the gradients through a second squashing function "
            "are tiny and the loss cannot go below a floor, so training stalls.",
        fix="pass the raw logits to the loss; apply softmax/sigmoid only for predictions",
        bad_example="loss = F.cross_entropy(torch.softmax(logits, 1), y)",
        good_example="loss = F.cross_entropy(logits, y)",
        found_by=W,
    ),
    Rule(
        code="T010", name="loss-operands-broadcast", severity=Severity.ERROR,
        summary="an elementwise loss got input and target of different shapes that broadcast",
        why="(N, 1) against (N,) broadcasts to (N, N): every prediction is compared with every target, the loss "
            "is an average over wrong pairs and the model learns the mean target.",
        fix="make the shapes equal: pred.squeeze(1) or y.unsqueeze(1)",
        bad_example="loss = F.mse_loss(model(x), y)     # (N, 1) vs (N,)",
        good_example="loss = F.mse_loss(model(x).squeeze(1), y)",
        found_by=W,
    ),
    Rule(
        code="T011", name="degenerate-targets", severity=Severity.ERROR,
        summary="every target equals ignore_index, or every batch holds a single class for many batches in a row",
        why="with every target ignored the loss is NaN or 0 and nothing learns (an inverted padding mask); batches "
            "of one class (sorted data, no shuffle) make the model predict the current class and forget the others. "
            "All targets ignored is an error; one class per batch is a heuristic and is reported as a warning.",
        fix="every target ignored: check the label mask (ignore only the padding); one class per batch: shuffle the "
            "training data (DataLoader(shuffle=True))",
        bad_example="y[y != pad] = -100          # mask inverted: every real token ignored\n"
                    "loader = DataLoader(sorted_by_label)",
        good_example="y[y == pad] = -100\nloader = DataLoader(ds, shuffle=True)",
        found_by=W,
        causes=("G006",),
    ),
    Rule(
        code="T012", name="unnormalised-inputs", severity=Severity.WARNING,
        summary="the first layer of a training forward sees inputs far from unit scale (e.g. 0..255 pixels)",
        why="inputs an order of magnitude or more above unit scale saturate activations and make the first layer's "
            "gradients dominate; default initialisations and learning rates assume normalised inputs.",
        fix="normalise the inputs (ToTensor() divides by 255; Normalize(mean, std))",
        bad_example="x = torch.from_numpy(img).float()       # 0..255",
        good_example="x = torch.from_numpy(img).float() / 255   # and Normalize(mean, std)",
        found_by=W,
        causes=("G005", "G006"),
    ),
    Rule(
        code="T013", name="clip-scaled-gradients", severity=Severity.ERROR,
        summary="clip_grad_norm_ ran on scaled gradients, before GradScaler.unscale_",
        why="under a GradScaler the gradients are multiplied by the loss scale (65536 at first): clipping them to "
            "max_norm clips to max_norm / scale in real units, which shrinks every update to almost nothing.",
        fix="call scaler.unscale_(optimizer) before clip_grad_norm_",
        bad_example="scaler.scale(loss).backward()\nclip_grad_norm_(model.parameters(), 1.0)\nscaler.step(opt)",
        good_example="scaler.scale(loss).backward()\nscaler.unscale_(opt)\nclip_grad_norm_(model.parameters(), 1.0)\nscaler.step(opt)",
        found_by=W,
        causes=("G004",),
    ),
    Rule(
        code="T014", name="low-precision-updates-vanish", severity=Severity.ERROR,
        summary="fp16/bf16 parameters without an fp32 master copy whose updates round to zero",
        why="an update smaller than half the weight's rounding step is lost entirely: with lr * grad below "
            "eps(bf16) * |w| most weights never change although every step computes an update.",
        fix="keep the parameters in fp32 and use autocast (mixed precision), or an optimizer with fp32 master weights",
        bad_example="model = Net().to(torch.bfloat16)\nopt = SGD(model.parameters(), lr=1e-4)",
        good_example="model = Net()                         # fp32 weights\nwith torch.autocast('cpu', torch.bfloat16):\n    loss = loss_fn(model(x), y)",
        found_by=W,
        causes=("G004",),
    ),
    Rule(
        code="T015", name="parameters-replaced-after-optimizer", severity=Severity.ERROR,
        summary="the model's parameters were replaced after the optimizer was built: it holds the old tensors",
        why="assigning a new layer (model.fc = nn.Linear(...)) or re-creating parameters after building the "
            "optimizer leaves the optimizer stepping tensors the model no longer uses; the new ones never train.",
        fix="build the optimizer after the model is final (after replacing heads and loading weights)",
        bad_example="opt = SGD(model.parameters(), lr=0.1)\nmodel.fc = nn.Linear(512, 10)    # opt still holds the old fc",
        good_example="model.fc = nn.Linear(512, 10)\nopt = SGD(model.parameters(), lr=0.1)",
        found_by=W,
        causes=("G003",),
    ),
    Rule(
        code="T016", name="pretrained-weights-not-loaded", severity=Severity.ERROR,
        summary="load_state_dict(strict=False) matched fewer than half of the model's keys",
        why="strict=False silently skips every key that does not match (a 'module.' prefix from DataParallel, a "
            "renamed attribute): the model trains from its random initialisation while the run claims fine-tuning.",
        fix="strip or add the prefix so that the keys match, and check the returned missing_keys",
        bad_example="model.load_state_dict(torch.load('ddp.pt'), strict=False)   # keys start with 'module.'",
        good_example="sd = {k.removeprefix('module.'): v for k, v in torch.load('ddp.pt').items()}\n"
                     "print(model.load_state_dict(sd, strict=False))",
        found_by=W,
    ),
)

register(
    Rule(
        code="T017", name="ddp-replicas-differ", severity=Severity.ERROR,
        summary="data-parallel replicas equal before the first step hold different parameters after one",
        why="data parallelism keeps replicas equal by averaging gradients (DDP in its own backward hooks, or the "
            "user's all_reduce): a rank-dependent update, a step whose gradients were not averaged, or a forward "
            "that bypasses the wrapper trains each rank on its own data only, and the checkpoint rank 0 saves is one "
            "of several diverging models. Found from parameter checksums the ranks post to the job's key-value store "
            "(no collective of ours), when no local check names the cause (T024, T025, T029).",
        fix="call the DDP wrapper itself in the forward (ddp_model(x), not ddp_model.module(x)) and average every "
            "gradient on every rank before step()",
        bad_example="ddp = DistributedDataParallel(model)\nloss = loss_fn(ddp.module(x), y)   # gradients never averaged",
        good_example="ddp = DistributedDataParallel(model)\nloss = loss_fn(ddp(x), y)",
        found_by=W,
    ),
)

register(
    Rule(
        code="T024", name="ddp-forward-bypassed", severity=Severity.ERROR,
        summary="a backward reaches a DistributedDataParallel module whose wrapper's forward did not run in that step",
        why="DDP prepares its gradient all-reduce in its own forward: calling the wrapped module directly "
            "(ddp.module(x), or the bare model kept from before wrapping) runs a backward that averages nothing, so "
            "each rank trains on its own batches and the replicas drift apart while nothing raises. Seen on each rank "
            "from its own forwards, whether the optimizer was built from the wrapper or from the bare module.",
        fix="call the wrapper in the training forward (ddp_model(x)); keep ddp_model.module(x) for evaluation "
            "under torch.no_grad()",
        bad_example="model = Net(); opt = SGD(model.parameters(), lr=0.1)\nddp = DistributedDataParallel(model)\n"
                    "loss_fn(model(x), y).backward()   # the bare model: no all-reduce\nopt.step()",
        good_example="model = Net(); opt = SGD(model.parameters(), lr=0.1)\nddp = DistributedDataParallel(model)\n"
                     "loss_fn(ddp(x), y).backward()\nopt.step()",
        found_by=W,
    ),
    Rule(
        code="T025", name="ddp-parameters-outside-buckets", severity=Severity.ERROR,
        summary="trained parameters that DistributedDataParallel's reducer never averages",
        why="DDP registers the module's parameters, and hooks on their gradient accumulators, when it is built: a "
            "parameter set on the module afterwards (a replaced head) is in none of its buckets, and a model moved "
            "to another dtype or device afterwards (model.double(), model.to(device)) gets new accumulators, so "
            "DDP's hooks never fire. Those gradients are never all-reduced and the replicas drift apart silently.",
        fix="finish building, replacing and moving the model (and loading its weights into it) before wrapping it "
            "in DistributedDataParallel",
        bad_example="ddp = DistributedDataParallel(model)\nmodel.fc = nn.Linear(512, 10)    # outside DDP's buckets",
        good_example="model.fc = nn.Linear(512, 10)\nddp = DistributedDataParallel(model)",
        found_by=W,
    ),
    Rule(
        code="T026", name="replicas-start-apart", severity=Severity.ERROR,
        summary="data-parallel replicas hold different parameters before the first step",
        why="averaged gradients give every rank the same update, so replicas that start from different weights "
            "(hand-written all_reduce of gradients with no broadcast of the initial weights, or weights loaded on "
            "rank 0 only after wrapping) stay apart for the whole run: each rank evaluates a different model and "
            "the checkpoint is one of them. Found from parameter and gradient checksums the ranks post to the job's "
            "key-value store (no collective of ours).",
        fix="broadcast the initial parameters from rank 0 (dist.broadcast(p.data, src=0) for each, or wrap in "
            "DistributedDataParallel, which does it), or seed every rank alike before building the model",
        bad_example="torch.manual_seed(rank)\nmodel = Net()                         # different weights per rank\n"
                    "...\nfor p in model.parameters(): dist.all_reduce(p.grad); p.grad /= world",
        good_example="model = Net()\nfor p in model.parameters(): dist.broadcast(p.data, src=0)\n"
                     "...\nfor p in model.parameters(): dist.all_reduce(p.grad); p.grad /= world",
        found_by=W,
    ),
    Rule(
        code="T027", name="same-batches-on-every-rank", severity=Severity.WARNING,
        summary="every rank of a data-parallel run trains on the same batches",
        why="data parallelism divides the data between ranks: a DataLoader without a DistributedSampler (and the "
            "same seed everywhere) gives every rank the same batches, so N ranks do the work of one, an 'epoch' "
            "covers 1/N of what the step count suggests and the averaged gradient is no better than one rank's. "
            "Found from fingerprints of each rank's first batches posted to the job's key-value store.",
        fix="give the DataLoader a DistributedSampler (sampler=DistributedSampler(dataset), shuffle=False on the "
            "loader) and call sampler.set_epoch(epoch) each epoch",
        bad_example="loader = DataLoader(dataset, batch_size=32, shuffle=True)   # every rank: the same batches",
        good_example="sampler = DistributedSampler(dataset)\nloader = DataLoader(dataset, batch_size=32, sampler=sampler)",
        found_by=W,
    ),
    Rule(
        code="T028", name="sampler-epoch-never-set", severity=Severity.WARNING,
        summary="a shuffling DistributedSampler whose set_epoch() is never called: every epoch repeats one order",
        why="DistributedSampler seeds its permutation with seed + epoch and never advances the epoch itself: without "
            "sampler.set_epoch(epoch) every epoch draws the same order on every rank, which removes the shuffling "
            "the run relies on. Seen when the first batch one epoch later equals the first batch of the run while "
            "the sampler's epoch has not changed.",
        fix="call sampler.set_epoch(epoch) at the start of every epoch, before iterating the loader",
        bad_example="for epoch in range(epochs):\n    for x, y in loader:      # the sampler's epoch stays 0\n        ...",
        good_example="for epoch in range(epochs):\n    sampler.set_epoch(epoch)\n    for x, y in loader:\n        ...",
        found_by=W,
    ),
    Rule(
        code="T029", name="ddp-step-inside-no-sync", severity=Severity.ERROR,
        summary="optimizer.step() after a step whose forwards through DistributedDataParallel all ran inside no_sync()",
        why="no_sync() skips the gradient all-reduce to save communication on the micro-batches of an accumulation "
            "window; DDP decides it at forward time, so the last micro-batch's forward must run outside no_sync(). "
            "When it does not, the step applies each rank's own gradients and the replicas drift apart.",
        fix="run the forward and backward of the window's last micro-batch outside `with ddp.no_sync():`",
        bad_example="for i, (x, y) in enumerate(loader):\n    with ddp.no_sync():\n        loss_fn(ddp(x), y).backward()\n"
                    "    if (i + 1) % k == 0:\n        opt.step(); opt.zero_grad()",
        good_example="for i, (x, y) in enumerate(loader):\n    last = (i + 1) % k == 0\n"
                     "    with contextlib.nullcontext() if last else ddp.no_sync():\n        loss_fn(ddp(x), y).backward()\n"
                     "    if last:\n        opt.step(); opt.zero_grad()",
        found_by=W,
    ),
    Rule(
        code="T018", name="teacher-dropout-in-train-mode", severity=Severity.WARNING,
        summary="a module whose output feeds the loss only as a target (a distillation teacher) runs Dropout in "
                "train mode",
        why="the teacher is not trained, so its Dropout only adds noise: every soft target is computed by a random "
            "sub-network, and the student learns from targets perturbed afresh at each step.",
        fix="call teacher.eval() after every model.train() (or build it in eval mode and never switch it back)",
        bad_example="teacher.requires_grad_(False)\nwith torch.no_grad():\n    soft = teacher(x).softmax(1)   # Dropout active",
        good_example="teacher.requires_grad_(False).eval()\nwith torch.no_grad():\n    soft = teacher(x).softmax(1)",
        found_by=W,
    ),
    Rule(
        code="T019", name="optimizer-holds-only-frozen-parameters", severity=Severity.ERROR,
        summary="an optimizer steps, and every parameter it holds has requires_grad=False: nothing trains",
        why="parameters with requires_grad=False never get a gradient, so optimizer.step() skips them all; the loop "
            "runs, the loss is printed, and the model stays as it was (the head was frozen with the backbone, or the "
            "optimizer was built from the frozen part).",
        fix="build the optimizer from the parameters you train ([p for p in model.parameters() if p.requires_grad]) "
            "after freezing, and check that the new head keeps requires_grad=True",
        bad_example="model.requires_grad_(False)\nopt = SGD(model.backbone.parameters(), lr=0.01)   # the frozen part",
        good_example="model.backbone.requires_grad_(False)\nopt = SGD(model.head.parameters(), lr=0.01)",
        found_by=W,
    ),
    Rule(
        code="T020", name="mask-keeps-one-target-value", severity=Severity.ERROR,
        summary="a loss over positions selected by a hand-written mask sees a single target value at every step",
        why="a padding mask written the wrong way round (labels == pad instead of labels != pad) keeps only the "
            "padding positions: every target the loss sees is the padding id, the model learns to predict padding, "
            "and the loss falls to 0 while nothing useful is learned. The same holds whether the mask selects the "
            "positions before the loss (boolean indexing, masked_select) or weights a per-position loss "
            "(reduction='none') after it: (l * mask).sum() / mask.sum(), torch.where(mask, l, 0), l[mask].mean().",
        fix="invert the mask (keep the positions whose label is not the padding id), or pass ignore_index=pad to the "
            "loss instead of masking by hand",
        bad_example="keep = labels.view(-1) == pad\nloss = F.cross_entropy(logits.view(-1, V)[keep], labels.view(-1)[keep])",
        good_example="keep = labels.view(-1) != pad\nloss = F.cross_entropy(logits.view(-1, V)[keep], labels.view(-1)[keep])",
        found_by=W,
    ),
    Rule(
        code="T021", name="labels-independent-of-inputs", severity=Severity.WARNING,
        summary="inputs seen again come with other labels (a warning); over many steps, the loss with the targets "
                "permuted across the batch is no worse than the real one (a note)",
        why="when inputs and labels are shuffled with two different permutations (or indexed with different lists), "
            "each label belongs to another sample: the model can learn only the label frequencies, the loss stays at "
            "their entropy and the gradients look healthy. The warning is evidence from the data: the inputs of the "
            "next epoch come back with other labels than the first time. A permuted-target loss no worse than the "
            "real one is only a note (info): a model that has not started learning yet looks the same.",
        fix="shuffle inputs and labels with one permutation (x[perm], y[perm]), or let a DataLoader(shuffle=True) "
            "over one dataset of (input, label) pairs do it",
        bad_example="x = X[torch.randperm(n)]\ny = Y[torch.randperm(n)]      # another permutation",
        good_example="perm = torch.randperm(n)\nx, y = X[perm], Y[perm]",
        found_by=W,
    ),
    Rule(
        code="T022", name="loss-identically-zero", severity=Severity.ERROR,
        summary="a cross-entropy over a single class: the loss is 0 and every gradient exactly 0, whatever the model does",
        why="log_softmax over one logit is always 0, so F.cross_entropy on a (B, 1) output (a binary task written with "
            "one output, or a regression output passed to cross_entropy) gives a loss of exactly 0 and no gradient: "
            "the loop runs and nothing learns.",
        fix="for one output per sample use F.binary_cross_entropy_with_logits(out.squeeze(1), y.float()) (or "
            "F.mse_loss for regression); for C classes give the model C outputs",
        bad_example="out = model(x)                       # (B, 1)\nloss = F.cross_entropy(out, y.float().unsqueeze(1))",
        good_example="loss = F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())",
        found_by=W,
    ),
    Rule(
        code="T023", name="lazy-state-initialised-in-eval", severity=Severity.WARNING,
        summary="a module's lazily initialised state is first used by an eval-mode forward, before any training forward",
        why="spectral_norm's u/v start random and are refined only by training forwards, a data-dependent "
            "initialisation (ActNorm) runs on whatever batch comes first, and lazy modules take their shapes from it: "
            "an eval pass first (a sanity check or validation before training) uses random state or initialises from "
            "evaluation data in eval mode.",
        fix="run one training forward first (or initialise the state explicitly), then evaluate; with spectral_norm, "
            "prefer torch.nn.utils.parametrizations.spectral_norm, which runs its power iteration when it is applied",
        bad_example="model.eval()\nvalidate(model)                # u/v of spectral_norm still random\nmodel.train(); train(model)",
        good_example="model.train(); train_one_step(model)\nmodel.eval(); validate(model)",
        found_by=W,
    ),
)
