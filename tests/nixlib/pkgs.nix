# A stand-in for the nixpkgs package set, for evaluating modules and VM test files without
# nixpkgs. Packages are derivation-shaped attribute sets (`type = "derivation"`, an outPath with
# their name, meta.mainProgram); they are never built. Only the names below exist: a module that
# needs another package fails with a missing attribute, not with a silent fake.
{ lib ? import ./lib.nix }:
let
  b = builtins;
  standInPackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/${b.substring 0 32 (b.hashString "sha256" name)}-${name}";
    meta.mainProgram = name;
    drvPath = "/nix/store/${b.substring 0 32 (b.hashString "sha1" name)}-${name}.drv";
    # A package's own passthru the modules read.
    withPackages = f: standInPackage "${name}-env";
  };
  names = [
    "coreutils" "findutils" "gnugrep" "gnutar" "gawk" "jq" "curl" "openssl" "openssh" "iproute2"
    "netcat" "nmap" "socat" "sqlite" "procps" "util-linux" "git" "nix" "python3" "dosfstools"
    "e2fsprogs" "systemd" "nixos-install" "parted" "ollama" "ollama-cpu" "ollama-cuda"
    "ollama-rocm" "ollama-vulkan" "lighthouse" "prometheus-node-exporter" "postgresql_14"
    "postgresql_15" "postgresql_16" "postgresql_17" "postgresql_18" "kubo" "grafana" "geth"
    "bitcoind" "vaultwarden" "nginx" "nixfmt" "ruff" "mypy" "bash" "gnused" "xxd" "file"
  ];
  writer = kind: name: _: standInPackage "${kind}-${name}";
in
b.listToAttrs (map (n: { name = n; value = standInPackage n; }) names) // {
  inherit lib standInPackage;
  path = ./nixpkgs;
  stdenv.hostPlatform.system = "x86_64-linux";
  hostPlatform.system = "x86_64-linux";
  writeText = writer "text";
  writeTextDir = writer "textdir";
  writeScript = writer "script";
  writeShellScript = writer "shell-script";
  writeShellApplication = a: standInPackage a.name;
  runCommand = name: _: _: standInPackage name;
  symlinkJoin = a: standInPackage a.name;
  fetchzip = a: standInPackage "fetchzip" // { args = a; };
  fetchgit = a: standInPackage "fetchgit" // { args = a; };
  # The NixOS test framework: the test's arguments, returned for the option check to read.
  testers.runNixOSTest = test: { _standInNixOSTest = true; inherit test; };
}
