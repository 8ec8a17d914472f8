"""A diagnosis a person can read (issue 35): the cause first with its consequences folded under it (``Rule.causes``,
``caused_by``), one finding per rule and place, the same grouping in every output format, and the picture of the run
(``doctor.plot``, ``ssdaudit watch --plot``) drawn from the run's own numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssdaudit.core.diagnosis import fold, headline, merge_places, tree
from ssdaudit.core.findings import RULES, Finding, Location, Severity
from ssdaudit.training.doctor import DoctorReport, Watch, watch

sys.path.insert(0, str(Path(__file__).parent))
import test_doctor as td  # noqa: E402  (the doctor's own buggy loops and their clean twins)

ROOT = Path(__file__).resolve().parents[2]


# --- the registry's relation and the folding itself (no torch needed) ---------------------------------------


def test_every_declared_consequence_is_a_registered_rule_and_no_rule_causes_itself() -> None:
    for code, rule in RULES.items():
        assert code not in rule.causes
        assert all(c in RULES for c in rule.causes), (code, rule.causes)
    # the pairs the doctor always knew are in the registry now
    assert all("G004" in RULES[c].causes for c in ("T002", "T004", "T005", "T014"))
    assert "G003" in RULES["T015"].causes and {"G005", "G006"} <= set(RULES["T006"].causes)


def g(rule: str, path: str, params: int, step: int | None, **facts: object) -> Finding:
    return RULES[rule].finding(path, f"{rule} in {path}", params=params, step=step, facts=dict(facts))


def test_a_consequence_is_folded_only_under_a_cause_seen_no_later() -> None:
    cause = RULES["T006"].finding("bn", "eval mode", step=3, location=Location("train.py", 10))
    before = g("G006", "fc.weight", 10, 1)  # a NaN at step 1 is not explained by eval mode from step 3
    after = g("G006", "fc.bias", 10, 5)
    unrelated = RULES["T010"].finding("loss", "broadcast", step=4, location=Location("train.py", 12))
    whole_run = g("G005", "fc", 10, None, kind="vanishing")
    out = fold([cause, before, after, unrelated, whole_run])
    assert [f.caused_by for f in out] == [None, None, "T006", None, "T006"]
    roots = tree(out)
    assert [r.rule for r, _ in roots] == ["G006", "T006", "T010"]  # earliest first
    assert [c.label for c in dict((r.rule, rest) for r, rest in roots)["T006"]] == ["fc.bias", "fc"]
    assert headline(out).startswith("3 causes found: G006 (fc.weight), step 1; T006 at train.py:10, step 3; T010 at")


def test_per_layer_findings_of_one_rule_become_one_listing_the_largest_first() -> None:
    layers = [g("G005", f"layer{k}", params, 4 + k % 2, kind="exploding", ratio=float(10 ** (k % 3 + 2)))
              for k, params in enumerate([10, 5000, 300, 70, 90000, 8])]
    other = g("G005", "head", 3, None, kind="vanishing")
    merged = merge_places([*layers, other])
    assert len(merged) == 2 and merged[1] is other
    m = merged[0]
    assert m.label == "6 layers" and m.step == 4 and m.params == sum(f.params for f in layers)
    assert m.message.startswith("6 layers (layer4, layer1, layer2 and 3 more; largest first): layer4: ")
    assert [p.path for p in m.parts] == ["layer4", "layer1", "layer2", "layer3", "layer0", "layer5"]
    assert m.facts["ratio"] == 1e4
    doc = m.to_dict()
    assert [p["path"] for p in doc["parts"]] == [p.path for p in m.parts]  # the JSON keeps every layer


# --- the ImageNet-style case: a resnet trained with BatchNorm left in eval mode until it diverges --------------


def resnet_run(bug: bool, steps: int = 6) -> Watch:
    """pytorch/examples' ImageNet loop in small: a torchvision ResNet (one BasicBlock per stage), SGD with momentum;
    the bug is the missing model.train() after the validation pass that follows step 1, so BatchNorm trains on its
    initial running statistics (mean 0, variance 1) and the residual stages blow the activations up to NaN."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    with watch(model, opt) as w:
        for step in range(steps):
            if step == 0 or not bug:
                model.train()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            model.eval()  # validation
            with torch.no_grad():
                model(x)
    return w


@pytest.fixture(scope="module")
def resnet_report() -> DoctorReport:
    return resnet_run(True).report("resnet")


