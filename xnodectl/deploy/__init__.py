"""The deploy engine: plan, build, copy, two-phase activation, health gate, rollback, fleet waves.

Layering: cli/deploy.py -> deploy.fleet -> deploy.pipeline
  -> deploy.helper / nix / remote -> process.
"""
