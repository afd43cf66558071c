"""Sweep definitions (``tuners(opts)`` per file), shipped with the package so that
``iif-ray sweep NAME`` finds them from any directory, also from an installed wheel."""
