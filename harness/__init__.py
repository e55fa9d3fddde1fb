"""QEMU snapshot-identity series harness: import, apply, build, export, report.

Everything in this package runs on the system python3 with the standard
library only, so ``build.py`` can bootstrap the project venv itself.
"""
