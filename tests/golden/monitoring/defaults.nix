# Rendered by xnodectl 0.1.0 from template 'monitoring' as app 'monitoring'.
# Do not edit: change the parameters and render again.
# parameters: retention="15d", scrape_interval="30s", extra_targets=[ ], prometheus_port=9090, node_exporter_port=9100, grafana_port=3000, expose=false, wallet_gate=false
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        promPort = 9090;
        # Metrics ports the node's other apps declare (`metrics = true` in their templates). Read from
        # xnode.apps at evaluation time, so deploying another app later gets it scraped without
        # rendering this one again. The path: the port's `metricsPath` where the apps module declares
        # one, else the templates' convention of naming it in the purpose ("... metrics at /path ..."),
        # else /metrics.
        otherApps = lib.filterAttrs (name: _: name != "monitoring") config.xnode.apps;
        metricsPath = p:
          let named = builtins.match ".*[Mm]etrics at (/[^ );,]*).*" p.purpose;
          in p.metricsPath or (if named == null then "/metrics" else builtins.head named);
        appJobs = lib.concatLists (lib.mapAttrsToList
          (name: app: map
            (p: {
              job_name = "${name}-${toString p.port}";
              metrics_path = metricsPath p;
              static_configs = [{
                targets = [ "127.0.0.1:${toString p.port}" ];
                labels = { xnode_app = name; };
              }];
            })
            (lib.filter (p: p.metrics && p.protocol == "tcp") app.ports))
          otherApps);
        extraTargets = [ ];
      in
      {
        # nixpkgs nixos/modules/services/monitoring/prometheus/default.nix (enable, listenAddress, port,
        # retentionTime, globalConfig, scrapeConfigs). The default listenAddress is 0.0.0.0: keep it local.
        services.prometheus = {
          enable = true;
          listenAddress = "127.0.0.1";
          port = promPort;
          retentionTime = "15d";
          globalConfig.scrape_interval = "30s";
          scrapeConfigs = [
            {
              job_name = "prometheus";
              static_configs = [{ targets = [ "127.0.0.1:${toString promPort}" ]; }];
            }
            {
              job_name = "node";
              static_configs = [{ targets = [ "127.0.0.1:${toString 9100}" ]; }];
            }
          ] ++ appJobs ++ lib.optional (extraTargets != [ ]) {
            job_name = "extra";
            static_configs = [{ targets = extraTargets; }];
          };
          # nixpkgs nixos/modules/services/monitoring/prometheus/exporters.nix (exporters.<name>.enable,
          # port, listenAddress; default 0.0.0.0) and exporters/node.nix (enabledCollectors)
          exporters.node = {
            enable = true;
            listenAddress = "127.0.0.1";
            port = 9100;
            enabledCollectors = [ "systemd" ];
          };
        };

        # nixpkgs nixos/modules/services/monitoring/grafana.nix (settings.server.*, settings.security.*,
        # settings.analytics.*, settings.users.*, provision.enable, provision.datasources.settings)
        services.grafana = {
          enable = true;
          settings = {
            server = {
              http_addr = "127.0.0.1";
              http_port = 3000;
              # Served under the proxy's /grafana/ prefix, which is passed through unchanged.
              root_url = "%(protocol)s://%(domain)s/grafana/";
              serve_from_sub_path = true;
            };
            security = {
              admin_user = "admin";
              # Grafana's file provider reads these at start-up (as user grafana); the store only ever
              # holds the paths.
              admin_password = "$__file{" + "/var/lib/xnode/secrets/monitoring/grafana_admin_password" + "}";
              secret_key = "$__file{" + "/var/lib/xnode/secrets/monitoring/grafana_secret_key" + "}";
              disable_gravatar = true;
            };
            users.allow_sign_up = false;
            analytics = {
              reporting_enabled = false;
              check_for_updates = false;
              check_for_plugin_updates = false;
            };
          };
          provision = {
            enable = true;
            datasources.settings = {
              apiVersion = 1;
              datasources = [{
                name = "Prometheus";
                type = "prometheus";
                uid = "xnode-prometheus";
                access = "proxy";
                url = "http://127.0.0.1:${toString promPort}";
                isDefault = true;
                editable = false;
              }];
            };
          };
        };

        # Grafana reads admin_password only when it creates the admin user (its first start), so a
        # rotated secret would change nothing (facts/nixos-behaviour.json). This unit sets the admin's
        # password from the secret file after every Grafana start and whenever the file changes (the
        # apps module's watcher restarts it, below), with Grafana's own CLI on Grafana's database.
        # nixpkgs nixos/modules/services/monitoring/grafana.nix (services.grafana.{package,dataDir,
        # settings.paths.data}); the server's sqlite database is <paths.data>/grafana.db.
        systemd.services.grafana-admin-password = {
          description = "Set the Grafana admin password from the secret file";
          after = [ "grafana.service" ];
          requires = [ "grafana.service" ];
          wantedBy = [ "multi-user.target" ];
          path = [ config.services.grafana.package ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            User = "grafana";
            Group = "grafana";
            LoadCredential = [ "password:${ "/var/lib/xnode/secrets/monitoring/grafana_admin_password" }" ];
            PrivateTmp = true;
            NoNewPrivileges = true;
          };
          script = ''
            set -euo pipefail
            test -s "$CREDENTIALS_DIRECTORY/password" || { echo "the admin password secret is empty" >&2; exit 1; }
            # The admin exists once the server has run its migrations: retry for up to two minutes.
            for _ in $(seq 60); do
              if grafana cli --homepath ${config.services.grafana.package}/share/grafana \
                  --configOverrides "cfg:paths.data=${config.services.grafana.settings.paths.data}" \
                  admin reset-admin-password --password-from-stdin < "$CREDENTIALS_DIRECTORY/password"; then
                echo "admin password set"
                exit 0
              fi
              sleep 2
            done
            echo "grafana did not accept the admin password" >&2
            exit 1
          '';
        };
        # A rotated secret: the password unit runs again; Grafana itself restarts only for its secret
        # key (which it reads at start-up), before the password unit that needs it running.
        xnode.apps.monitoring.restartOnSecretChange = [ "grafana.service" "grafana-admin-password.service" ];

        # modules/proxy.nix: Grafana behind the node's reverse proxy (localhost unless exposed).
        xnode.proxy.routes."/grafana/" = {
          port = 3000;
          public = false;
          walletGate = false;
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.monitoring = { template = "monitoring"; health = [ { kind = "systemd"; target = "prometheus.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "prometheus-node-exporter.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "grafana.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "grafana-admin-password.service"; status = 200; timeout = 180; } { kind = "tcp"; target = "9100"; status = 200; timeout = 60; } { kind = "http"; target = "http://127.0.0.1:9090/-/ready"; status = 200; timeout = 120; } { kind = "http"; target = "http://127.0.0.1:3000/grafana/api/health"; status = 200; timeout = 180; } ]; secrets = [ { name = "grafana_admin_password"; path = "/var/lib/xnode/secrets/monitoring/grafana_admin_password"; owner = "grafana"; group = "root"; } { name = "grafana_secret_key"; path = "/var/lib/xnode/secrets/monitoring/grafana_secret_key"; owner = "grafana"; group = "root"; } ]; ports = [ { port = 9090; protocol = "tcp"; public = false; purpose = "Prometheus web UI and API (127.0.0.1)"; metrics = false; } { port = 9100; protocol = "tcp"; public = false; purpose = "node exporter (127.0.0.1)"; metrics = true; } { port = 3000; protocol = "tcp"; public = false; purpose = "Grafana (127.0.0.1, behind the proxy at /grafana/)"; metrics = false; } ]; };
}
