"""Findings and the rule catalogue: every rule has a stable code, a name, why it matters and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Rule:
    """Everything about one rule, in one place: the docs pages, ``ssdaudit rules``, SARIF rule metadata and the
    README table are generated from these entries, and detectors make their findings through ``finding()``."""

    code: str
    name: str
    severity: Severity  # the default severity of its findings (SARIF's defaultConfiguration)
    summary: str
    why: str
    fix: str
    bad_example: str
    good_example: str
    found_by: tuple[str, ...]  # the commands that report it: "lint", "params", "gradflow", "diff"
    # The one-line message, with {fields} the detector fills ("" where the detectors phrase each case themselves).
    message: str = ""

    @property
    def docs(self) -> str:
        return f"docs/rules/{self.code}.md"

    def to_dict(self) -> dict[str, Any]:
        """The rule as ``ssdaudit rules --format json`` prints it."""
        return {"code": self.code, "name": self.name, "severity": self.severity.value, "summary": self.summary,
                "why": self.why, "fix": self.fix, "bad_example": self.bad_example, "good_example": self.good_example,
                "found_by": list(self.found_by), "docs": self.docs}

    def finding(self, path: str, message: str | None = None, *args: Any, severity: "Severity | None" = None,
                values: dict[str, Any] | None = None, **fields: Any) -> "Finding":
        """A finding of this rule at the attribute path ``path``, with the rule's severity unless a detector has a
        reason to say otherwise (a parameter-free module built in forward is only a note). ``message`` None: the
        rule's template, filled with ``path`` and ``values``."""
        if message is None:
            message = self.message.format(path=path, **(values or {}))
        return Finding(self.code, severity or self.severity, path, message, *args, **fields)


