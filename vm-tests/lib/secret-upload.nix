# Shared by VM tests: stands in for the deploy engine's secret upload (done before activation).
# `xnodeTest.secrets.<app>.<param>` files are written at boot with fresh random values (or by a
# custom `script`), root-only or owned by the app's user, before the units that read them start,
# so no secret value exists anywhere in the Nix store. Tests read the values back from the files.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.xnodeTest;
  secretType = types.submodule {
    options = {
      owner = mkOption { type = types.str; default = "root"; description = "File owner."; };
      script = mkOption {
        type = types.nullOr types.lines;
        default = null;
        description = "Shell that prints the value (default: 24 random bytes, base64, no symbols).";
      };
    };
  };
  write = app: param: secret: ''
    mkdir -p /var/lib/xnode/secrets/${app}
    f=/var/lib/xnode/secrets/${app}/${param}
    ( ${if secret.script == null then "head -c 24 /dev/urandom | base64 | tr -d '/+=\\n'" else secret.script} ) > "$f"
    chown ${secret.owner} "$f"
    chmod 0400 "$f"
  '';
in
{
  options.xnodeTest = {
    secrets = mkOption {
      type = types.attrsOf (types.attrsOf secretType);
      default = { };
      description = "Secret files to write: app -> parameter -> how.";
    };
    secretsBefore = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Units that read the secrets and must start after them.";
    };
    secretsPath = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Tools the value scripts need.";
    };
  };

  config = lib.mkIf (cfg.secrets != { }) {
    # nixpkgs nixos/lib/systemd-unit-options.nix (before, requiredBy, after, serviceConfig, path, script)
    systemd.services.xnode-test-secrets = {
      before = cfg.secretsBefore;
      requiredBy = cfg.secretsBefore;
      after = [ "systemd-tmpfiles-setup.service" ];
      serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
      path = [ pkgs.coreutils ] ++ cfg.secretsPath;
      script = ''
        set -eu
        umask 077
      '' + lib.concatStrings (lib.concatLists (lib.mapAttrsToList
        (app: params: lib.mapAttrsToList (write app) params)
        cfg.secrets));
    };
  };
}
