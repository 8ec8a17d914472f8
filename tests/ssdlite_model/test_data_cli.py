import subprocess
import sys

import torch

from ssdlite_model.data import ShapesDataset


def test_shapes_are_deterministic_and_boxes_valid():
    a, b = ShapesDataset(5, 64, seed=3), ShapesDataset(5, 64, seed=3)
    for i in range(5):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
        boxes = ta["boxes"]
        assert len(boxes) >= 1
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes.min() >= 0 and boxes.max() <= 64
    assert not torch.equal(ShapesDataset(1, 64, seed=4)[0][0], a[0][0])


def test_ssdlite_cli_info_and_errors():
    run = lambda *args: subprocess.run([sys.executable, "-m", "ssdlite_model.cli", *args], capture_output=True, text=True)
    out = run("info", "ssds-voc")
    assert out.returncode == 0 and "4,577,792" in out.stdout and "1,812,800" in out.stdout
    bad = run("info", "nope")
    assert bad.returncode == 2 and "unknown preset" in bad.stderr and "Traceback" not in bad.stderr
    from importlib.metadata import version

    assert run("--version").stdout.strip() == f"ssdlite {version('ssdaudit')}"
    macs = run("info", "ssds-voc", "--macs")
    assert macs.returncode == 0 and "0.685 G" in macs.stdout  # ssds.pytorch's published 0.685 G MAdds
