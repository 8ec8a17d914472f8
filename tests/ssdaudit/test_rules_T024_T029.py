"""The training doctor on distributed runs (T017, T024-T029): torchrun on gloo, 2 and 4 ranks, each bug class next to
its clean twin (tests/data/ddp_doctor_worker.py), the doctor on one rank only, a rank that raises mid-run, and the
``torchrun -m ssdaudit watch`` command line. The doctor never issues a collective: cross-rank evidence goes through
the job's key-value store (``ssdaudit.training.doctor.ranks``), unit-tested here on an in-process store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import run_torchrun

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(ROOT / "tests/data/ddp_doctor_worker.py")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")

# case of ddp_doctor_worker.py -> the warning/error rules rank 0 reports
EXPECTED = {
    "ddp_clean": [],
    "ddp_bypass_opt_from_wrapper": ["T024"],
    "ddp_bypass_opt_from_module": ["T024"],
    "ddp_clean_opt_from_module": [],
    "ddp_replaced_after_wrapping": ["T025"],
    "ddp_replaced_before_wrapping": [],
    "ddp_moved_after_wrapping": ["T025"],
    "ddp_moved_before_wrapping": [],
    "ddp_recreated_after_wrapping": ["T025"],
    "ddp_wrapped_and_an_eval_copy": [],
    "manual_unsynced_init": ["T026"],
    "manual_synced_init": [],
    "ddp_rank_dependent_lr": ["T017"],
    "no_distributed_sampler": ["T027"],
    "distributed_sampler_set_epoch": [],
    "distributed_sampler_no_set_epoch": ["T028"],
    "no_sync_every_micro_batch": ["T029"],
    "no_sync_but_the_last": [],
    "fsdp2_no_distributed_sampler": ["T027"],
    "fsdp2_distributed_sampler": [],
}
FOUR_RANKS = ["ddp_clean", "ddp_bypass_opt_from_module", "manual_unsynced_init", "manual_synced_init",
              "no_distributed_sampler", "distributed_sampler_set_epoch"]


def _run(tmp: Path, nproc: int, cases: list[str]) -> dict[str, list[str]]:
    proc = run_torchrun([WORKER, str(tmp), *cases], tmp, 300, nproc=nproc)
    assert proc.returncode == 0 and (tmp / "doctor.json").exists(), proc.stderr[-3000:]
    found: dict[str, list[str]] = json.loads((tmp / "doctor.json").read_text())
    return found


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, list[str]]:
    return _run(tmp_path_factory.mktemp("ddp2"), 2, [])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_two_ranks_each_class_and_its_clean_twin(two_ranks, case):
    assert two_ranks[case] == EXPECTED[case]


def test_four_ranks(tmp_path):
    found = _run(tmp_path, 4, FOUR_RANKS)
    assert found == {case: EXPECTED[case] for case in FOUR_RANKS}


# --- the doctor on one rank only ---------------------------------------------------------------------------------


@pytest.mark.parametrize("watched, mode, rules", [(0, "bypass", ["T024"]), (1, "bypass", ["T024"]), (0, "clean", []),
                                                  (0, "fsdp2", [])])
def test_doctor_on_one_rank_only_names_a_bypass_and_blocks_nobody(tmp_path, watched, mode, rules):
    """The program's own all_reduce runs every step on every rank: a collective of the doctor on one rank would meet
    it on the other and abort the job (with FSDP2, the checks read this rank's shards: a DTensor reduction would be
    a collective). The watched rank names the bypass from its own forwards; rank 0 notes the
    ranks that sent no evidence instead of waiting for them."""
    start = time.monotonic()
    proc = run_torchrun([str(ROOT / "tests/data/ddp_doctor_one_rank.py"), str(tmp_path), str(watched), mode], tmp_path, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "done_0").exists() and (tmp_path / "done_1").exists()
    result = json.loads((tmp_path / "one_rank.json").read_text())
    assert result["rules"] == rules
    if watched == 0:
        assert any("rank(s) [1] of 2 posted no evidence" in n for n in result["notes"])
    else:
        assert result["notes"] == []  # rank 1 does not merge: it only posts
    assert time.monotonic() - start < 240


# --- a rank that raises mid-run ----------------------------------------------------------------------------------


def test_a_rank_that_raises_ends_the_others_by_the_programs_own_handling(tmp_path):
    """Under ``torchrun -m ssdaudit watch``: rank 1 raises at its third step; rank 0's next collective fails (the peer
    is gone) and its own except clause records it, well before the 60 s timeout of the process group: nothing of the
    doctor waits."""
    start = time.monotonic()
    proc = run_torchrun(["-m", "ssdaudit", "watch", "--format", "json", "--",
                         "python", str(ROOT / "tests/data/ddp_doctor_raises.py"), str(tmp_path)], tmp_path, 300)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "the script raised RuntimeError: rank 1 failed mid-run" in proc.stdout + proc.stderr
    error = (tmp_path / "rank0_error").read_text()
    assert "RuntimeError" in error and "ssdaudit" not in error
    assert elapsed < 55, elapsed  # less than the process group's timeout: no one waited for a lost rank


# --- the command line: torchrun --nproc_per_node N -m ssdaudit watch -- python train.py ---------------------------


TRAIN = """
import sys
import torch, torch.distributed as dist, torch.nn as nn, torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
ddp = DDP(model)
g = torch.Generator().manual_seed(3)
ds = TensorDataset(torch.randn(256, 4, generator=g), torch.randn(256, generator=g))
sampler = DistributedSampler(ds)
loader = DataLoader(ds, batch_size=8, sampler=sampler)
for epoch in range(3):
    sampler.set_epoch(epoch)
    for i, (x, y) in enumerate(loader):
        opt.zero_grad()
        out = model(x) if "--bypass" in sys.argv and i % 4 == 3 else ddp(x)
        F.mse_loss(out.squeeze(1), y).backward()
        opt.step()
