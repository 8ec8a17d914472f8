"""Audit whole model zoos and count the findings that would be false alarms.

    python benchmarks/zoo_sweep.py                      # torchvision: every builder
    python benchmarks/zoo_sweep.py --zoo timm           # timm: the first model of every architecture module
    python benchmarks/zoo_sweep.py --zoo transformers   # Hugging Face: every architecture's default config
    python benchmarks/zoo_sweep.py --roundtrip          # also R007/R008 on the CPU (models up to --max-params)
    python benchmarks/zoo_sweep.py --sample 92 --zoo transformers  # 92 models evenly spaced over the list
    python benchmarks/zoo_sweep.py --quick [--zoo ...]  # two small models of the zoo: a smoke run (seconds); a zoo
                                                        # whose package is missing falls back to torchvision

Goal: zero error or warning findings (these are all correct models). Models are built without weights on the
meta device where they can be (else on the CPU, small enough there). Each gets the forward probe (train and eval
mode) with an input of its kind, and the device-move check (R008) with it. The table counts how many
forward probes ran: on the meta device many cannot (``.item()``, data-dependent shapes); such a model is rebuilt on
the CPU with random weights and probed there when it fits ``--probe-memory`` (``--probe-device auto``, as
``ssdaudit params`` does); a probe that still cannot run is an N004 note, not a finding. timm and transformers are in the ``bench`` extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ssdaudit import Severity, find_unregistered

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record, set_quick  # noqa: E402

# --quick: two small models per zoo, through the same code
QUICK = {"torchvision": ("squeezenet1_1", "mobilenet_v3_small"), "timm": ("resnet10t", "test_vit"),
         "transformers": ("bert", "gpt2")}


@dataclass
class Row:
    name: str
    params: int = 0
    device: str = "meta"
    probe_ran: bool = False
    flagged: list[str] = field(default_factory=list)  # "RULE path: message" of error/warning findings
    error: str | None = None  # the model could not be built at all (not counted as a finding)
    roundtrip_ran: bool = False
    seconds: float = 0.0
    probe_device: str = "-"  # where the forward probe ran: meta, or cpu (built there, or the fallback)
    meta_failure: str | None = None  # why the probe failed on meta (the fallback's reason), short
    input_name: str = ""  # the model's main input (transformers: input_ids, pixel_values, ...)


def _on_meta_or_cpu(build: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, str]:
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return build(), device
        except NotImplementedError:
            continue
    raise RuntimeError("cannot build on meta or cpu")


def torchvision_models(only: tuple[str, ...] | None = None) -> Iterator[tuple[str, Callable[[], torch.nn.Module], Callable[[str], Any]]]:
    import torchvision

    classification = set(torchvision.models.list_models(module=torchvision.models))
    for name in only or torchvision.models.list_models():
        def build(name=name):
            try:
                return torchvision.models.get_model(name, weights=None, weights_backbone=None)
            except TypeError:
                return torchvision.models.get_model(name, weights=None)

        def example(device, name=name):
            if name in classification and "inception" not in name:
                return torch.rand(2, 3, 224, 224, device=device)
            return None

        yield name, build, example


def timm_models(only: tuple[str, ...] | None = None):
    import timm

    seen_modules = set()
    for name in only or timm.list_models():
        module = timm.models.get_model_entrypoint(name).__module__ if hasattr(timm.models, "get_model_entrypoint") \
            else timm.models._registry.model_entrypoint(name).__module__
        if module in seen_modules and not only:
            continue
        seen_modules.add(module)

        def build(name=name):
            return timm.create_model(name, pretrained=False)

        def example(device, name=name):
            size = timm.models.get_pretrained_cfg(name).input_size if timm.models.get_pretrained_cfg(name) else (3, 224, 224)
            return torch.rand(2, *size, device=device)

        yield name, build, example


def text_model_types() -> tuple[str, ...]:
    """The model types whose ``AutoModel`` class takes token ids (``main_input_name == "input_ids"``) as its main
    input, in name order: the architectures issue 23's coverage goal counts (read from the classes, nothing built)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    keys = []
    for key in sorted(CONFIG_MAPPING.keys()):
        try:
            cls = MODEL_MAPPING[CONFIG_MAPPING[key]]
            takes_ids = getattr(cls, "main_input_name", "input_ids") == "input_ids"
        except Exception:  # no AutoModel class for this configuration (or it needs a package missing here)
            continue
        if takes_ids:
            keys.append(key)
    return tuple(keys)


def transformers_models(only: tuple[str, ...] | None = None):
    from transformers import AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for key in only or sorted(CONFIG_MAPPING.keys()):
        def build(key=key):
            return AutoModel.from_config(CONFIG_MAPPING[key]())

        # the input depends on the built model's main input: see transformers_input
        yield key, build, lambda _device: None


