"""Checkpoint diff: which keys, shapes, dtypes and values differ between two checkpoints, across naming schemes.

``diff_checkpoints(a, b)`` compares two opened checkpoints one tensor at a time (peak memory: the tensors in
hand, in chunks), ``align_keys`` maps B's names onto A's (wrapper prefixes, then the order of shapes within a
group), and ``write_mapped`` writes B's tensors under A's names.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ssdaudit.core.paths import group_by_prefix, owner_prefix
from ssdaudit.core.io import atomic_write
from ssdaudit.checkpoints.formats import CheckpointFile, TensorInfo, is_buffer_name
from ssdaudit.core.findings import RULES, Finding

# Wrappers that add a prefix to every key: DataParallel/DDP, torch.compile, Lightning-style "model." holders.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
TOP_LEVEL = "(top level)"
CHUNK_ELEMENTS = 1 << 22  # 4M elements: temporaries stay at 16 to 32 MB whatever the tensor size


def prefix_of(key: str) -> str:
    """The top-level module of a checkpoint key (``backbone.0.weight`` -> ``backbone``), "(top level)" for a bare key."""
    return owner_prefix(key, 1, TOP_LEVEL)


# --- key alignment -----------------------------------------------------------------------------------


@dataclass
class KeyMapping:
    """A's key -> B's key, and how each pair was found: "name", "prefix" or "shape-order"."""

    pairs: dict[str, str]
    method: dict[str, str]
    ambiguous: set[str] = field(default_factory=set)

    @property
    def confidence(self) -> float:
        """1.0 when every pair matched by name (after wrapper prefixes); shape-order pairs count 0.9, ambiguous 0.5."""
        if not self.pairs:
            return 0.0
        score = {"name": 1.0, "prefix": 1.0, "shape-order": 0.9}
        total = sum(0.5 if k in self.ambiguous else score[self.method[k]] for k in self.pairs)
        return round(total / len(self.pairs), 3)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.method.values():
            out[m] = out.get(m, 0) + 1
        return out

    @property
    def renamed(self) -> dict[str, str]:
        return {a: b for a, b in self.pairs.items() if a != b}


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _common_first(keys: list[str]) -> str | None:
    firsts = {k.split(".", 1)[0] for k in keys}
    return next(iter(firsts)) + "." if len(firsts) == 1 and all("." in k for k in keys) else None


def align_keys(a: dict[str, TensorInfo], b: dict[str, TensorInfo], mode: str = "auto") -> KeyMapping:
    """Pair A's keys with B's. "none": equal names only. "auto": also wrapper prefixes and shape order.

    Order of evidence: equal names; names equal once ``module.``/``_orig_mod.`` (or a prefix every key on one
    side shares and the other lacks) is stripped; then, per leading group (``base.*`` against ``backbone.*``),
    the ordered sequence of (shape, leaf name); last, the remaining keys in order when their sequences agree.
    """
    pairs = {k: k for k in a if k in b}
    method = {k: "name" for k in pairs}
    ambiguous: set[str] = set()
    if mode == "none":
        return KeyMapping(pairs, method)
    rest_a = [k for k in a if k not in pairs]
    rest_b = [k for k in b if k not in pairs]  # name matches pair a key with itself
    if rest_a and rest_b:
        _match_by_prefix(a, b, rest_a, rest_b, pairs, method)
        rest_a = [k for k in a if k not in pairs]
        used = set(pairs.values())
        rest_b = [k for k in b if k not in used]
    if rest_a and rest_b:
        _match_groups_by_shape(a, b, rest_a, rest_b, pairs, method, ambiguous)
        rest_a = [k for k in a if k not in pairs]
        used = set(pairs.values())
        rest_b = [k for k in b if k not in used]
    if rest_a and rest_b and _signature(a, rest_a) == _signature(b, rest_b):
        for ka, kb in zip(rest_a, rest_b):
            pairs[ka], method[ka] = kb, "shape-order"
    ordered = OrderedDict((k, pairs[k]) for k in a if k in pairs)
    return KeyMapping(dict(ordered), {k: method[k] for k in ordered}, ambiguous)


def _match_by_prefix(a: dict[str, TensorInfo], b: dict[str, TensorInfo], rest_a: list[str], rest_b: list[str],
                     pairs: dict[str, str], method: dict[str, str]) -> None:
    strip_a, strip_b = _common_first(list(a)), _common_first(list(b))
    if strip_a and strip_b and strip_a == strip_b:
        strip_a = strip_b = None

    def norm(key: str, strip: str | None) -> str:
        key = _strip_wrappers(key)
        if strip and key.startswith(strip) and _strip_wrappers(strip) == strip:
            key = key[len(strip):]
        return _strip_wrappers(key)

    by_norm_b: dict[str, str] = {}
    for kb in rest_b:
        by_norm_b.setdefault(norm(kb, strip_b), kb)
    for ka in rest_a:
        found = by_norm_b.get(norm(ka, strip_a))
        if found is not None and found not in pairs.values():
            pairs[ka], method[ka] = found, "prefix"


def _signature(infos: dict[str, TensorInfo], keys: list[str]) -> list[tuple[tuple[int, ...], str]]:
    return [(infos[k].shape, k.rsplit(".", 1)[-1]) for k in keys]


def _groups(keys: list[str]) -> "OrderedDict[str, list[str]]":
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for k in keys:
        groups.setdefault(_strip_wrappers(k).split(".", 1)[0], []).append(k)
    return groups


def _match_groups_by_shape(a: dict[str, TensorInfo], b: dict[str, TensorInfo], rest_a: list[str], rest_b: list[str],
                           pairs: dict[str, str], method: dict[str, str], ambiguous: set[str]) -> None:
    groups_b = _groups(rest_b)
    used: set[str] = set()
    for name_a, keys_a in _groups(rest_a).items():
        sig = _signature(a, keys_a)
        candidates = [n for n, keys_b in groups_b.items() if n not in used and _signature(b, keys_b) == sig]
        if not candidates:
            continue
        chosen = name_a if name_a in candidates else candidates[0]
        used.add(chosen)
        for ka, kb in zip(keys_a, groups_b[chosen]):
            pairs[ka], method[ka] = kb, "shape-order"
            if len(candidates) > 1 and chosen != name_a:
                ambiguous.add(ka)


# --- tensor comparison -----------------------------------------------------------------------------


@dataclass
class TensorComparison:
    bitwise_equal: bool
    close: bool  # within rtol/atol
    max_abs_diff: float
    rel_change: float  # ||a - b|| / ||a||
    nonfinite_a: int
    nonfinite_b: int


_INT_VIEW = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _nonfinite(t: Any) -> int:
    import torch

    if not t.is_floating_point() or t.numel() == 0:
        return 0
    lo, hi = torch.aminmax(t)  # one pass; NaN and Inf show in the extremes
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return 0
    return int((~torch.isfinite(t)).sum())


def compare_tensors(
    a: Any, b: Any, rtol: float = 0.0, atol: float = 0.0, after_chunk: Callable[[int, int], None] | None = None
) -> TensorComparison:
    """Compare two tensors of one shape in flattened chunks; dtypes may differ (then values are compared).

    ``after_chunk(start, stop)`` (element offsets) is called once a chunk is done, so the caller can drop the pages
    behind it: peak memory stays at a chunk, not a tensor.
    """
    import torch

    fa, fb = a.reshape(-1), b.reshape(-1)
    same_bits = a.dtype == b.dtype and a.element_size() in _INT_VIEW
    view = getattr(torch, _INT_VIEW[a.element_size()]) if same_bits else None
    floating = a.is_floating_point() and b.is_floating_point()
    work = torch.float32 if floating and torch.float64 not in (a.dtype, b.dtype) else torch.float64
    bitwise, close = True, True
    max_abs, sq_diff, sq_a, nonfinite_a, nonfinite_b = 0.0, 0.0, 0.0, 0, 0
    equal_chunks: list[tuple[int, int]] = []  # their share of ||a|| is needed only if another chunk differs
    for start in range(0, fa.numel(), CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, fa.numel())
        ca, cb = fa[start:stop], fb[start:stop]
        equal_bits = same_bits and torch.equal(ca.contiguous().view(view), cb.contiguous().view(view))
        n = _nonfinite(ca)
        nonfinite_a += n
        if equal_bits:  # same bits, same NaN/Inf count: one pass saved
            nonfinite_b += n
            equal_chunks.append((start, stop))
        else:
            nonfinite_b += _nonfinite(cb)
            bitwise = False
            wa, wb = ca.to(work), cb.to(work)
            d = wa - wb
            # NaN/Inf are counted apart (C005); the differences and norms are those of the finite values, so a
            # NaN neither hides a real change (max() ignores NaN) nor turns every figure into NaN
            finite = torch.isfinite(d)
            fa_part = wa
            if not bool(finite.all()):
                d, fa_part = d[finite], wa[finite]
            sq_a += float(torch.linalg.vector_norm(fa_part)) ** 2
            if d.numel():
                lo, hi = torch.aminmax(d)
                max_abs = max(max_abs, float(hi), -float(lo))
            sq_diff += float(torch.linalg.vector_norm(d)) ** 2
            if close:
                close = bool(torch.isclose(wa, wb, rtol=rtol, atol=atol, equal_nan=True).all())
        if after_chunk is not None:
            after_chunk(start, stop)
    if not bitwise:
        for start, stop in equal_chunks:
            sq_a += float(torch.linalg.vector_norm(fa[start:stop].to(work))) ** 2
            if after_chunk is not None:
                after_chunk(start, stop)
    bitwise = bitwise and same_bits
    rel = (sq_diff ** 0.5) / (sq_a ** 0.5) if sq_a > 0 else (float("inf") if sq_diff > 0 else 0.0)
    return TensorComparison(bitwise, close, max_abs, rel, nonfinite_a, nonfinite_b)


# --- the report ----------------------------------------------------------------------------------


@dataclass
class DiffReport:
    a: CheckpointFile
    b: CheckpointFile
    mapping: KeyMapping | None  # None with --map none
    only_in_a: list[str]
    only_in_b: list[str]
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    dtype_mismatch: list[tuple[str, str, str]]
    changed: list[dict[str, Any]]  # {"key", "max_abs_diff", "rel_change"}, beyond tolerance
    close: list[str]  # not bitwise equal, but within rtol/atol
    unchanged: list[str]  # bitwise equal
    nonfinite: dict[str, tuple[int, int]]  # A's key -> (count in A, count in B)
    findings: list[Finding]
    rtol: float = 0.0
    atol: float = 0.0

    def compared_keys(self) -> list[str]:
        """A's keys whose values were compared (paired, same shape)."""
        skipped = {k for k, _, _ in self.shape_mismatch}
        return [k for k in self.unchanged + self.close + [c["key"] for c in self.changed] if k not in skipped]

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.shape_mismatch or self.dtype_mismatch or self.changed)

    def exit_code(self, strict: bool = False) -> int:
        """0 identical within tolerance, 1 different (``strict`` changes nothing: a difference is the finding)."""
        return 0 if self.identical else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": _side(self.a),
            "b": _side(self.b),
            "identical": self.identical,
            "rtol": self.rtol,
            "atol": self.atol,
            "only_in_a": [_key_entry(self.a.tensors[k]) for k in self.only_in_a],
            "only_in_b": [_key_entry(self.b.tensors[k]) for k in self.only_in_b],
            "shape_mismatch": [{"key": k, "shape_a": list(sa), "shape_b": list(sb)} for k, sa, sb in self.shape_mismatch],
            "dtype_mismatch": [{"key": k, "dtype_a": da, "dtype_b": db} for k, da, db in self.dtype_mismatch],
            "changed": self.changed,
            "close": self.close,
            "unchanged": self.unchanged,
            "mapping": None if self.mapping is None else dict(self.mapping.pairs),
            "mapping_confidence": None if self.mapping is None else self.mapping.confidence,
            "findings": [f.to_dict() for f in self.findings],
        }


