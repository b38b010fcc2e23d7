"""The deploy engine, one module per stage in pipeline order (docs/deploy.md):

prepare (inventory, selection, rendering, secrets: once) -> build -> preflight -> stage (copy,
secrets, manifest) -> activate -> health -> confirm, with rollback wherever a stage fails.
node runs one node through the stages; fleet runs nodes in waves; run is `xnodectl deploy` from
start to report; events are what they emit. plan, status and nixops4 reuse prepare; agent speaks
the node agent's protocol (docs/deploy-protocol.md).

Layering: cli/deploy.py -> deploy.run / plan / status -> deploy.<stage> -> agent / nix / remote
-> process.
"""
