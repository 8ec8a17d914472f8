"""The rule catalogue, one module per family: every rule's stable code, name, default severity, why it matters, the
fix and examples. Importing ``ssdaudit.core`` imports this package, which registers every entry in
``core.findings.RULES``. The docs pages (docs/rules/CODE.md), ``ssdaudit rules``, SARIF rule metadata and the
README table are generated from the registry. A new family is a new module here, imported below.
"""

import ssdaudit.core.rules.registration  # noqa: F401  (R: the runtime and static registration rules)
import ssdaudit.core.rules.gradflow  # noqa: F401  (G)
import ssdaudit.core.rules.checkpoints  # noqa: F401  (C)
import ssdaudit.core.rules.notes  # noqa: F401  (N)
import ssdaudit.core.rules.source  # noqa: F401  (E)
import ssdaudit.core.rules.training  # noqa: F401  (T)
import ssdaudit.core.rules.nonfinite  # noqa: F401  (F: where the first NaN/Inf came from)
import ssdaudit.core.rules.loop  # noqa: F401  (L: training loops, static)
import ssdaudit.core.rules.gate  # noqa: F401  (K: the CI gate's own results)
import ssdaudit.core.rules.resume  # noqa: F401  (S: resuming from checkpoints)
