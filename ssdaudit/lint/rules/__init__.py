"""One module per lint rule, named ``<code>_<name>.py`` after its registry entry (``ssdaudit.core.rules``).

A module defines ``check(ctx)``, which yields ``Hit``s for one file, and, when the rule has an automatic fix,
``fix(ctx, hit)``, which returns a ``Fix`` (or None where it cannot be sure). ``ssdaudit.lint.registry`` finds the
modules; nothing else lists them.
"""