def transformers_input(model: torch.nn.Module, device: str) -> Any:
    """The input ``ssdaudit params hf:NAME`` probes with (``library_models.hf_example_input``), on ``device``."""
    from torch.utils._pytree import tree_map

    from ssdaudit.core.library_models import hf_example_input

    example = hf_example_input(getattr(model, "config", None), type(model))
    return tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, example)


def roundtrip_on_cpu(build: Callable[[], torch.nn.Module], example: Callable[[str], Any], zoo: str) -> list[str] | None:
    """R007 (save-reload round trip) and R008 (device-move check, inside the probe) with real CPU weights; None if
    it cannot run."""
    from ssdaudit.registration.roundtrip import run_roundtrip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = build().eval()
        x = transformers_input(model, "cpu") if zoo == "transformers" else example("cpu")
        if x is None:
            return None
        rt = run_roundtrip(build, x)
        if rt.error is not None:
            return None
        flagged = [] if rt.equal else [f"R007 first differing module `{rt.first_differing}`: {rt.outside[:3]}"]
        flagged += [f"R008 {f.path}: {f.message[:120]}" for f in find_unregistered(model, x)
                    if f.rule == "R008" and f.severity is not Severity.INFO]
    return flagged


def _probe(row: Row, name: str, model: torch.nn.Module, x: Any, build: Callable[[], torch.nn.Module],
           example: Callable[[str], Any], zoo: str, probe_device: str, budget: int | None) -> list[Any]:
    """The probe plan (``plan.probe_plan``) as ``ssdaudit params --device meta`` runs it: a probe that fails on meta
    reruns on a CPU build with random weights when the model fits the budget, else on a CPU copy with placeholder
    weights; the findings of the run that counts, and where it ran in ``row``."""
    from ssdaudit.registration.plan import ProbeOptions, probe_plan

    def build_cpu() -> tuple[torch.nn.Module, Any]:
        torch.manual_seed(0)
        with torch.device("cpu"):
            cpu = build()
        cpu.eval()
        return cpu, transformers_input(cpu, "cpu") if zoo == "transformers" else example("cpu")

    plan = probe_device if row.device == "meta" else "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = probe_plan(model, x, ProbeOptions(plan, budget, build_cpu, name=name, built_on=row.device))
    status = outcome.status
    row.probe_ran = status.ran
    row.probe_device = ("-" if not status.attempted else "cpu~" if status.device == "placeholder"
                        else "cpu*" if status.device == "cpu" and row.device == "meta" else status.device)
    if row.device == "meta" and outcome.placement.reason.startswith("meta failed"):
        row.meta_failure = outcome.placement.reason.removeprefix("meta failed: ")
    return list(outcome.findings)