RULES: dict[str, Rule] = {
    r.code: r
    for r in (
        Rule(
            code='R001',
            name='module-in-container',
            severity=Severity.ERROR,
            summary='nn.Module kept in a plain list, tuple, dict, set or deque',
            why='model.parameters(), state_dict(), .to() and .train()/.eval() do not see modules in plain containers: the optimizer never updates them and a reloaded checkpoint leaves them random.',
            fix='wrap the container: nn.ModuleList([...]), nn.ModuleDict({...}) or nn.Sequential(...)',
            bad_example='self.blocks = [Block(c) for c in channels]   # plain list',
            good_example='self.blocks = nn.ModuleList(Block(c) for c in channels)',
            found_by=('lint', 'params'),
        ),
        Rule(
            code='R002',
            name='parameter-in-container',
            severity=Severity.ERROR,
            summary='nn.Parameter kept in a plain container or object',
            why="parameters outside nn.Module's registry are not trained by an optimizer built from model.parameters() and are not saved in state_dict().",
            fix='use nn.ParameterList([...]) or nn.ParameterDict({...}), or assign each to self.<name>',
            bad_example='self.scales = [nn.Parameter(torch.ones(c)) for c in channels]',
            good_example='self.scales = nn.ParameterList(nn.Parameter(torch.ones(c)) for c in channels)',
            found_by=('lint', 'params'),
        ),
        Rule(
            code='R003',
            name='module-in-plain-object',
            severity=Severity.ERROR,
            summary='nn.Module reachable only through a non-Module object, a closure or a functools.partial',
            why='a helper object, dataclass, namedtuple, SimpleNamespace or closure hides its modules from the registry, with the same consequences as a plain list.',
            fix='make the helper an nn.Module (or assign its modules to the model), so they become submodules',
            bad_example='self.heads = SimpleNamespace(cls=nn.Linear(d, k), box=nn.Linear(d, 4))',
            good_example='self.heads = nn.ModuleDict({"cls": nn.Linear(d, k), "box": nn.Linear(d, 4)})',
            found_by=('lint', 'params'),
        ),
        Rule(
            code='R004',
            name='tensor-attribute',
            severity=Severity.WARNING,
            summary='plain tensor attribute used by the model, neither parameter nor buffer',
            why='a plain tensor does not move with .to(device)/.half() and is not saved in state_dict().',
            fix='self.register_buffer(name, tensor) (persistent=False for derived values such as priors)',
            bad_example='self.priors = make_priors()          # a plain tensor, read in forward()',
            good_example='self.register_buffer("priors", make_priors(), persistent=False)',
            found_by=('lint', 'params'),
        ),
        Rule(
            code='R005',
            name='unregistered-call',
            severity=Severity.ERROR,
            summary='a module runs during forward() but is not part of the model',
            why='a module built inside forward() is re-created (re-initialised) on every call and never trained; one hidden where no attribute reaches it is missing from parameters() and state_dict().',
            fix='build the module once in __init__ and assign it to self.<name> (or use torch.nn.functional)',
            bad_example='def forward(self, x):\n    return nn.LayerNorm(x.shape[-1])(x)   # new, untrained, every call',
            good_example='self.norm = nn.LayerNorm(d)         # in __init__\n...\ndef forward(self, x):\n    return self.norm(x)',
            found_by=('lint', 'params'),
        ),
        Rule(
            code='R006',
            name='mode-not-propagated',
            severity=Severity.ERROR,
            summary='a stateful, parameter-free module (Dropout, BatchNorm without affine) that .eval() will not reach',
            why='it loses no parameters, but model.eval() leaves it in training mode, so inference becomes random or uses batch statistics.',
            fix='register it: nn.ModuleList / nn.ModuleDict / an attribute of the model',
            bad_example='self.drops = [nn.Dropout(0.1)]       # model.eval() never reaches it',
            good_example='self.drops = nn.ModuleList([nn.Dropout(0.1)])',
            found_by=('params',),
        ),
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
            why="a .detach(), an unused branch or a no_grad block cuts it off: it never trains, and DDP fails on the next iteration with 'parameters that were not used in producing loss'.",
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
        Rule(
            code='C001',
            name='missing-keys',
            severity=Severity.ERROR,
            summary='tensors present in one checkpoint and absent from the other',
            why='load_state_dict(strict=True) fails on them; with strict=False the model keeps random weights there, which is how an unregistered backbone ships as a checkpoint 8 MB too small.',
            fix='register the missing modules (nn.ModuleList) and re-save, or map the names with --map auto',
            bad_example='ssdaudit diff fixed.pth buggy.pth     # 312 backbone.* tensors only in A',
            good_example='register the backbone (nn.ModuleList) and save again',
            found_by=('diff',),
        ),
        Rule(
            code='C002',
            name='shape-mismatch',
            severity=Severity.ERROR,
            summary='a tensor has different shapes in the two checkpoints',
            why='the checkpoint belongs to another configuration (classes, width, aspect ratios); loading it fails.',
            fix="build the model with the checkpoint's configuration, or re-initialise the mismatched head",
            bad_example='ssdaudit diff voc.pth coco.pth        # conf.*: 21 classes against 81',
            good_example="build the model with the checkpoint's number of classes",
            found_by=('diff',),
            message='shape {a} in A, {b} in B',
        ),
        Rule(
            code='C003',
            name='dtype-change',
            severity=Severity.WARNING,
            summary='a tensor has different dtypes in the two checkpoints',
            why='a half-precision copy loses precision silently and changes the file size by a factor of two.',
            fix='save in the dtype you train in (model.float() before saving), or convert explicitly',
            bad_example='torch.save(model.half().state_dict(), "model.pth")',
            good_example='torch.save(model.float().state_dict(), "model.pth")',
            found_by=('diff',),
            message='dtype {a} in A, {b} in B',
        ),
        Rule(
            code='C004',
            name='unchanged-group',
            severity=Severity.WARNING,
            summary='every parameter under a prefix is bitwise unchanged while other parts changed',
            why='a part that never changes between two training checkpoints is not learning: frozen by mistake, missing from the optimizer, or unregistered.',
            fix="check requires_grad and the optimizer's param_groups for that part (ssdaudit gradflow names the cause)",
            bad_example='ssdaudit diff epoch1.pth epoch30.pth  # backbone.*: 312 tensors unchanged',
            good_example='ssdaudit gradflow run/ names why (G002/G003/G004)',
            found_by=('diff',),
        ),
        Rule(
            code='C005',
            name='non-finite',
            severity=Severity.ERROR,
            summary='a tensor holds NaN or Inf values',
            why='one NaN spreads through every forward pass; the checkpoint is unusable from that tensor on.',
            fix='resume from the last finite checkpoint; lower the learning rate or clip gradients',
            bad_example='ssdaudit diff last.pth best.pth       # conf.3.weight: 12 NaN in A',
            good_example='resume from the last finite checkpoint with a lower learning rate',
            found_by=('diff',),
            message='NaN or Inf values: {where}',
        ),
        Rule(
            code='C006',
            name='size-mismatch',
            severity=Severity.WARNING,
            summary='the file is much larger than the tensors it holds',
            why='torch.save writes the whole storage behind a view, so saving slices of a large tensor bloats the file.',
            fix='save t.clone() (or .contiguous()) copies of views, or use safetensors',
            bad_example='torch.save({"w": big[:10]}, "small.pth")  # writes all of big\'s storage',
            good_example='torch.save({"w": big[:10].clone()}, "small.pth")',
            found_by=('diff',),
        ),
        Rule(
            code='N001',
            name='tied-weights',
            severity=Severity.INFO,
            summary='the same parameter is registered under several names',
            why='tied weights are counted once here and saved once by torch.save; naive counters count them twice.',
            fix='nothing to fix; informational',
            bad_example='self.head.weight = self.embed.weight  # tied on purpose',
            good_example='(nothing to fix)',
            found_by=('params',),
            message='`{path}` is tied to {aliases}: counted once',
        ),
        Rule(
            code='N002',
            name='frozen-parameters',
            severity=Severity.INFO,
            summary='registered parameters with requires_grad=False',
            why='frozen parameters are saved but not trained; intended when fine-tuning, a bug otherwise.',
            fix='set requires_grad=True on them if they should train',
            bad_example='for p in model.backbone.parameters():\n    p.requires_grad_(False)',
            good_example='(intended when fine-tuning; otherwise remove the freeze)',
            found_by=('params',),
            message='{tensors} frozen tensors ({params:,} parameters) under {prefixes}',
        ),
        Rule(
            code='N003',
            name='probe-skipped',
            severity=Severity.INFO,
            summary='no example input: the forward probe did not run',
            why='modules created inside forward() (R005) and whether tensor attributes are used (R004) need a forward pass.',
            fix='define example_input() in the model file or pass --input-shape 1,3,H,W',
            bad_example='ssdaudit params model.py              # model.py has no example_input()',
            good_example='ssdaudit params model.py --input-shape 1,3,300,300',
            found_by=('params',),
            message='no example input: the forward probe was skipped',
        ),
        Rule(
            code='N004',
            name='probe-incomplete',
            severity=Severity.INFO,
            summary='the forward probe could not run in every mode (train, eval) or not at all',
            why="findings that need a forward pass (R004, R005, the device-move check) cover only the modes that ran; the attribute walk's findings stand regardless.",
            fix='give an input that forward accepts (example_input() or --input-shape), with a batch of 2 or more for BatchNorm',
            bad_example='ssdaudit params model.py --input-shape 1,3,300,300   # batch 1: BatchNorm fails in train mode',
            good_example='ssdaudit params model.py --input-shape 2,3,300,300',
            found_by=('params',),
        ),
        Rule(
            code='N005',
            name='tensor-attribute-handled',
            severity=Severity.INFO,
            summary="a plain tensor attribute that forward uses safely (0-dim, or moved to the input's device first)",
            why='0-dim tensors mix with tensors on any device and forward moves the others itself, so nothing breaks; they are still missing from state_dict().',
            fix='nothing needed; register_buffer(name, t, persistent=False) makes .to() move it once instead of every call',
            bad_example='self.limit = self.steps.clone()      # 0-dim: mixes with any device',
            good_example='self.register_buffer("limit", self.steps.clone(), persistent=False)',
            found_by=('params',),
        ),
        Rule(
            code='N006',
            name='hidden-frozen-module',
            severity=Severity.INFO,
            summary='a module kept out of the registry that is frozen or runs only under no_grad (a teacher, a frozen encoder)',
            why='often intended (a distillation teacher kept out of state_dict()), but .to(), .eval() and state_dict() still miss it: it stays on its device and in its mode, and checkpoints do not hold it.',
            fix='if it was not meant, register it (nn.ModuleList / an attribute); if it was, move it yourself with the model',
            bad_example='self._teacher = [teacher.requires_grad_(False)]   # kept out of state_dict on purpose',
            good_example='self._teacher[0].to(device)           # move it yourself with the model',
            found_by=('params',),
        ),
        Rule(
            code='R007',
            name='reload-mismatch',
            severity=Severity.ERROR,
            summary='a model rebuilt and loaded from its own state_dict() computes something else',
            why='the checkpoint does not hold all the state forward uses: a reloaded model predicts differently (random parts, lost scales) although load_state_dict() may report nothing.',
            fix='register every piece of state (nn.ModuleList, register_buffer with persistent=True for learned values, no keys dropped by state_dict overrides, buffers created in __init__)',
            bad_example='self.scale = random.random()          # used in forward, not in state_dict()',
            good_example='self.register_buffer("scale", torch.tensor(random.random()))',
            found_by=('params',),
        ),
        Rule(
            code='R008',
            name='device-move',
            severity=Severity.ERROR,
            summary="a floating tensor that forward reads did not follow the model's .to(dtype) / .to(device)",
            why='on a GPU it stays on the CPU (forward fails with a device mismatch, or runs slowly), in half precision it stays float32; it is outside the registry, so state_dict() misses it too.',
            fix="register it (register_buffer / nn.Parameter / nn.ModuleList), or create it from the input's device and dtype",
            bad_example='def _apply(self, fn, recurse=True):   # skips self.scale\n    ...',
            good_example='register the tensor and let nn.Module._apply move it',
            found_by=('params',),
        ),
        Rule(
            code='R009',
            name='parameter-moved-after-wrap',
            severity=Severity.ERROR,
            summary='nn.Parameter(...) followed by .to()/.cuda()/.half()/.float()/.double() and assigned to an attribute',
            why="the move returns a plain non-leaf tensor on a GPU (on the CPU, .to('cpu') returns the Parameter itself, so it only breaks there): no optimizer and no state_dict() sees it.",
            fix='move the tensor before wrapping it: nn.Parameter(torch.empty(n).to(device)), or move the whole model later',
            bad_example='self.w = nn.Parameter(torch.empty(n)).to(device)   # a plain tensor on a GPU',
            good_example='self.w = nn.Parameter(torch.empty(n, device=device))',
            found_by=('lint',),
            message='self.{attr} = nn.Parameter(...).{method}(...): the move returns a plain tensor (on a GPU), which no optimizer or state_dict() sees',
        ),
        Rule(
            code='R010',
            name='state-registered-in-forward',
            severity=Severity.ERROR,
            summary='register_buffer / register_parameter / add_module called inside forward()',
            why='state that appears only after the first forward is missing from a fresh model: '
                'load_state_dict(strict=True) of a checkpoint fails on it, and an optimizer built before that forward '
                'never sees a parameter registered there.',
            fix='register it in __init__ (with a placeholder shape if needed: nn.UninitializedBuffer, or resize later)',
            bad_example='def forward(self, x):\n    if not hasattr(self, "mean"):\n        self.register_buffer("mean", x.mean(0))',
            good_example='self.register_buffer("mean", torch.zeros(d))   # in __init__',
            found_by=('lint',),
            message='self.{method}(...) inside forward(): the state exists only after a first call, so a fresh model cannot load it',
        ),
        Rule(
            code='E999',
            name='syntax-error',
            severity=Severity.ERROR,
            summary='a Python file that does not parse',
            why='nothing in it can be checked, so a gate that skipped it would pass without looking.',
            fix='fix the syntax error (python -m py_compile FILE shows it)',
            bad_example='def forward(self, x)                  # missing colon',
            good_example='def forward(self, x):',
            found_by=('lint',),
            message='SyntaxError: {error}',
        ),
    )
}


