"""The torch-free base every package builds on: findings and the rule registry, errors, targets, atomic writes,
and the ``Report`` protocol. Importing ``ssdaudit.core`` fills the rule registry (``core.rules``)."""

import ssdaudit.core.rules  # noqa: F401  (fills RULES)
