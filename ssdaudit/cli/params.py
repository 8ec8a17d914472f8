"""``ssdaudit params``: count, find unregistered, compare with a reference, predict the checkpoint."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ssdaudit.cli.app import Device, app, fail, parse_shape, timeout_option
from ssdaudit.cli.output import Format, cli_errors, emit, exit_with


class ProbeDevice(str, Enum):
    auto = "auto"
    meta = "meta"
    cpu = "cpu"


@app.command()
def params(
    target: str = typer.Argument(..., help="model.py[:NAME], package.module:NAME, a library model (torchvision:resnet50, timm:NAME, hf:MODEL_TYPE or hf:FOLDER), or a checkpoint (.pt/.pth/.bin/.safetensors, or a directory of shards or DCP)."),
    reference: str = typer.Option(None, "--reference", "-r", help="ssds-voc, ssds-coco, torchvision-ssdlite, file.py[:NAME], a checkpoint or a checkpoint directory (shards, DCP)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint (file or directory: shards, DCP) of this model: real size against predicted, missing tensors."),
    input_shape: str = typer.Option(None, "--input-shape", help="Probe input shape, e.g. 1,3,300,300 (replaces the file's example_input())."),
    device: Device = typer.Option(Device.cpu, "--device", help="Where the model is built. meta: without allocating "
                                  "parameter memory (see --probe-device for where its forward probe runs)."),
    probe_device: ProbeDevice = typer.Option(ProbeDevice.auto, "--probe-device", help="Where the forward probe of a "
                                             "model built with --device meta runs. auto: on meta, and where that fails "
                                             "for a meta-only reason (.item(), data-dependent shapes), on a CPU copy "
                                             "with random weights if it fits --probe-memory, else on a CPU copy with "
                                             "placeholder weights (shared memory: a 7B model in about 1 GiB); meta: "
                                             "there only; cpu: always on a CPU copy with random weights (refused if "
                                             "over --probe-memory). The report names the device used and why."),
    probe_memory: str = typer.Option("auto", "--probe-memory", help="Most memory a probe on a CPU copy with "
                                     "random weights may use (4x its parameters and buffers at its peak), and the most a probe on "
                                     "placeholder weights may allocate, e.g. 4GiB or 512MB; auto: half the memory "
                                     "available."),
    depth: int = typer.Option(1, "--depth", min=1, help="Module depth of the parameter table."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json, sarif (GitHub code scanning) or github (workflow annotations)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for load errors."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Unpickle checkpoints that hold Python objects "
                                      "(a whole pickled model; runs their code: only for files you trust)."),
    timeout: float = timeout_option(),
    layers: bool = typer.Option(False, "--layers", help="torchinfo's layer table (shapes from the probe input, down to "
                                "--depth) with the unregistered members spliced in and marked."),
    lint_source: bool = typer.Option(True, "--lint-source/--no-lint-source", help="Also lint the source of the "
                                     "model's own classes (not torch's nor installed libraries'): bugs that only show "
                                     "on a GPU, such as nn.Parameter(...).to(device) (R009), found on a CPU; a static "
                                     "and a runtime finding at one attribute path are one finding."),
    roundtrip: bool = typer.Option(True, "--roundtrip/--no-roundtrip", help="Save-reload round trip (R007): build the "
                                   "model twice, reload one from the other's state_dict, compare outputs."),
) -> None:
    """Count registered parameters, find unregistered ones, compare with a reference, predict the checkpoint.

    Exit codes: 0 clean, 1 an error finding (warnings too with --strict), 2 the target could not be loaded.

    Examples:

      ssdaudit params examples/buggy_plain_list.py --reference ssds-voc

      ssdaudit params examples/fixed_modulelist.py --checkpoint run/model.pth --format json

      ssdaudit params big_model.py:build --device meta --input-shape 1,128

      ssdaudit params hf:reformer --device meta --probe-memory 8GiB   # probed on a CPU copy if meta fails

      ssdaudit params torchvision:resnet50        # a library model by name, random weights, nothing downloaded
    """
    with cli_errors(fmt is Format.json, debug):
        from ssdaudit.registration.pipeline import audit_target

        from ssdaudit.checkpoints.formats import trusting_pickles
        from ssdaudit.registration.probe_device import parse_memory

        shape = parse_shape(input_shape) if input_shape else None
        budget = parse_memory(probe_memory)  # a bad value is named first, whatever else is off
        if probe_memory.strip().lower() != "auto" and device is not Device.meta:
            fail("--probe-memory bounds the CPU copy of a model built with --device meta; this one is built on the "
                 "CPU already: drop it, or add --device meta")
        if trust_pickle:
            typer.echo("warning: --trust-pickle: checkpoints that hold Python objects are unpickled with "
                       "weights_only=False, which runs any code they contain", err=True)
        with trusting_pickles(trust_pickle):
            report = audit_target(target, reference, checkpoint, shape, device.value, depth, timeout, roundtrip,
                                  layers=layers, probe_device=probe_device.value, probe_memory=budget,
                                  lint_source=lint_source)
        from ssdaudit.core.targets import TargetSpec

        emit(report, fmt, TargetSpec.parse(target).file or target)
    exit_with(report, strict)
