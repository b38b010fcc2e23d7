"""`python -m xnodectl` = the xnodectl command."""

from xnodectl.cli import run

run()
