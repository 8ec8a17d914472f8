"""Training-loop rules (L): what the source of a training loop shows, in functions and scripts (``ssdaudit lint``).
Where the doctor (``ssdaudit watch``, runtime) checks the same class of bug, the rule has the doctor rule's name and
its ``why`` names the runtime code: one name, a static and a runtime code."""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

register(
    Rule(
        code="L001",
        name="gradients-never-cleared",
        severity=Severity.ERROR,
        summary="a loop calls backward() and optimizer.step() but never clears the gradients (or, a warning, steps on every path and clears only on some)",
        why="backward() adds to .grad: without zero_grad() each step applies the sum of every gradient so far, so "
            "the updates grow and training diverges or crawls. A clear in one branch only (if epoch > 0, one arm of an "
            "AMP if/else) leaves the other paths accumulating; a clear under a periodic test (if i % k == 0) is "
            "gradient accumulation and is left alone. The doctor finds the same class at runtime (T001).",
        fix="call optimizer.zero_grad() once per step (before backward(), or after step())",
        bad_example="for x, y in loader:\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    optimizer.step()",
        good_example="for x, y in loader:\n    optimizer.zero_grad()\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    optimizer.step()",
        found_by=("lint",),
        message="{opt}.step() after backward() in this loop, but nothing in the loop clears the gradients: they add up over the iterations",
    ),
    Rule(
        code="L002",
        name="gradients-cleared-before-step",
        severity=Severity.ERROR,
        summary="zero_grad() between backward() and optimizer.step()",
        why="the step then applies zero gradients: nothing trains, while the loss is computed as usual. The doctor "
            "finds the same class at runtime (T002).",
        fix="move zero_grad() before backward() (or after step())",
        bad_example="for x, y in loader:\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    optimizer.zero_grad()\n    optimizer.step()",
        good_example="for x, y in loader:\n    optimizer.zero_grad()\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    optimizer.step()",
        found_by=("lint",),
        message="{call}() between backward() and step(): the step applies zero gradients",
    ),
    Rule(
        code="L003",
        name="epoch-scheduler-stepped-per-batch",
        severity=Severity.ERROR,
        summary="scheduler.step() of an epoch-based schedule (StepLR, MultiStepLR, CosineAnnealingLR ...) inside the batch loop",
        why="the schedule's periods are counted in epochs: stepping it every batch runs the whole schedule in the "
            "first epochs (a StepLR(step_size=30) decays after 30 batches), and the learning rate collapses.",
        fix="call scheduler.step() once per epoch, after the batch loop (or size the schedule in steps: T_max=epochs*len(loader))",
        bad_example="scheduler = StepLR(optimizer, step_size=30)\nfor epoch in range(90):\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n        scheduler.step()",
        good_example="scheduler = StepLR(optimizer, step_size=30)\nfor epoch in range(90):\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n    scheduler.step()",
        found_by=("lint",),
        message="{name}.step() of a {kind} inside the batch loop: the schedule counts epochs",
    ),
    Rule(
        code="L004",
        name="probabilities-to-logit-loss",
        severity=Severity.ERROR,
        summary="softmax (or log_softmax) applied to the logits passed to CrossEntropyLoss / F.cross_entropy",
        why="cross_entropy applies log_softmax itself: after a softmax the loss sees probabilities as logits, its "
            "gradients shrink and training stalls (log_softmax twice is only redundant: a note). The doctor finds "
            "the same class at runtime (T009).",
        fix="pass the raw logits: F.cross_entropy(logits, target)",
        bad_example="loss = F.cross_entropy(F.softmax(model(x), dim=1), y)",
        good_example="loss = F.cross_entropy(model(x), y)",
        found_by=("lint",),
    ),
    Rule(
        code="L005",
        name="clip-scaled-gradients",
        severity=Severity.ERROR,
        summary="clip_grad_norm_ on gradients a GradScaler scaled, without scaler.unscale_(optimizer) first",
        why="the gradients are multiplied by the loss scale (65536 at first): the clipping threshold applies to "
            "scaled values, so it clips almost everything, or nothing as the scale changes. The doctor finds the "
            "same class at runtime (T013).",
        fix="call scaler.unscale_(optimizer) before clip_grad_norm_",
        bad_example="scaler = GradScaler()\nfor x, y in loader:\n    optimizer.zero_grad()\n    scaler.scale(F.cross_entropy(model(x), y)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scaler.step(optimizer)\n    scaler.update()",
        good_example="scaler = GradScaler()\nfor x, y in loader:\n    optimizer.zero_grad()\n    scaler.scale(F.cross_entropy(model(x), y)).backward()\n    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scaler.step(optimizer)\n    scaler.update()",
        found_by=("lint",),
        message="{call}(...) clips gradients that {scaler} scaled: call {scaler}.unscale_(optimizer) first",
    ),
    Rule(
        code="L006",
        name="loss-requires-grad-forced",
        severity=Severity.ERROR,
        summary="loss.requires_grad = True / loss.requires_grad_(): forcing a loss that has no graph",
        why="a loss without requires_grad was computed without a graph to the parameters (a .detach(), .item(), "
            "no_grad or numpy on the way): forcing the flag silences backward()'s error and trains nothing.",
        fix="find where the graph is cut (detach, .item(), torch.no_grad, numpy) and remove it",
        bad_example="loss = criterion(outputs.detach(), y)\nloss.requires_grad = True\nloss.backward()",
        good_example="loss = criterion(outputs, y)\nloss.backward()",
        found_by=("lint",),
        message="{code}: the loss has no graph to the parameters; forcing requires_grad makes backward() train nothing",
    ),
    Rule(
        code="L007",
        name="training-in-eval-mode",
        severity=Severity.WARNING,
        summary="model.eval() inside the training loop with no model.train() on the way back",
        why="after the first evaluation the rest of training runs in eval mode: dropout off, BatchNorm frozen on "
            "its running statistics. The doctor finds the same class at runtime (T006).",
        fix="call model.train() at the start of each epoch (or right after the evaluation)",
        bad_example="for epoch in range(10):\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)",
        good_example="for epoch in range(10):\n    model.train()\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)",
        found_by=("lint",),
        message="{name}.eval() in the training loop and no {name}.train() in it: later iterations train in eval mode",
    ),
    Rule(
        code="L008",
        name="load-result-ignored",
        severity=Severity.WARNING,
        summary="load_state_dict(..., strict=False) whose result (missing and unexpected keys) is thrown away",
        why="strict=False loads whatever matches and says nothing: a prefix mismatch (module., backbone.) loads "
            "zero tensors and the model trains from random weights. The keys it skipped are in the result. The "
            "doctor finds the same class at runtime (T016).",
        fix="keep and check the result: missing, unexpected = model.load_state_dict(sd, strict=False)",
        bad_example='model.load_state_dict(torch.load("pretrained.pth"), strict=False)',
        good_example='missing, unexpected = model.load_state_dict(torch.load("pretrained.pth"), strict=False)\nassert not unexpected, unexpected',
        found_by=("lint",),
        message="the result of {call}(..., strict=False) is ignored: keys it skipped go unnoticed",
    ),
    Rule(
        code="L009",
        name="ddp-forward-bypassed",
        severity=Severity.ERROR,
        summary="the forward of a DistributedDataParallel model called through .module in training",
        why="DDP synchronises gradients through hooks its own forward sets up: calling model.module(x) skips them, "
            "so each process trains its own replica and they drift apart. The doctor finds the same class at "
            "runtime (T017).",
        fix="call the wrapper: model(x); keep model.module for state_dict() and attributes",
        bad_example="model = DDP(net)\nfor x, y in loader:\n    optimizer.zero_grad()\n    F.cross_entropy(model.module(x), y).backward()\n    optimizer.step()",
        good_example="model = DDP(net)\nfor x, y in loader:\n    optimizer.zero_grad()\n    F.cross_entropy(model(x), y).backward()\n    optimizer.step()",
        found_by=("lint",),
        message="{name}.module(...) in a training loop bypasses DistributedDataParallel: gradients are not synchronised",
    ),
    Rule(
        code="L010",
        name="graph-retained-for-nothing",
        severity=Severity.WARNING,
        summary="backward(retain_graph=True) as the only backward() of a training loop",
        why="no second backward() uses the kept graph: each iteration holds its activations until the next one "
            "replaces them, and the flag usually hides an error (a tensor carried over from the previous "
            "iteration, still attached to its graph) instead of fixing it.",
        fix="drop retain_graph=True; detach what is carried between iterations (hidden = hidden.detach())",
        bad_example="for x, y in loader:\n    optimizer.zero_grad()\n    F.cross_entropy(model(x), y).backward(retain_graph=True)\n    optimizer.step()",
        good_example="for x, y in loader:\n    optimizer.zero_grad()\n    F.cross_entropy(model(x), y).backward()\n    optimizer.step()",
        found_by=("lint",),
        message="backward(retain_graph=True) and no other backward() in this loop: the graph is kept for nothing",
    ),
    Rule(
        code="L011",
        name="epoch-sized-schedule-stepped-per-batch",
        severity=Severity.ERROR,
        summary="a StepLR/MultiStepLR whose step size is given in epochs (an argument documented as epochs, or named *epoch*) stepped inside the batch loop",
        why="the step size or milestones come from a setting counted in epochs (--lr-step with help 'epochs', "
            "--decay-epochs): stepping the schedule every batch decays the learning rate after that many batches, so "
            "it collapses in the first epoch. L003 finds the same class when the schedule is built beside its loop; "
            "this rule follows the setting through the file, to a loop in another function.",
        fix="call scheduler.step() once per epoch, after the batch loop, or size it in batches: step_size=args.lr_step * len(loader)",
        bad_example="parser.add_argument('--lr-step', type=int, default=30, help='epochs between decays')\n...\nscheduler = StepLR(optimizer, step_size=args.lr_step)\n...\ndef train(model, loader, optimizer, scheduler):\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n        scheduler.step()",
        good_example="parser.add_argument('--lr-step', type=int, default=30, help='epochs between decays')\n...\nscheduler = StepLR(optimizer, step_size=args.lr_step * len(loader))   # counted in batches\n...\ndef train(model, loader, optimizer, scheduler):\n    for x, y in loader:\n        optimizer.zero_grad()\n        F.cross_entropy(model(x), y).backward()\n        optimizer.step()\n        scheduler.step()",
        found_by=("lint",),
        message="{name}.step() inside the batch loop, but the {kind} was sized in epochs ({setting}): it decays every {setting} batches",
    ),
    Rule(
        code="L012",
        name="softmax-model-to-logit-loss",
        severity=Severity.ERROR,
        summary="the output of a model whose forward() ends in softmax is given to CrossEntropyLoss / F.cross_entropy",
        why="cross_entropy applies log_softmax itself: a model that returns probabilities (the Keras habit of a "
            "softmax last layer) makes the loss treat probabilities as logits, its gradients shrink and training "
            "stalls. L004 finds the softmax written beside the loss; this rule follows it into the model's class. "
            "The doctor finds the same class at runtime (T009).",
        fix="return the logits from forward() and apply softmax only for predictions (or use F.nll_loss(torch.log(p), y))",
        bad_example="class Net(nn.Module):\n    def forward(self, x):\n        return F.softmax(self.fc(x), dim=1)\n...\nmodel = Net()\nloss = nn.CrossEntropyLoss()(model(x), y)",
        good_example="class Net(nn.Module):\n    def forward(self, x):\n        return self.fc(x)             # logits\n...\nmodel = Net()\nloss = nn.CrossEntropyLoss()(model(x), y)\nprobs = model(x).softmax(dim=1)     # only for predictions",
        found_by=("lint",),
        message="{name}'s output goes to cross_entropy, but {cls}.forward() returns a softmax: the loss takes it for logits",
    ),
    Rule(
        code="L013",
        name="load-result-ignored-in-helper",
        severity=Severity.WARNING,
        summary="load_state_dict(..., strict=False) as a bare statement in a helper that builds or loads a model (build_model(), load_model())",
        why="strict=False loads whatever matches and says nothing: a prefix mismatch (module., backbone.) loads "
            "zero tensors and every caller of the helper trains or evaluates random weights. L008 finds the same "
            "class in training code; a helper that builds the model is where it hides most.",
        fix="keep and check the result: missing, unexpected = model.load_state_dict(state, strict=False); assert not missing",
        bad_example='def build_model(path):\n    model = Net()\n    model.load_state_dict(torch.load(path), strict=False)\n    return model',
        good_example='def build_model(path):\n    model = Net()\n    result = model.load_state_dict(torch.load(path), strict=False)\n    assert not result.missing_keys, result.missing_keys\n    return model',
        found_by=("lint",),
        message="the result of {call}(..., strict=False) is thrown away in {function}(): keys it skipped go unnoticed by every caller",
    ),
)