@dataclass(frozen=True)
class Location:
    """A place in a source file: ``path``, 1-based ``line`` and ``col`` where known."""

    path: str
    line: int | None = None
    col: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Location":
        """"path:line[:col]" (or a bare path; a Windows drive letter stays in the path)."""
        parts = text.rsplit(":", 2)
        nums: list[int] = []
        while len(parts) > 1 and parts[-1].isdigit():
            nums.insert(0, int(parts.pop()))
        return cls(":".join(parts), nums[0] if nums else None, nums[1] if len(nums) > 1 else None)

    def __str__(self) -> str:
        return ":".join([self.path, *(str(n) for n in (self.line, self.col) if n is not None)])

    def with_path(self, path: str) -> "Location":
        return Location(path, self.line, self.col)


@dataclass
class Finding:
    """One problem (or note) found in a model: where, what, how many parameters, and the fix.

    ``path`` is the attribute path in the model (``backbone``, ``<forward>`` for a pass-wide fact), or the
    checkpoint key or class symbol the rule is about; a finding about something else names it in ``subject``
    ("file" for a file that does not parse, "optimizer" for tensors only the optimizer holds) and leaves ``path``
    empty. ``location`` is where in the source (a ``Location``; a "file:line[:col]" string given here is parsed)."""

    rule: str
    severity: Severity
    path: str
    message: str
    params: int = 0
    modules: int = 0
    location: Location | None = None
    # The unregistered objects behind the finding, by the dotted name they would get once fixed.
    members: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    subject: str | None = None

    @property
    def label(self) -> str:
        """What a report shows the finding about: its path, else its subject."""
        return self.path or self.subject or ""

    def __post_init__(self) -> None:
        if isinstance(self.location, str):  # detectors that know "file:line" as text
            self.location = Location.parse(self.location) if self.location else None

    @property
    def name(self) -> str:
        return RULES[self.rule].name

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity.value,
            "path": self.path,
            "params": self.params,
            "modules": self.modules,
            "message": self.message,
            "fix": self.fix,
            "location": str(self.location) if self.location is not None else None,
            "subject": self.subject,
        }