def _sample(entries: list[Any], n: int) -> list[Any]:
    """``n`` entries evenly spaced over the list (deterministic: the same names every run)."""
    if n >= len(entries):
        return entries
    return [entries[(i * len(entries)) // n] for i in range(n)]


def sweep(zoo: str, limit: int | None = None, roundtrip: bool = False, max_params: int = 60_000_000,
          only: tuple[str, ...] | None = None, probe_device: str = "auto", budget: int | None = None,
          sample: int | None = None) -> list[Row]:
    source = {"torchvision": torchvision_models, "timm": timm_models, "transformers": transformers_models}[zoo]
    rows = []
    entries = list(source(only))
    if sample is not None:
        entries = _sample(entries, sample)
    for k, (name, build, example) in enumerate(entries):
        if limit is not None and k >= limit:
            break
        row = Row(name)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, row.device = _on_meta_or_cpu(build)
        except Exception as exc:  # a config that needs arguments, an optional dependency: not our finding
            row.error = f"{exc.__class__.__name__}: {str(exc)[:80]}"
            rows.append(row)
            continue
        model.eval()
        x = transformers_input(model, row.device) if zoo == "transformers" else example(row.device)
        row.input_name = str(getattr(model, "main_input_name", "")) if zoo == "transformers" else ""
        findings = _probe(row, name, model, x, build, example, zoo, probe_device, budget)
        row.params = sum(p.numel() for p in model.parameters())
        # N004 (the probe could not run, e.g. .item() on the meta device) says what the audit could not check; it
        # is counted in the probe column, not as an alarm about the model
        row.flagged = [f"{f.rule} {f.path}: {f.message[:160]}" for f in findings
                       if f.severity is not Severity.INFO and f.rule != "N004"]
        if roundtrip and row.params <= max_params:
            extra = roundtrip_on_cpu(build, example, zoo)
            row.roundtrip_ran = extra is not None
            row.flagged += extra or []
        row.seconds = time.perf_counter() - start
        rows.append(row)
        for line in row.flagged:
            print(f"  {name}: {line}", flush=True)
        del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", choices=("torchvision", "timm", "transformers"), default="torchvision")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N models (a quick look).")
    parser.add_argument("--roundtrip", action="store_true", help="Also R007 and R008 on real CPU weights.")
    parser.add_argument("--max-params", type=int, default=60_000_000, help="Largest model for --roundtrip.")
    parser.add_argument("--probe-device", choices=("auto", "meta"), default="auto",
                        help="auto: a probe that fails on meta reruns on a CPU build with random weights (within "
                        "--probe-memory), as `ssdaudit params --probe-device auto` does; meta: never.")
    parser.add_argument("--probe-memory", default="4GiB", help="Largest CPU build for the fallback (default 4GiB).")
    parser.add_argument("--sample", type=int, default=None,
                        help="N models evenly spaced over the zoo's list (deterministic): a smaller sweep.")
    parser.add_argument("--text-only", action="store_true",
                        help="transformers: only model types whose AutoModel takes input_ids (issue 23's 92).")
    parser.add_argument("--quick", action="store_true",
                        help="Two small models of the zoo (torchvision's where the zoo is not installed): a smoke run.")
    args = parser.parse_args()
    set_quick(args.quick)
    if args.quick and args.zoo != "torchvision":
        import importlib.util

        if importlib.util.find_spec(args.zoo) is None:
            print(f"{args.zoo}: not installed (pip install -e '.[bench]'); --quick sweeps two torchvision models instead")
            args.zoo = "torchvision"
    only = QUICK[args.zoo] if args.quick else None
    if only:
        print(f"--quick: {', '.join(only)} only")
    from ssdaudit.registration.probe_device import parse_memory

    if args.text_only and args.zoo == "transformers" and not only:
        only = text_model_types()
        print(f"--text-only: {len(only)} model types take input_ids")
    rows = sweep(args.zoo, args.limit, args.roundtrip, args.max_params, only, args.probe_device,
                 parse_memory(args.probe_memory), args.sample)
    built = [r for r in rows if r.error is None]
    print(f"{'model':<44} {'device':>6} {'params':>14} {'probe':>6} {'on':>5} {'flagged':>8} {'seconds':>8}")
    for r in built:
        print(f"{r.name:<44} {r.device:>6} {r.params:>14,} {'ran' if r.probe_ran else '-':>6} {r.probe_device:>5} "
              f"{len(r.flagged):>8} {r.seconds:>8.2f}")
    flagged = [r for r in built if r.flagged]
    probes = sum(r.probe_ran for r in built)
    fallback = sum(r.probe_device == "cpu*" and r.probe_ran for r in built)
    placeholder = sum(r.probe_device == "cpu~" and r.probe_ran for r in built)
    print(f"\n{args.zoo}: {len(built)} models audited ({len(rows) - len(built)} could not be built here), "
          f"{len(flagged)} with error/warning findings, forward probes ran on {probes} of {len(built)} "
          f"({fallback} on a CPU copy after meta failed, {placeholder} on one with placeholder weights), "
          f"{sum(r.seconds for r in built):.1f} s in all")
    text_models = [r for r in built if r.input_name == "input_ids"]
    if text_models:
        print(f"models whose input is input_ids: forward probes ran on {sum(r.probe_ran for r in text_models)} of "
              f"{len(text_models)} ({sum(r.probe_ran and r.probe_device == 'meta' for r in text_models)} on meta, "
              f"{sum(r.probe_ran and r.probe_device == 'cpu*' for r in text_models)} on a CPU copy, "
              f"{sum(r.probe_ran and r.probe_device == 'cpu~' for r in text_models)} with placeholder weights)")
    for r in built:
        if not r.probe_ran and r.meta_failure:
            print(f"  probe did not run: {r.name}: meta failed: {r.meta_failure}")
    for r in rows:
        if r.error:
            print(f"  not built: {r.name}: {r.error}")
    if args.roundtrip:
        ran = sum(r.roundtrip_ran for r in built)
        print(f"round trip (R007) and device-move check (R008) ran on {ran} models")
        record(f"params: {args.zoo} zoo, R007/R008 false positives", f"{len(flagged)} of {ran} models",
               "round trip on CPU weights", None, "0 findings", not flagged)
        return
    sampled = (f", a sample of {args.sample}" if args.sample else "") + (" text models" if args.text_only else "")
    record(f"params: {args.zoo} zoo false positives{sampled}", f"{len(flagged)} of {len(built)} models",
           f"forward probes ran on {probes} of {len(built)}", None, "0 findings", not flagged)


if __name__ == "__main__":
    main()
