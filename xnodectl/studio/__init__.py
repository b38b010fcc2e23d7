"""Xnode Studio: the operator's workspace in a browser (`xnodectl studio`).

Routes call the same services as the CLI through one adapter (`services.py`); the studio holds no
rule of its own. Imported only by the `studio` command, so other commands never pay for it.
"""
