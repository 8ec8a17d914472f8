"""Gradient-flow rules (G): what a training run's gradients show (GradFlowMonitor, ssdaudit gradflow)."""

from __future__ import annotations

from ssdaudit.core.findings import Rule, Severity, register

register(
    Rule(
        code='G001',
        name='orphan-gradient',
        severity=Severity.ERROR,
        summary='a tensor gets gradients but is not a registered parameter',
        why='the optimizer, built from model.parameters(), never applies those gradients: the tensors keep their initial values while the loss curve suggests training works, and state_dict() does not save them.',
        fix='register the module or tensor (nn.ModuleList / nn.ParameterList / an attribute of the model)',
        bad_example='self.backbone = list(blocks)          # forward() runs them, the optimizer never sees them',
        good_example='self.backbone = nn.ModuleList(blocks)',
        found_by=('gradflow',),
    ),
    Rule(
        code='G002',
        name='no-gradient',
        severity=Severity.ERROR,
        summary='a trainable registered parameter that no gradient reaches',
        why="a .detach(), an unused branch or a no_grad block cuts it off: it never trains, and DDP fails on the next "
            "iteration with 'parameters that were not used in producing loss'. Severity comes from the probe's "
            "forward, not from whether a loss was given: a parameter whose module ran but got no gradient is an "
            "error with any loss (the cut is named when seen: .detach(), .data, a NumPy round trip, torch.tensor(t), "
            "no_grad); a module forward never calls is a warning that says how to pass the real loss (compute_loss), "
            "and nothing once compute_loss reaches it; a forward that returns a scalar returns the loss itself. In "
            "a user's own loop an unreached parameter is an error.",
        fix='remove the detach/unused branch, set requires_grad=False on purpose, or find_unused_parameters=True in DDP',
        bad_example='feats = self.backbone(x).detach()     # nothing below this line trains',
        good_example='feats = self.backbone(x)',
        found_by=('gradflow',),
    ),
    Rule(
        code='G003',
        name='not-in-optimizer',
        severity=Severity.ERROR,
        summary='a parameter that gets gradients is in no optimizer param_group (or the optimizer holds strangers)',
        why="its gradients are computed every step and thrown away; an optimizer holding tensors that are not the model's parameters updates copies nobody uses.",
        fix='build the optimizer from model.parameters() after the model is final (after .to(device), rebuilds)',
        bad_example="opt = SGD(model.head.parameters(), lr=0.01)   # the backbone's gradients are thrown away",
        good_example='opt = SGD(model.parameters(), lr=0.01)',
        found_by=('gradflow',),
    ),
    Rule(
        code='G004',
        name='never-updated',
        severity=Severity.ERROR,
        summary='a parameter in the optimizer that gets gradients but never changes',
        why='lr 0 in its param_group, a scheduler that zeroed it, or a group with only weight decay leave it frozen.',
        fix="check the param_group's lr and the scheduler for that group",
        bad_example='SGD([{"params": backbone, "lr": 0.0}, {"params": head}], lr=0.01)',
        good_example='SGD([{"params": backbone, "lr": 0.001}, {"params": head}], lr=0.01)',
        found_by=('gradflow',),
    ),
    Rule(
        code='G005',
        name='vanishing-or-exploding',
        severity=Severity.WARNING,
        summary="a layer's gradient norm far below or above the median layer's",
        why='layers whose gradients vanish stop learning; exploding ones make training unstable.',
        fix='check initialisation and normalisation around the layer; clip gradients or lower the learning rate',
        bad_example='x = self.stem(x) * 1e-6               # gradients below vanish',
        good_example='x = self.stem(x)                     # (and a normalisation layer)',
        found_by=('gradflow',),
    ),
    Rule(
        code='G006',
        name='non-finite-gradient',
        severity=Severity.ERROR,
        summary='a gradient became NaN or Inf',
        why='one NaN gradient turns the weights it touches into NaN at the next step, and the loss after them.',
        fix='lower the learning rate, clip gradients, check the loss for log(0) or division by zero; use bf16 over fp16',
        bad_example='loss = (p * torch.log(p)).sum()       # log(0) = -inf',
        good_example='loss = (p * torch.log(p.clamp_min(1e-12))).sum()',
        found_by=('gradflow',),
    ),
)
