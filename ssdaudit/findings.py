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
    code: str
    name: str
    summary: str
    why: str
    fix: str
    severity: Severity = Severity.ERROR  # the default severity of its findings (SARIF's defaultConfiguration)

    @property
    def docs(self) -> str:
        return f"docs/rules/{self.code}.md"


RULES: dict[str, Rule] = {
    r.code: r
    for r in (
        Rule(
            "R001",
            "module-in-container",
            "nn.Module kept in a plain list, tuple, dict, set or deque",
            "model.parameters(), state_dict(), .to() and .train()/.eval() do not see modules in plain containers: "
            "the optimizer never updates them and a reloaded checkpoint leaves them random.",
            "wrap the container: nn.ModuleList([...]), nn.ModuleDict({...}) or nn.Sequential(...)",
        ),
        Rule(
            "R002",
            "parameter-in-container",
            "nn.Parameter kept in a plain container or object",
            "parameters outside nn.Module's registry are not trained by an optimizer built from model.parameters() "
            "and are not saved in state_dict().",
            "use nn.ParameterList([...]) or nn.ParameterDict({...}), or assign each to self.<name>",
        ),
        Rule(
            "R003",
            "module-in-plain-object",
            "nn.Module reachable only through a non-Module object, a closure or a functools.partial",
            "a helper object, dataclass, namedtuple, SimpleNamespace or closure hides its modules from the registry, "
            "with the same consequences as a plain list.",
            "make the helper an nn.Module (or assign its modules to the model), so they become submodules",
        ),
        Rule(
            "R004",
            "tensor-attribute",
            "plain tensor attribute used by the model, neither parameter nor buffer",
            "a plain tensor does not move with .to(device)/.half() and is not saved in state_dict().",
            "self.register_buffer(name, tensor) (persistent=False for derived values such as priors)",
            Severity.WARNING,
        ),
        Rule(
            "R005",
            "unregistered-call",
            "a module runs during forward() but is not part of the model",
            "a module built inside forward() is re-created (re-initialised) on every call and never trained; "
            "one hidden where no attribute reaches it is missing from parameters() and state_dict().",
            "build the module once in __init__ and assign it to self.<name> (or use torch.nn.functional)",
        ),
        Rule(
            "R006",
            "mode-not-propagated",
            "a stateful, parameter-free module (Dropout, BatchNorm without affine) that .eval() will not reach",
            "it loses no parameters, but model.eval() leaves it in training mode, so inference becomes random "
            "or uses batch statistics.",
            "register it: nn.ModuleList / nn.ModuleDict / an attribute of the model",
        ),
        Rule(
            "G001",
            "orphan-gradient",
            "a tensor gets gradients but is not a registered parameter",
            "the optimizer, built from model.parameters(), never applies those gradients: the tensors keep their "
            "initial values while the loss curve suggests training works, and state_dict() does not save them.",
            "register the module or tensor (nn.ModuleList / nn.ParameterList / an attribute of the model)",
        ),
        Rule(
            "G002",
            "no-gradient",
            "a trainable registered parameter that no gradient reaches",
            "a .detach(), an unused branch or a no_grad block cuts it off: it never trains, and DDP fails on the "
            "next iteration with 'parameters that were not used in producing loss'.",
            "remove the detach/unused branch, set requires_grad=False on purpose, or find_unused_parameters=True in DDP",
        ),
        Rule(
            "G003",
            "not-in-optimizer",
            "a parameter that gets gradients is in no optimizer param_group (or the optimizer holds strangers)",
            "its gradients are computed every step and thrown away; an optimizer holding tensors that are not the "
            "model's parameters updates copies nobody uses.",
            "build the optimizer from model.parameters() after the model is final (after .to(device), rebuilds)",
        ),
        Rule(
            "G004",
            "never-updated",
            "a parameter in the optimizer that gets gradients but never changes",
            "lr 0 in its param_group, a scheduler that zeroed it, or a group with only weight decay leave it frozen.",
            "check the param_group's lr and the scheduler for that group",
        ),
        Rule(
            "G005",
            "vanishing-or-exploding",
            "a layer's gradient norm far below or above the median layer's",
            "layers whose gradients vanish stop learning; exploding ones make training unstable.",
            "check initialisation and normalisation around the layer; clip gradients or lower the learning rate",
            Severity.WARNING,
        ),
        Rule(
            "G006",
            "non-finite-gradient",
            "a gradient became NaN or Inf",
            "one NaN gradient turns the weights it touches into NaN at the next step, and the loss after them.",
            "lower the learning rate, clip gradients, check the loss for log(0) or division by zero; use bf16 over fp16",
        ),
        Rule(
            "C001",
            "missing-keys",
            "tensors present in one checkpoint and absent from the other",
            "load_state_dict(strict=True) fails on them; with strict=False the model keeps random weights there, "
            "which is how an unregistered backbone ships as a checkpoint 8 MB too small.",
            "register the missing modules (nn.ModuleList) and re-save, or map the names with --map auto",
        ),
        Rule(
            "C002",
            "shape-mismatch",
            "a tensor has different shapes in the two checkpoints",
            "the checkpoint belongs to another configuration (classes, width, aspect ratios); loading it fails.",
            "build the model with the checkpoint's configuration, or re-initialise the mismatched head",
        ),
        Rule(
            "C003",
            "dtype-change",
            "a tensor has different dtypes in the two checkpoints",
            "a half-precision copy loses precision silently and changes the file size by a factor of two.",
            "save in the dtype you train in (model.float() before saving), or convert explicitly",
            Severity.WARNING,
        ),
        Rule(
            "C004",
            "unchanged-group",
            "every parameter under a prefix is bitwise unchanged while other parts changed",
            "a part that never changes between two training checkpoints is not learning: frozen by mistake, "
            "missing from the optimizer, or unregistered.",
            "check requires_grad and the optimizer's param_groups for that part (ssdaudit gradflow names the cause)",
            Severity.WARNING,
        ),
        Rule(
            "C005",
            "non-finite",
            "a tensor holds NaN or Inf values",
            "one NaN spreads through every forward pass; the checkpoint is unusable from that tensor on.",
            "resume from the last finite checkpoint; lower the learning rate or clip gradients",
        ),
        Rule(
            "C006",
            "size-mismatch",
            "the file is much larger than the tensors it holds",
            "torch.save writes the whole storage behind a view, so saving slices of a large tensor bloats the file.",
            "save t.clone() (or .contiguous()) copies of views, or use safetensors",
            Severity.WARNING,
        ),
        Rule(
            "N001",
            "tied-weights",
            "the same parameter is registered under several names",
            "tied weights are counted once here and saved once by torch.save; naive counters count them twice.",
            "nothing to fix; informational",
            Severity.INFO,
        ),
        Rule(
            "N002",
            "frozen-parameters",
            "registered parameters with requires_grad=False",
            "frozen parameters are saved but not trained; intended when fine-tuning, a bug otherwise.",
            "set requires_grad=True on them if they should train",
            Severity.INFO,
        ),
        Rule(
            "N003",
            "probe-skipped",
            "no example input: the forward probe did not run",
            "modules created inside forward() (R005) and whether tensor attributes are used (R004) need a forward pass.",
            "define example_input() in the model file or pass --input-shape 1,3,H,W",
            Severity.INFO,
        ),
        Rule(
            "N004",
            "probe-incomplete",
            "the forward probe could not run in every mode (train, eval) or not at all",
            "findings that need a forward pass (R004, R005, the device-move check) cover only the modes that ran; "
            "the attribute walk's findings stand regardless.",
            "give an input that forward accepts (example_input() or --input-shape), with a batch of 2 or more for BatchNorm",
            Severity.INFO,
        ),
        Rule(
            "N005",
            "tensor-attribute-handled",
            "a plain tensor attribute that forward uses safely (0-dim, or moved to the input's device first)",
            "0-dim tensors mix with tensors on any device and forward moves the others itself, so nothing breaks; "
            "they are still missing from state_dict().",
            "nothing needed; register_buffer(name, t, persistent=False) makes .to() move it once instead of every call",
            Severity.INFO,
        ),
        Rule(
            "N006",
            "hidden-frozen-module",
            "a module kept out of the registry that is frozen or runs only under no_grad (a teacher, a frozen encoder)",
            "often intended (a distillation teacher kept out of state_dict()), but .to(), .eval() and state_dict() "
            "still miss it: it stays on its device and in its mode, and checkpoints do not hold it.",
            "if it was not meant, register it (nn.ModuleList / an attribute); if it was, move it yourself with the model",
            Severity.INFO,
        ),
        Rule(
            "R007",
            "reload-mismatch",
            "a model rebuilt and loaded from its own state_dict() computes something else",
            "the checkpoint does not hold all the state forward uses: a reloaded model predicts differently (random "
            "parts, lost scales) although load_state_dict() may report nothing.",
            "register every piece of state (nn.ModuleList, register_buffer with persistent=True for learned values, "
            "no keys dropped by state_dict overrides, buffers created in __init__)",
        ),
        Rule(
            "R008",
            "device-move",
            "a floating tensor that forward reads did not follow the model's .to(dtype) / .to(device)",
            "on a GPU it stays on the CPU (forward fails with a device mismatch, or runs slowly), in half precision "
            "it stays float32; it is outside the registry, so state_dict() misses it too.",
            "register it (register_buffer / nn.Parameter / nn.ModuleList), or create it from the input's device and dtype",
        ),
        Rule(
            "R009",
            "parameter-moved-after-wrap",
            "nn.Parameter(...) followed by .to()/.cuda()/.half()/.float()/.double() and assigned to an attribute",
            "the move returns a plain non-leaf tensor on a GPU (on the CPU, .to('cpu') returns the Parameter itself, "
            "so it only breaks there): no optimizer and no state_dict() sees it.",
            "move the tensor before wrapping it: nn.Parameter(torch.empty(n).to(device)), or move the whole model later",
        ),
        Rule(
            "E999",
            "syntax-error",
            "a Python file that does not parse",
            "nothing in it can be checked, so a gate that skipped it would pass without looking.",
            "fix the syntax error (python -m py_compile FILE shows it)",
        ),
    )
}


@dataclass
class Finding:
    """One problem (or note) found in a model: where, what, how many parameters, and the fix."""

    rule: str
    severity: Severity
    path: str
    message: str
    params: int = 0
    modules: int = 0
    location: str | None = None
    # The unregistered objects behind the finding, by the dotted name they would get once fixed.
    members: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
            "location": self.location,
        }
