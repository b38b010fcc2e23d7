"""Signature checks shared by the operator side and the programs that run on a node.

Nothing here imports operator code (keystores, the CLI, SSH, deploys): `xnodectl.nodeside`
imports this package, never `xnodectl.wallet`. eth_account and siwe are imported inside
functions, so importing these modules costs nothing until a signature is checked.
"""
