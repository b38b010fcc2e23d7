"""Programs that run ON an Xnode (claim service, wallet sign-in gate, manifest verifier).

They start fast and small: stdlib plus eth_account; siwe (which imports web3) is loaded only
when the first sign-in message is checked.
"""