def test_resnet_in_eval_mode_is_one_cause_with_its_consequences_folded(resnet_report: DoctorReport) -> None:
    report = resnet_report
    roots = tree(report.findings)
    assert [r.rule for r, _ in roots] == ["T006"], [(f.rule, f.label, f.caused_by) for f in report.findings]
    consequences = roots[0][1]
    assert {c.rule for c in consequences} >= {"G005", "G006"}
    assert all(c.caused_by == "T006" for c in consequences)
    assert report.findings[0].rule == "T006"  # cause first, in every list the renderers read
    exploding = [c for c in consequences if c.rule == "G005" and c.facts.get("kind") == "exploding"]
    assert len(exploding) == 1 and len(exploding[0].parts) >= 10  # one finding for the layers, not one per layer
    nan = next(c for c in consequences if c.rule == "G006")
    assert nan.step is not None and nan.step > report.findings[0].step  # NaN after the cause
    # exit code unchanged: a consequence still counts as the finding it is (G006 is an error)
    assert report.exit_code() == 1 == (1 if any(f.severity is Severity.ERROR for f in report.findings) else 0)
    doc = report.to_dict()
    assert doc["summary"].startswith("1 cause found: T006 at ") and ", step 2" in doc["summary"]
    assert [f["caused_by"] for f in doc["findings"]][0] is None
    assert {f["rule"] for f in doc["findings"] if f["caused_by"] == "T006"} >= {"G005", "G006"}
    layers = next(f for f in doc["findings"] if f["rule"] == "G005" and len(f.get("parts", [])) > 3)["parts"]
    assert len(layers) == len(exploding[0].parts) and all("path" in p and "message" in p for p in layers)


def test_resnet_trained_in_train_mode_is_clean() -> None:
    w = resnet_run(False)
    assert [f.rule for f in w.findings() if f.severity is not Severity.INFO] == []


def test_text_json_sarif_and_github_agree_on_causes_and_consequences(resnet_report: DoctorReport) -> None:
    from rich.console import Console

    from ssdaudit.render.github import render_github
    from ssdaudit.render.json import render_json
    from ssdaudit.render.sarif import render_sarif
    from ssdaudit.render.terminal import render

    report = resnet_report
    causes = {f.rule for f in report.findings if f.caused_by is None}
    consequences = {(f.rule, f.caused_by) for f in report.findings if f.caused_by is not None}
    assert causes == {"T006"} and ("G006", "T006") in consequences

    doc = json.loads(render_json(report))
    assert {f["rule"] for f in doc["findings"] if f["caused_by"] is None} == causes
    assert {(f["rule"], f["caused_by"]) for f in doc["findings"] if f["caused_by"]} == consequences

    sarif = json.loads(render_sarif(report.findings, "0"))["runs"][0]["results"]
    assert {r["ruleId"] for r in sarif if "caused_by" not in r.get("properties", {})} == causes
    assert {(r["ruleId"], r["properties"]["caused_by"]) for r in sarif if "caused_by" in r.get("properties", {})} \
        == consequences
    cause_result = next(r for r in sarif if r["ruleId"] == "T006")
    assert set(cause_result["properties"]["consequences"]) == {c for c, _ in consequences}

    annotations = render_github(report.findings, "train.py").splitlines()
    assert len(annotations) == len(causes) and "title=T006 " in annotations[0]
    assert "consequences of T006" in annotations[0] and "(G006)" in annotations[0]

    console = Console(record=True, width=200)
    render(report, console)
    lines = console.export_text().splitlines()
    assert lines[1].startswith("1 cause found: T006 at ")
    assert lines[2].startswith("T006 training-in-eval-mode")  # the first finding printed is the cause
    top = [ln for ln in lines if ln[:1] in "TG" and ln[:4] in RULES]
    assert [ln[:4] for ln in top] == ["T006"]  # consequences are indented under it, never top level
    folded = next(ln for ln in lines if "consequences of T006" in ln)
    assert "(G005)" in folded and "(G006)" in folded


# --- the doctor's own test cases: the injected cause is printed first, at most 5 top-level findings -------------


@pytest.mark.parametrize("case", list(td.BUGGY), ids=list(td.BUGGY))
def test_each_buggy_case_prints_its_cause_first(case: str) -> None:
    code, loop, _ = td.BUGGY[case]
    report = loop(True).report(case)
    roots = [r for r, _ in tree(report.findings)]
    assert roots and roots[0].rule == code, [(f.rule, f.step, f.caused_by) for f in report.findings]
    assert len(roots) <= 5
    assert report.summary.startswith(f"{len([r for r in roots if r.severity is not Severity.INFO])} cause")


def test_ignoring_a_cause_ignores_the_consequences_that_restate_it_as_before() -> None:
    # gradients cleared before step (T002) leave every parameter unchanged (G004): with T002 ignored, G004 stays
    # silent, as it always was; the exit code of the run does not change
    model = td.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = td.data()
    with watch(model, opt, ignore=["T002"]) as w:
        for _ in range(td.STEPS):
            F.mse_loss(model(x).squeeze(1), y).backward()
            opt.zero_grad()
            opt.step()
    assert w.findings() == [] and w.report().exit_code() == 0


# --- the series and the picture ----------------------------------------------------------------------------------


