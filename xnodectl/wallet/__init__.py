"""Wallet identity: the operator's keystore, SIWE (EIP-4361) messages, signed deploy manifests.

eth_account and siwe are heavy (siwe pulls in web3): modules here import them inside functions,
so importing `xnodectl.wallet` costs nothing until a signature is made or checked.
"""
