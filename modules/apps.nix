# xnode.apps: what each rendered app module declares about itself. The deploy engine reads the same
# facts from its own render; on the node they are published as /etc/xnode/apps.json so node-side
# tools (activation helper, monitoring) see which health probes and secret files belong to which app.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  probe = types.submodule {
    options = {
      kind = mkOption { type = types.enum [ "systemd" "tcp" "http" ]; description = "Probe kind."; };
      target = mkOption { type = types.str; description = "Unit name, TCP port or URL."; };
      status = mkOption { type = types.int; default = 200; description = "Expected HTTP status."; };
      timeout = mkOption { type = types.int; default = 60; description = "Seconds to wait for success."; };
    };
  };
  secret = types.submodule {
    options = {
      name = mkOption { type = types.str; description = "Parameter name."; };
      path = mkOption { type = types.str; description = "Root-only file on the node, outside the Nix store."; };
      owner = mkOption { type = types.str; default = "root"; description = "File owner."; };
      group = mkOption { type = types.str; default = "root"; description = "File group."; };
    };
  };
  port = types.submodule {
    options = {
      port = mkOption { type = types.port; description = "Port number."; };
      protocol = mkOption { type = types.enum [ "tcp" "udp" ]; description = "Protocol."; };
      public = mkOption { type = types.bool; default = false; description = "Opened in the firewall."; };
      purpose = mkOption { type = types.str; default = ""; description = "What listens there."; };
      metrics = mkOption { type = types.bool; default = false; description = "Serves Prometheus metrics (scraped by the monitoring template)."; };
      metricsPath = mkOption { type = types.nullOr types.str; default = null; description = "HTTP path of the metrics (default /metrics)."; };
    };
  };
  # The units a changed secret restarts: the app's own choice, else the systemd units its health
  # probes watch.
  unitsOf = app:
    if app.restartOnSecretChange != null then app.restartOnSecretChange
    else map (probe: probe.target) (builtins.filter (probe: probe.kind == "systemd") app.health);
  withRotation = lib.filterAttrs (_: app: app.secrets != [ ] && unitsOf app != [ ]) config.xnode.apps;
in
{
  options.xnode.apps = mkOption {
    default = { };
    description = "Apps rendered by xnodectl onto this node, keyed by app name.";
    type = types.attrsOf (types.submodule {
      options = {
        template = mkOption { type = types.str; description = "Template the app was rendered from."; };
        health = mkOption { type = types.listOf probe; default = [ ]; description = "Health probes."; };
        secrets = mkOption { type = types.listOf secret; default = [ ]; description = "Secret files."; };
        ports = mkOption { type = types.listOf port; default = [ ]; description = "Ports the app uses."; };
        restartOnSecretChange = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
          example = [ "postgres-password.service" ];
          description = ''
            Units restarted (systemctl try-restart, in this order) when one of the app's secret
            files changes. Null: the units its systemd health probes watch. An app whose server
            need not restart for a new secret names only the unit that applies the secret.
          '';
        };
      };
    });
  };

  config = {
    # A changed secret file (the deploy engine uploads a rotated value before activation) restarts
    # the app's units, so the new value is used at once; their unit files did not change, so
    # switch-to-configuration alone would keep the old value until the next restart.
    # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.paths, systemd.services) and
    # nixos/lib/systemd-unit-options.nix (pathConfig, wantedBy, serviceConfig, script).
    systemd.paths = lib.mapAttrs'
      (name: app: lib.nameValuePair "xnode-secrets-${name}" {
        wantedBy = [ "multi-user.target" ];
        pathConfig.PathChanged = map (secret: secret.path) app.secrets;
      })
      withRotation;
    systemd.services = lib.mapAttrs'
      (name: app: lib.nameValuePair "xnode-secrets-${name}" {
        description = "Restart ${name} after its secret files changed";
        serviceConfig.Type = "oneshot";
        script = "systemctl try-restart " + lib.escapeShellArgs (unitsOf app);
      })
      withRotation;

    # nixpkgs nixos/modules/system/etc/etc.nix (environment.etc.<name>.text)
    environment.etc."xnode/apps.json".text = builtins.toJSON config.xnode.apps;

    # Secret files (mode 0400, owned by the user that reads them) are uploaded by the deploy engine
    # before activation. Directories are traversable but not listable (0711).
    # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
    systemd.tmpfiles.rules = [ "d /var/lib/xnode/secrets 0711 root root -" ]
      ++ lib.concatMap
        (name: [ "d /var/lib/xnode/secrets/${name} 0711 root root -" ])
        (builtins.attrNames (lib.filterAttrs (_: app: app.secrets != [ ]) config.xnode.apps));
  };
}
