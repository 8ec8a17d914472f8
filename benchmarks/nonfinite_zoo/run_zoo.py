"""Run ssdaudit watch (20 steps) on each script here: sNN the buggy one and its --fixed twin, cNN clean scripts with
deliberate non-finite values; prints the findings. Run: python benchmarks/nonfinite_zoo/run_zoo.py ["s*.py"]"""
import io, json, sys, contextlib, glob, os
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from ssdaudit.training.doctor.runner import run_watched
os.chdir(os.path.dirname(os.path.abspath(__file__)))
rows = []
for path in sorted(glob.glob(sys.argv[1] if len(sys.argv) > 1 else "s*.py")):
    for fixed in ((False, True) if path.startswith("s") else (False,)):
        cmd = ["python", path] + (["--fixed"] if fixed else [])
        try:
            rep = run_watched(cmd, steps=20, script_stdout=io.StringIO())
            fs = [(f.rule, f.severity.value, f.path, str(f.location), f.message[:230]) for f in rep.findings]
        except Exception as exc:
            fs = [("EXC", "", "", repr(exc)[:200])]
        print(path, "fixed" if fixed else "bug", flush=True)
        for f in fs:
            print("   ", *f, flush=True)