def _side(c: CheckpointFile) -> dict[str, Any]:
    return {
        "path": str(c.path),
        "bytes": c.file_bytes,
        "tensors": len(c.tensors),
        "params": c.params,
        "tensor_bytes": c.tensor_bytes,
        "state_dict_key": c.wrapper_key,
    }


def _key_entry(info: TensorInfo) -> dict[str, Any]:
    return {"key": info.key, "shape": list(info.shape), "dtype": info.dtype}


def diff_checkpoints(
    a: CheckpointFile,
    b: CheckpointFile,
    rtol: float = 0.0,
    atol: float = 0.0,
    map_mode: str = "auto",
    progress: Callable[[str, int], None] | None = None,
) -> DiffReport:
    """Compare B against A, one tensor at a time (peak memory: the two largest tensors' chunks, not the files).

    ``a``, ``b``: opened with ``open_checkpoint``. ``rtol``, ``atol``: tensors within
    ``|a - b| <= atol + rtol * |b|`` count as equal. ``map_mode``: "auto" pairs keys across prefixes and naming
    schemes, "none" equal names only. ``progress(key, nbytes)`` is called after each tensor (bytes read).
    Raises ``LoadError`` when a tensor cannot be read (a truncated or damaged file)."""
    mapping = align_keys(a.tensors, b.tensors, map_mode)
    pairs = mapping.pairs
    mapped_b = set(pairs.values())
    only_a = [k for k in a.tensors if k not in pairs]
    only_b = [k for k in b.tensors if k not in mapped_b]
    shape_mm, dtype_mm, changed, close, unchanged = [], [], [], [], []
    nonfinite: dict[str, tuple[int, int]] = {}
    for ka, kb in pairs.items():
        ia, ib = a.tensors[ka], b.tensors[kb]
        if ia.shape != ib.shape:
            shape_mm.append((ka, ia.shape, ib.shape))
            _progress(progress, ka, ia.nbytes + ib.nbytes)
            continue
        if ia.dtype != ib.dtype:
            dtype_mm.append((ka, ia.dtype, ib.dtype))
        ta, tb = a.get(ka), b.get(kb)

        def done(start: int, stop: int, ta: Any = ta, tb: Any = tb, ka: str = ka, kb: str = kb) -> None:
            a.release(ka, ta.reshape(-1)[start:stop])
            b.release(kb, tb.reshape(-1)[start:stop])

        cmp = compare_tensors(ta, tb, rtol, atol, done)
        del ta, tb
        if cmp.nonfinite_a or cmp.nonfinite_b:
            nonfinite[ka] = (cmp.nonfinite_a, cmp.nonfinite_b)
        if cmp.bitwise_equal:
            unchanged.append(ka)
        elif cmp.close:
            close.append(ka)
        else:
            changed.append({"key": ka, "max_abs_diff": cmp.max_abs_diff, "rel_change": cmp.rel_change})
        _progress(progress, ka, ia.nbytes + ib.nbytes)
    for side, keys, ckpt in (("a", only_a, a), ("b", only_b, b)):
        for k in keys:
            t = ckpt.get(k)
            n = _nonfinite(t.reshape(-1))
            ckpt.release(k, t)
            if n:
                nonfinite[f"{side}:{k}"] = (n, 0) if side == "a" else (0, n)
            _progress(progress, k, ckpt.tensors[k].nbytes)
    report = DiffReport(
        a, b, None if map_mode == "none" else mapping, only_a, only_b, shape_mm, dtype_mm, changed, close, unchanged,
        nonfinite, [], rtol, atol,
    )
    report.findings = diff_findings(report)
    return report


