"""R005: a module constructed inside forward(); a parameter-free one (activations, pooling, losses) is a note.
Fix (unsafe: the call's defaults are the functional's, but a subclass or a patched module would differ):
``nn.ReLU(inplace=True)(x)`` becomes ``F.relu(x, inplace=True)``."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ssdaudit.core.findings import Fix, Severity
from ssdaudit.lint.context import FileContext, Hit, dotted, walk
from ssdaudit.lint.scan import class_scans

CODE = "R005"
# module -> (its functional, the constructor's positional parameter names, which the functional takes by keyword)
FUNCTIONAL: dict[str, tuple[str, tuple[str, ...]]] = {
    "ReLU": ("relu", ("inplace",)), "ReLU6": ("relu6", ("inplace",)), "SiLU": ("silu", ("inplace",)),
    "GELU": ("gelu", ("approximate",)), "Mish": ("mish", ("inplace",)), "Hardswish": ("hardswish", ("inplace",)),
    "Hardsigmoid": ("hardsigmoid", ("inplace",)), "ELU": ("elu", ("alpha", "inplace")),
    "LeakyReLU": ("leaky_relu", ("negative_slope", "inplace")), "Softplus": ("softplus", ("beta", "threshold")),
    "Softmax": ("softmax", ("dim",)), "LogSoftmax": ("log_softmax", ("dim",)), "Softmin": ("softmin", ("dim",)),
    "GLU": ("glu", ("dim",)), "LogSigmoid": ("logsigmoid", ()), "Sigmoid": ("sigmoid", ()), "Tanh": ("tanh", ()),
    "MaxPool1d": ("max_pool1d", ("kernel_size", "stride", "padding", "dilation")),
    "MaxPool2d": ("max_pool2d", ("kernel_size", "stride", "padding", "dilation")),
    "AvgPool2d": ("avg_pool2d", ("kernel_size", "stride", "padding")),
    "AdaptiveAvgPool2d": ("adaptive_avg_pool2d", ("output_size",)),
    "AdaptiveMaxPool2d": ("adaptive_max_pool2d", ("output_size",)),
    "Upsample": ("interpolate", ("size", "scale_factor", "mode", "align_corners")),
    "CrossEntropyLoss": ("cross_entropy", ("weight", "size_average", "ignore_index", "reduce", "reduction")),
    "NLLLoss": ("nll_loss", ("weight", "size_average", "ignore_index", "reduce", "reduction")),
    "MSELoss": ("mse_loss", ("size_average", "reduce", "reduction")),
    "L1Loss": ("l1_loss", ("size_average", "reduce", "reduction")),
    "SmoothL1Loss": ("smooth_l1_loss", ("size_average", "reduce", "reduction", "beta")),
    "BCELoss": ("binary_cross_entropy", ("weight", "size_average", "reduce", "reduction")),
    "BCEWithLogitsLoss": ("binary_cross_entropy_with_logits", ("weight", "size_average", "reduce", "reduction")),
}


def check(ctx: FileContext) -> Iterator[Hit]:
    for scan in class_scans(ctx):
        forward = scan.methods.get("forward")
        if forward is None:
            continue
        called = {id(n.func): n for n in walk(forward) if isinstance(n, cst.Call) and isinstance(n.func, cst.Call)}
        for node in walk(forward):
            if isinstance(node, cst.Call) and ctx.is_module_ctor(node):
                symbol = f"{scan.cls.name.value}.forward"
                if ctx.is_parameter_free(node):
                    yield Hit(node, symbol, f"{dotted(node.func)}(...) is built inside forward(): it holds no "
                              "parameters, so only the construction is repeated (torch.nn.functional avoids it)",
                              Severity.INFO, data=called.get(id(node)))
                else:
                    yield Hit(node, symbol,
                              f"{dotted(node.func)}(...) is built inside forward(): re-created every call, never trained")


def fix(ctx: FileContext, hit: Hit) -> Fix | None:
    outer, ctor = hit.data, hit.node
    if not isinstance(outer, cst.Call) or not isinstance(ctor, cst.Call):
        return None  # built, then called later: nothing local to rewrite
    member = ctx.nn_member(ctor.func) or ""
    if member not in FUNCTIONAL or any(a.keyword is not None or a.star for a in outer.args):
        return None
    name, positional = FUNCTIONAL[member]
    if any(a.star for a in ctor.args) or len([a for a in ctor.args if a.keyword is None]) > len(positional):
        return None
    kwargs = [f"{positional[i]}={ctx.code(a.value)}" for i, a in enumerate(ctor.args) if a.keyword is None]
    kwargs += [f"{a.keyword.value}={ctx.code(a.value)}" for a in ctor.args if a.keyword is not None]
    prefix = ctx.torch_prefix() if member in ("Sigmoid", "Tanh") else ctx.functional_prefix()
    if prefix is None:
        return None  # the file binds no name the call could go through
    func = prefix + name
    args = [ctx.code(a.value) for a in outer.args] + kwargs
    return Fix(f"call {func}(...) instead of building {member} in forward()", False,
               (ctx.replace(outer, f"{func}({', '.join(args)})"),))
