"""``[tool.ssdaudit]`` in pyproject.toml: what ``ssdaudit check`` lints and which models it audits.

Every problem is a ``ConfigError`` naming the file, the line and the key, e.g.
``pyproject.toml:14: [[tool.ssdaudit.models]] #1: 'params' must be an integer, got "4M"``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ssdaudit.core.errors import DEFAULT_TIMEOUT_S, ConfigError
from ssdaudit.core.findings import rule_codes

TOP_KEYS = {"lint", "exclude", "ignore", "baseline", "models", "timeout"}
MODEL_KEYS = {"target", "reference", "params", "tolerance", "max_checkpoint_mb", "gradflow_steps", "input_shape",
              "expect", "reason"}


@dataclass
class ModelCheck:
    target: str
    reference: str | None = None
    params: int | None = None
    tolerance: float = 0.0
    max_checkpoint_mb: float | None = None
    gradflow_steps: int = 0
    input_shape: list[int] | None = None
    expect: str = "pass"  # "fail": a known-bad model (a demonstration) that must keep failing
    reason: str = ""
    source: str | None = None  # the configuration file this entry was read from
    lines: dict[str, int] = field(default_factory=dict)  # 1-based line of each of its keys there


@dataclass
class CheckConfig:
    path: Path
    lint: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)  # read for context, never reported (known-bad demonstrations)
    ignore: set[str] = field(default_factory=set)
    baseline: str | None = None
    models: list[ModelCheck] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT_S  # seconds for building and probing each model (0: no limit)

    @property
    def root(self) -> Path:
        return self.path.parent


def _line_of(text: str, key: str, occurrence: int = 0, after: str | None = None) -> int:
    """1-based line of the ``occurrence``-th ``key = ...`` (after the header ``after``, if given)."""
    lines = text.splitlines()
    start = 0
    if after is not None:
        headers = [i for i, line in enumerate(lines) if line.strip().startswith(after)]
        if headers:
            start = headers[min(occurrence, len(headers) - 1)]
            occurrence = 0
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    seen = 0
    for i in range(start, len(lines)):
        if pattern.match(lines[i]):
            if seen == occurrence:
                return i + 1
            seen += 1
    return start + 1 if after is not None else 1


def load_config(path: str | Path) -> CheckConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such configuration file: {path} (ssdaudit check reads [tool.ssdaudit] from pyproject.toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8, as TOML requires") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    section = data.get("tool", {}).get("ssdaudit")
    if section is None:
        raise ConfigError(f"{path} has no [tool.ssdaudit] section (see README: 'Use it in CI')")

    def fail(key: str, message: str, model: int | None = None) -> ConfigError:
        if model is None:
            line, where = _line_of(text, key, after="[tool.ssdaudit]"), "[tool.ssdaudit]"
        else:
            line, where = _line_of(text, key, model, after="[[tool.ssdaudit.models]]"), f"[[tool.ssdaudit.models]] #{model + 1}"
        return ConfigError(f"{path}:{line}: {where}: {message}")

    for key in section:
        if key not in TOP_KEYS:
            raise fail(key, f"unknown key {key!r} (known: {', '.join(sorted(TOP_KEYS))})")
    cfg = CheckConfig(path)
    def existing_paths(key: str) -> list[str]:
        value = section.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise fail(key, f"'{key}' must be a list of paths")
        for p in value:
            if not (cfg.root / p).exists():
                raise fail(key, f"{key} path {p!r} does not exist (relative to {cfg.root})")
        return value

    cfg.lint = existing_paths("lint")
    cfg.exclude = existing_paths("exclude")
    ignore = section.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise fail("ignore", "'ignore' must be a list of rule codes like [\"R004\"]")
    known, unknown = rule_codes(ignore)
    if unknown:
        raise fail("ignore", f"unknown rule code {unknown[0]!r} in 'ignore' (see `ssdaudit rules`)")
    cfg.ignore = known
    baseline = section.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise fail("baseline", "'baseline' must be a file path")
    cfg.baseline = baseline
    timeout = section.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise fail("timeout", f"'timeout' must be a number of seconds >= 0 (0: no limit), got {timeout!r}")
    cfg.timeout = float(timeout)
    models = section.get("models", [])
    if not isinstance(models, list):
        raise fail("models", "'models' must be an array of tables: [[tool.ssdaudit.models]]")
    for i, m in enumerate(models):
        check = _model(m, i, fail)
        check.source = str(path)
        check.lines = {key: _line_of(text, key, i, after="[[tool.ssdaudit.models]]") for key in m}
        cfg.models.append(check)
    return cfg


def _model(m: Any, i: int, fail: Callable[..., ConfigError]) -> ModelCheck:
    if not isinstance(m, dict):
        raise fail("models", "each model must be a table")
    for key in m:
        if key not in MODEL_KEYS:
            raise fail(key, f"unknown key {key!r} (known: {', '.join(sorted(MODEL_KEYS))})", i)
    if not isinstance(m.get("target"), str) or not m["target"]:
        raise fail("target", "'target' is required: file.py[:NAME] or package.module:NAME", i)

    def typed(key: str, kinds: tuple[type, ...], what: str, default: Any = None) -> Any:
        value = m.get(key, default)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise fail(key, f"'{key}' must be {what}, got {value!r}", i)
        return value

    check = ModelCheck(
        target=m["target"],
        reference=typed("reference", (str,), "a reference name, file or checkpoint"),
        params=typed("params", (int,), "an integer"),
        tolerance=float(typed("tolerance", (int, float), "a number", 0.0)),
        max_checkpoint_mb=typed("max_checkpoint_mb", (int, float), "a number"),
        gradflow_steps=typed("gradflow_steps", (int,), "an integer", 0),
        input_shape=typed("input_shape", (list,), "a list of integers"),
        expect=typed("expect", (str,), '"pass" or "fail"', "pass"),
        reason=typed("reason", (str,), "a string", ""),
    )
    if check.input_shape is not None and (
        not check.input_shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in check.input_shape)
    ):
        raise fail("input_shape", f"'input_shape' must be a list of positive integers like [2, 3, 300, 300], got {check.input_shape!r}", i)
    if check.expect not in ("pass", "fail"):
        raise fail("expect", f"'expect' must be \"pass\" or \"fail\", got {check.expect!r}", i)
    if check.tolerance < 0:
        raise fail("tolerance", "'tolerance' must be >= 0", i)
    if check.gradflow_steps < 0:
        raise fail("gradflow_steps", "'gradflow_steps' must be >= 0", i)
    return check