def _progress(cb: Callable[[str, int], None] | None, key: str, nbytes: int) -> None:
    if cb is not None:
        cb(key, nbytes)


def diff_findings(r: DiffReport) -> list[Finding]:
    """C001-C006 from a DiffReport: missing keys per prefix, shape/dtype changes, unchanged groups, NaN/Inf, size."""
    out: list[Finding] = []
    for side, other, keys, ckpt in (("A", "B", r.only_in_a, r.a), ("B", "A", r.only_in_b, r.b)):
        for prefix, ks in _by_prefix(keys).items():
            infos = [ckpt.tensors[k] for k in ks]
            params = sum(i.numel for i in infos if not is_buffer_name(i.key))
            buffers = sum(i.numel for i in infos if is_buffer_name(i.key))
            nbytes = sum(i.nbytes for i in infos)
            extra = f" plus {buffers:,} buffer values (BatchNorm statistics)" if buffers else ""
            out.append(RULES["C001"].finding(f"{prefix}.*" if prefix != "(top level)" else prefix,
                f"{len(ks)} tensors in {side} are missing from {other}: {params:,} parameters{extra}, {nbytes:,} bytes "
                f"(e.g. {ks[0]})",
                params=params,
            ))
    for key, sa, sb in r.shape_mismatch:
        out.append(RULES["C002"].finding(key, values={"a": list(sa), "b": list(sb)}))
    for key, da, db in r.dtype_mismatch:
        out.append(RULES["C003"].finding(key, values={"a": da, "b": db}))
    if r.changed:  # an unchanged group matters only when something else did change
        changed_prefixes = {prefix_of(c["key"]) for c in r.changed if not is_buffer_name(c["key"])}
        unchanged_set = set(r.unchanged) | set(r.close)
        by_prefix = _by_prefix([k for k in r.compared_keys() if not is_buffer_name(k)])
        for prefix, ks in by_prefix.items():
            if prefix in changed_prefixes or not all(k in unchanged_set for k in ks):
                continue
            params = sum(r.a.tensors[k].numel for k in ks)
            out.append(RULES["C004"].finding(f"{prefix}.*" if prefix != "(top level)" else prefix,
                f"{len(ks)} parameter tensors, {params:,} parameters unchanged between A and B while other parts changed "
                "(frozen by mistake, or missing from the optimizer?)",
                params=params,
            ))
    for key, (na, nb) in r.nonfinite.items():
        where = " and ".join(f"{n:,} in {s}" for n, s in ((na, "A"), (nb, "B")) if n)
        out.append(RULES["C005"].finding(key, values={"where": where}))
    for name, c in (("A", r.a), ("B", r.b)):
        overhead = 64 * 1024 + 512 * len(c.tensors)
        if c.object_tensor_bytes and c.file_bytes > 1.25 * c.object_tensor_bytes + overhead:
            out.append(RULES["C006"].finding(str(c.path),
                f"{name} is {c.file_bytes:,} bytes on disk but its tensors hold {c.object_tensor_bytes:,} bytes: "
                "torch.save wrote whole storages behind views (save t.clone() or .contiguous() copies)",
            ))
    return out


def _by_prefix(keys: list[str]) -> dict[str, list[str]]:
    return group_by_prefix(keys, str, 1, TOP_LEVEL)


# --- writing B under A's names -------------------------------------------------------------------------


def write_mapped(b: CheckpointFile, mapping: KeyMapping, out: str | Path) -> int:
    """Write B's tensors under A's names to ``out`` (.safetensors or torch.save), atomically. Returns the count."""
    import torch

    state = OrderedDict((ka, b.get(kb).clone().contiguous()) for ka, kb in mapping.pairs.items())
    if Path(out).suffix == ".safetensors":
        from safetensors.torch import save

        atomic_write(out, lambda f: f.write(save(dict(state))))
    else:
        atomic_write(out, lambda f: torch.save(state, f))
    return len(state)
