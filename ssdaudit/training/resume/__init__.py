"""``ssdaudit resume``: did a resumed run continue exactly? A run and the same run resumed from its own checkpoint,
compared step by step from per-step fingerprints; the first differing step and its cause (rules S001-S007).

Modules: ``fingerprint`` (what a step's fingerprint holds, digests), ``patches`` (torch.save, DCP save, backward,
GradScaler.scale and DataLoader iteration observed while a run is active), ``recorder`` (the watch runner with
fingerprints and the checkpoint copy), ``child`` (the resumed run's process), ``diagnose`` (the comparison),
``report`` (``ResumeReport``), ``audit`` (``audit_resume``, the pipeline).
"""

from __future__ import annotations
