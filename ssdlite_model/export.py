"""ONNX export of the network's forward (images -> loc, conf), verified with onnxruntime."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ssdaudit.core.errors import UserError, first_line

if TYPE_CHECKING:
    from .detector import SSDLite


class ExportError(UserError):
    """Export or verification failed; the message is one line."""

    kind = "export"


def export_onnx(model: "SSDLite", path: str | Path, opset: int = 17, atol: float = 1e-3) -> dict[str, float]:
    """Write ``model`` as ONNX (dynamic batch) and compare onnxruntime's outputs with PyTorch's on random images.

    Returns {"bytes", "max_abs_diff_loc", "max_abs_diff_conf"}; raises ExportError when they differ beyond ``atol``.
    """
    from ssdaudit.core.io import atomic_write

    model = model.eval()
    size = model.config.image_size
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about the input-size check and the legacy exporter
            torch.onnx.export(
                model, (example,), buf,  # type: ignore[arg-type]  # a BytesIO is accepted
                dynamo=False, opset_version=opset, input_names=["images"],
                output_names=["loc", "conf"], dynamic_axes={"images": {0: "batch"}, "loc": {0: "batch"}, "conf": {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {first_line(exc, 200)}") from exc
    data = buf.getvalue()
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("checking the export needs onnxruntime: pip install 'ssdaudit[onnx]'") from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        loc, conf = session.run(None, {"images": example.numpy()})
    except Exception as exc:  # onnxruntime's own error types (an opset it cannot run, ...)
        raise ExportError(f"onnxruntime cannot run the export (opset {opset}): {first_line(exc, 200)}") from exc
    with torch.no_grad():
        ref_loc, ref_conf = model(example)
    diff_loc = float(abs(torch.from_numpy(loc) - ref_loc).max())
    diff_conf = float(abs(torch.from_numpy(conf) - ref_conf).max())
    if not (diff_loc <= atol and diff_conf <= atol):
        raise ExportError(f"onnxruntime disagrees with PyTorch: max |diff| loc {diff_loc:.2e}, conf {diff_conf:.2e} (atol {atol})")
    try:
        atomic_write(path, lambda f: f.write(data))
    except (OSError, RuntimeError) as exc:
        raise ExportError(f"cannot write {path}: {getattr(exc, 'strerror', None) or first_line(exc)}") from exc
    return {"bytes": len(data), "max_abs_diff_loc": diff_loc, "max_abs_diff_conf": diff_conf}