def lr_collapse(every: int = 1) -> tuple[Watch, list[float], list[float]]:
    """T004's loop: a cosine horizon of 3 stepped per batch (lr 0.05, 0.0375, 0.0125, 0, ...); returns the watch,
    the losses the loop computed and the whole-model gradient norms it saw before each step."""
    model = td.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    x, y = td.data()
    losses, norms = [], []
    with watch(model, opt, every=every) as w:
        for _ in range(8):
            opt.zero_grad()
            loss = F.mse_loss(model(x).squeeze(1), y)
            loss.backward()
            losses.append(loss.item())
            norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
            opt.step()
            sched.step()
    return w, losses, norms


def test_the_series_are_the_runs_own_numbers() -> None:
    w, losses, norms = lr_collapse()
    s = w.series()
    assert s.steps == list(range(1, 9))
    assert s.loss["mse_loss"] == pytest.approx(losses, rel=1e-6)
    assert s.grad_norm["model"] == pytest.approx(norms, rel=1e-5)
    assert s.lr["group 0"][:4] == pytest.approx([0.05, 0.0375, 0.0125, 0.0], abs=1e-9)
    # the top-level modules' norms combine to the model's
    tops = [v for k, v in s.grad_norm.items() if k != "model"]
    assert sorted(k for k in s.grad_norm if k != "model") == ["0", "1", "3"]
    assert [math.sqrt(sum(t[i] ** 2 for t in tops)) for i in range(8)] == pytest.approx(s.grad_norm["model"], rel=1e-5)
    assert all(r > 0 for r in s.update_ratio[:3]) and s.update_ratio[3] == 0.0  # lr 0 at step 4: nothing moved
    # every=3: only the steps the doctor checks are recorded
    s3 = lr_collapse(every=3)[0].series()
    assert s3.steps == [1, 4, 7] and s3.loss["mse_loss"] == pytest.approx([losses[0], losses[3], losses[6]], rel=1e-6)


def test_the_picture_draws_the_collapsing_learning_rate_and_marks_the_finding(tmp_path: Path) -> None:
    from ssdaudit.training.doctor.picture import PANELS, draw_run

    w, losses, _ = lr_collapse()
    report = w.report("lr")
    fig = draw_run(report)
    try:
        axes = dict(zip(PANELS, fig.axes))
        lr_line = next(ln for ln in axes["learning rate"].get_lines() if ln.get_label() == "group 0")
        xs, ys = list(lr_line.get_xdata()), list(lr_line.get_ydata())
        assert xs == list(range(1, 9))
        assert ys[0] == 0.05 and ys[3] == 0.0 and ys[1] > ys[2] > ys[3]  # the collapse to 0 at step 4, as drawn
        loss_line = next(ln for ln in axes["loss"].get_lines() if ln.get_label() == "mse_loss")
        assert list(loss_line.get_ydata()) == pytest.approx(losses, rel=1e-6)
        t004 = next(f for f in report.findings if f.rule == "T004")
        marks = [ln for ln in axes["loss"].get_lines() if list(ln.get_xdata()) == [t004.step, t004.step]]
        assert marks, "the finding's step is marked"
        assert any(t.get_text() == "T004" for t in axes["loss"].texts)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = w.plot(tmp_path / "run.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.png"]  # written atomically: no temporary file left
    assert w.plot(tmp_path / "run.pdf").read_bytes()[:5] == b"%PDF-"  # the format follows the suffix
    with pytest.raises(ValueError, match="png, .pdf or .svg"):
        w.plot(tmp_path / "run.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        w.plot(tmp_path / "missing" / "run.png")
    assert not (tmp_path / "missing").exists() and not (tmp_path / "run.txt").exists()


def test_cli_plot_and_series_in_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ssdaudit.cli import app

    png = tmp_path / "run.png"
    r = CliRunner().invoke(app, ["watch", "--steps", "5", "--plot", str(png), "--format", "json", "--", "python",
                                 str(ROOT / "examples/watch_missing_zero_grad.py")])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["plot"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    series = doc["series"][0]
    assert series["steps"] == [1, 2, 3, 4, 5] and len(series["loss"]["cross_entropy"]) == 5
    assert series["grad_norm"]["model"][-1] > series["grad_norm"]["model"][0]  # T001: the summed gradient grows
    assert doc["findings"][0]["rule"] == "T001" and doc["findings"][0]["caused_by"] is None

    for bad, why in ((tmp_path / "missing" / "run.png", "does not exist"), (tmp_path, "is a directory"),
                     (tmp_path / "run.txt", ".png, .pdf or .svg")):
        r = CliRunner().invoke(app, ["watch", "--plot", str(bad), "--", "python",
                                     str(ROOT / "examples/watch_missing_zero_grad.py")])
        assert r.exit_code == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
        assert "step 0 loss" not in r.output  # refused before the script ran
