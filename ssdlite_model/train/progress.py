"""What a person sees while training runs: rich progress bars on a terminal, one line per epoch otherwise."""

from __future__ import annotations

from typing import Any


class _ProgressView:
    """Rich progress bars on a terminal (loss parts, lr, images/s, ETA); one line per epoch otherwise."""

    def __init__(self, enabled: bool, steps_per_epoch: int) -> None:
        import sys

        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self.steps = steps_per_epoch
        self.progress: Any = None  # rich.progress.Progress on a terminal
        self.task: Any = None

    def __enter__(self) -> "_ProgressView":
        if self.live:
            from ssdaudit.cli import new_progress

            self.progress = new_progress(info=True, transient=False)  # the epochs' bars stay, as a log
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=self.steps, info="")

    def advance(self, out: dict[str, float], rate: float, extra: str) -> None:
        if self.progress is not None:
            info = (f"loss {out['loss']:.3f} (loc {out['loc']:.3f} conf {out['conf']:.3f}) lr {out['lr']:.2e} "
                    f"{rate:.1f} img/s {extra}")
            self.progress.update(self.task, advance=1, info=info)

    def note(self, text: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, info=text)

    def end_epoch(self, record: dict[str, Any], extra: str = "") -> None:
        if not self.enabled:
            return
        line = (f"epoch {record['epoch']}: loss {record['loss']:.3f} (loc {record['loc']:.3f}, conf {record['conf']:.3f}), "
                f"lr {record['lr']:.2e}, {record['images_per_s']:.1f} img/s")
        if "map50" in record:
            line += f", mAP@0.5 {record['map50']:.3f} (VOC07 11-pt {record['map50_11pt']:.3f}), COCO mAP {record['coco_map']:.3f}"
        if extra:
            line += f"; {extra}"
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            import sys

            print(line, file=sys.stderr, flush=True)


