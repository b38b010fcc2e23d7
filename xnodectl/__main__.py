"""`python -m xnodectl` = the xnodectl command."""

from xnodectl.cli import main

main()
