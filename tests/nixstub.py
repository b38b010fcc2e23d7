"""The one stand-in for nixpkgs in xnodectl's tests (this machine's Nix 2.8 cannot evaluate
nixpkgs): Nix expressions to splice into test sources. All of them live in tests/nixlib/ and
follow the real lib's semantics for everything they offer (see tests/nixlib/lib.nix).

- STUB_LIB: nixpkgs `lib` (properties stay markers, real priorities, real shell quoting, types
  that carry their shape for the option check);
- STUB_PKGS: packages as derivation-shaped sets (never built), writers, `testers.runNixOSTest`;
- RESOLVE: one module's `config` with its properties discharged as the module system does;
- EVAL_MODULES: the stand-in module system (evalModules) the option check uses.
"""

from pathlib import Path

NIXLIB = Path(__file__).resolve().parent / "nixlib"
STUB_LIB = f"(import {NIXLIB / 'lib.nix'})"
STUB_PKGS = f"(import {NIXLIB / 'pkgs.nix'} {{ }})"
RESOLVE = f"(import {NIXLIB / 'resolve.nix'})"
EVAL_MODULES = f"(import {NIXLIB / 'eval.nix'} {{ }})"