dist.destroy_process_group()
"""


@pytest.mark.parametrize("bypass", [False, True])
def test_torchrun_module_command(tmp_path, bypass):
    (tmp_path / "train.py").write_text(TRAIN)
    args = ["-m", "ssdaudit", "watch", "--format", "json", "--", "python", "train.py", *(["--bypass"] if bypass else [])]
    proc = run_torchrun(args, tmp_path, 300)
    assert proc.returncode == (1 if bypass else 0), proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # rank 0 only prints the report
    assert report["steps"] == 20
    rules = [f["rule"] for f in report["findings"] if f["severity"] != "info"]
    assert rules == (["T024"] if bypass else [])
    if bypass:
        assert report["findings"][0]["step"] == 4 and report["findings"][0]["location"].startswith("train.py:")


# --- the key-value store board, in one process -------------------------------------------------------------------


def test_board_collects_what_is_posted_and_never_waits_twice_for_a_silent_rank():
    from torch.distributed import HashStore

    from ssdaudit.training.doctor.ranks import RankBoard

    store = HashStore()
    r0, r1, r2 = RankBoard(store, 0, 3), RankBoard(store, 1, 3), RankBoard(store, 2, 3)
    r0.post("step1", {"v": 0})
    r1.post("step1", {"v": 1})  # rank 2 never posts: no doctor there
    start = time.monotonic()
    assert r0.collect("step1", wait_s=0.3) == {0: {"v": 0}, 1: {"v": 1}}
    assert 0.25 < time.monotonic() - start < 2.0
    assert r0.silent == {2}
    r0.post("step2", [0])
    r1.post("step2", [1])
    start = time.monotonic()
    assert r0.collect("step2", wait_s=5.0) == {0: [0], 1: [1]}  # rank 2 is silent: not waited for again
    assert time.monotonic() - start < 2.0
    r2.post("step3", [2])
    assert r0.collect("step3", wait_s=0.0) == {2: [2]}  # what a late rank posts is still read


def test_board_closes_on_a_store_error_and_never_raises():
    from ssdaudit.training.doctor.ranks import RankBoard

    class Gone:
        def set(self, *_):
            raise RuntimeError("Connection reset by peer")

        def check(self, *_):
            raise RuntimeError("Connection reset by peer")

    board = RankBoard(Gone(), 0, 2)
    board.post("step1", {"v": 0})
    assert board.closed and "Connection reset" in board.error
    assert board.collect("step1") == {}


def test_single_process_run_opens_no_board_and_finds_nothing_distributed():
    from torch import nn

    from ssdaudit.training.doctor import watch
    from ssdaudit.training.doctor.checks.replicas import CrossRankEvidence

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
    cross = [c for c in w.checks if isinstance(c, CrossRankEvidence)]
    assert cross and cross[0].opened and cross[0].board is None and w.ctx.parallel is None
    assert not {f.rule for f in w.findings()} & {"T017", "T024", "T025", "T026", "T027", "T028", "T029"}


def test_script_that_trains_in_plain_multiprocessing_workers_gets_the_torchrun_hint(tmp_path):
    """Processes of ``multiprocessing.Process`` are not entered (those of torch.multiprocessing.spawn are, below): the
    refusal says so and names the torchrun form (exit 2), instead of 'built no optimizer' alone."""
    from typer.testing import CliRunner

    from ssdaudit.cli import app

    script = tmp_path / "spawner.py"
    script.write_text("import multiprocessing as mp\n\ndef work():\n    pass\n\nif __name__ == '__main__':\n"
                      "    p = mp.get_context('fork').Process(target=work)\n    p.start()\n    p.join()\n")
    out = CliRunner().invoke(app, ["watch", "--", "python", str(script)])
    assert out.exit_code == 2
    assert "started 1 other process(es)" in out.output and "torchrun --nproc_per_node N -m ssdaudit watch" in out.output


# --- workers of torch.multiprocessing.spawn / start_processes under `ssdaudit watch -- python script.py` -----------

SPAWNER = str(ROOT / "tests/data/ddp_doctor_spawn.py")


def _watch_spawner(tmp: Path, case: str, method: str, *options: str):
    import os
    import subprocess
    import sys

    from conftest import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ssdaudit", "watch", "--format", "json", *options, "--", "python",
                           SPAWNER, str(free_port()), case, method],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp)


@pytest.mark.parametrize("case, method, rules", [
    ("clean", "spawn", []),
    ("no_set_epoch", "spawn", ["T028"]),
    ("clean", "fork", []),
    ("bypass", "fork", ["T024"]),
    ("alone_never_cleared", "fork", ["T001"]),
])
def test_spawned_workers_are_watched_like_torchrun_ranks(tmp_path, case, method, rules):
    """``mp.spawn(main, args=(world_size, ...), nprocs=N)`` with the process group made inside ``main`` (pytorch/
    examples' DDP tutorial): each worker is watched as a torchrun rank is, rank 0 merges the ranks' evidence through
    the group's store, and the parent prints the one report and sets the exit code. Workers without a process group
    each report (one finding named once). The workers' prints go to stderr: stdout holds only the JSON report."""
    proc = _watch_spawner(tmp_path, case, method)
    assert proc.returncode == (1 if "T024" in rules or "T001" in rules else 0), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [f["rule"] for f in report["findings"] if f["severity"] != "info"] == rules
    assert report["steps"] == (4 if case.startswith("alone") else 6)
    assert not report["internal_errors"] and not report["notes"], report
    assert "worker 0 starts" in proc.stderr and "worker 1 starts" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing left behind (the workers' reports live in a temp folder, removed)


def test_spawned_workers_stop_after_the_watched_steps(tmp_path):
    proc = _watch_spawner(tmp_path, "bypass", "fork", "--steps", "3")
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["steps"] == 3 and [f["rule"] for f in report["findings"]] == ["T024"]


def test_a_spawned_worker_that_raises_fails_the_run_as_unwatched(tmp_path):
    """Rank 1 raises at its third step: torch.multiprocessing.spawn stops the others and raises in the parent, as
    without the doctor; the runner reports the script's failure (exit 2) naming the worker's error."""
    proc = _watch_spawner(tmp_path, "raises", "spawn")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "ProcessRaisedException: process 1 raised RuntimeError: rank 1 failed mid-run" in error["message"], error
    assert "rank 1 failed mid-run" in proc.stderr  # the worker's own traceback, as torch prints it


def test_watched_worker_keeps_the_functions_return_and_exceptions_and_leaves_no_patch(tmp_path):
    """In the worker: ``fn``'s value comes back, its exception passes through unchanged (after the report is
    written), and the runner's patches go with the watch. The wrapper pickles (the spawn start method)."""
    import pickle
    import sys

    import torch.multiprocessing  # noqa: F401

    from ssdaudit.core import patches
    from ssdaudit.training.doctor.runner import Runner, StopScript
    from ssdaudit.training.doctor.spawned import WatchedWorker, WorkerPlan, worker_reports

    spawn_module = sys.modules["torch.multiprocessing.spawn"]
    before = patches.active()
    plan = WorkerPlan(steps=20, every=1, ignore=(), folder=str(tmp_path), runner=Runner, stop=StopScript)
    assert WatchedWorker(_train_returns, plan)(0, 5) == 5
    with pytest.raises(ValueError, match="the user's own error"):
        WatchedWorker(_train_raises, plan)(1)
    assert patches.active() == before and not patches.is_patched(spawn_module, "start_processes")
    reports = worker_reports(str(tmp_path))
    assert [(w.index, w.rank, w.world, w.report.steps) for w in reports] == [(0, 0, 1, 3), (1, 0, 1, 1)]
    again = pickle.loads(pickle.dumps(WatchedWorker(_train_returns, plan)))
    assert again.fn is _train_returns and again.plan == plan


def _train_returns(index: int, value: int) -> int:
    from torch import nn

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    return value


def _train_raises(index: int) -> None:
    from torch import nn

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    raise ValueError("the user's own error")
