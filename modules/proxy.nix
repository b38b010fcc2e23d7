# xnode.proxy: one nginx reverse proxy in front of the apps' web UIs. Apps add path routes on the
# shared proxy port, or sites (a port of their own, for apps that must own the root of their URL).
# Everything listens on localhost only unless a route or site is marked public (the template's user
# asked for it). Public routes are served by a second server on the same port for connections
# from the network; the localhost server alone carries the other routes, so marking one route
# public never exposes its neighbours.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.proxy;
  publicRoutes = lib.filterAttrs (_: r: r.public) cfg.routes;
  listenAddr = public: if public then "0.0.0.0" else "127.0.0.1";
  # The wallet gate's session cookie stays between the browser and nginx: an app (gated or not,
  # on the same host and port) never receives it, so it cannot replay the owner's session.
  # Two passes remove up to two occurrences; a header left empty is not sent at all.
  # Directives: nginx ngx_http_map_module (map, regex with named captures), limit_conn_zone.
  httpConfig = ''
    map $http_cookie $xnode_cookie_pass1 {
      "~^xnode_session=[^;]*(?:;\s*)?(?<xnode_c1t>.*)$" "$xnode_c1t";
      "~^(?<xnode_c1h>.*?);\s*xnode_session=[^;]*(?<xnode_c1r>.*)$" "$xnode_c1h$xnode_c1r";
      default $http_cookie;
    }
    map $xnode_cookie_pass1 $xnode_app_cookie {
      "~^xnode_session=[^;]*(?:;\s*)?(?<xnode_c2t>.*)$" "$xnode_c2t";
      "~^(?<xnode_c2h>.*?);\s*xnode_session=[^;]*(?<xnode_c2r>.*)$" "$xnode_c2h$xnode_c2r";
      default $xnode_cookie_pass1;
    }
    limit_conn_zone $binary_remote_addr zone=xnode_conn:1m;
  '';
  # Per server: a client has 10 s to send its request headers (in all: nginx does not restart
  # this timer on each byte), 64 connections per address; then 408/429, never a held worker.
  serverLimits = ''
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 30s;
    keepalive_timeout 30s;
    limit_conn xnode_conn 64;
    limit_conn_status 429;
  '';
  # What every app location sends upstream besides nixpkgs' recommended headers. X-Xnode-Address
  # is the gate's word for who signed in: an ungated app gets none, never the client's own.
  appHeaders = gated: ''
    proxy_set_header Cookie $xnode_app_cookie;
  '' + lib.optionalString (!gated) ''
    proxy_set_header X-Xnode-Address "";
  '';
  routeLocation = _: route: {
    proxyPass = "http://127.0.0.1:${toString route.port}" + (if route.stripPrefix then "/" else "");
    proxyWebsockets = route.websockets;
    extraConfig = appHeaders route.walletGate;
  };
  exposure = {
    public = mkOption {
      type = types.bool;
      default = false;
      description = "Reachable from the network (opens the port in the firewall).";
    };
    websockets = mkOption { type = types.bool; default = true; description = "Proxy WebSocket upgrades."; };
    walletGate = mkOption {
      type = types.bool;
      default = false;
      description = "Require a wallet sign-in (SIWE) by the owner or an allowed address; see modules/wallet-gate.nix.";
    };
  };
in
{
  options.xnode.proxy = {
    port = mkOption {
      type = types.port;
      default = 80;
      description = "Port the reverse proxy listens on for path routes.";
    };
    routes = mkOption {
      default = { };
      description = "Path prefix (e.g. \"/grafana/\") on the proxy port -> local backend.";
      type = types.attrsOf (types.submodule {
        options = exposure // {
          port = mkOption { type = types.port; description = "Backend port on 127.0.0.1."; };
          stripPrefix = mkOption {
            type = types.bool;
            default = false;
            description = "Remove the path prefix before passing the request on.";
          };
        };
      });
    };
    sites = mkOption {
      default = { };
      description = ''
        Apps served at the root of a proxy port of their own (name -> site), for web apps that use
        absolute paths and cannot live under a prefix.
      '';
      type = types.attrsOf (types.submodule {
        options = exposure // {
          listenPort = mkOption { type = types.port; description = "Port the proxy serves the app on."; };
          backendPort = mkOption { type = types.port; description = "The app's own port on 127.0.0.1."; };
        };
      });
    };
  };

  config = mkIf (cfg.routes != { } || cfg.sites != { }) {
    # nixpkgs nixos/modules/services/web-servers/nginx/default.nix (services.nginx.enable,
    # recommendedProxySettings, virtualHosts) and nginx/vhost-options.nix (default, listen,
    # locations) and nginx/location-options.nix (proxyPass, proxyWebsockets, extraConfig).
    services.nginx = {
      enable = true;
      recommendedProxySettings = true;
      appendHttpConfig = httpConfig;
      virtualHosts = lib.optionalAttrs (cfg.routes != { })
        {
          "xnode-proxy" = {
            default = true;
            listen = [{ addr = "127.0.0.1"; port = cfg.port; }];
            locations = lib.mapAttrs routeLocation cfg.routes;
            extraConfig = serverLimits;
          };
        }
      // lib.optionalAttrs (publicRoutes != { })
        {
          # nginx binds the wildcard address once and picks this server for every connection
          # that did not arrive on 127.0.0.1 (ngx_http_core_module, listen).
          "xnode-proxy-public" = {
            default = true;
            listen = [{ addr = "0.0.0.0"; port = cfg.port; }];
            locations = lib.mapAttrs routeLocation publicRoutes;
            extraConfig = serverLimits;
          };
        }
      // lib.mapAttrs'
        (name: site: lib.nameValuePair "xnode-site-${name}" {
          listen = [{ addr = listenAddr site.public; port = site.listenPort; }];
          locations."/" = {
            proxyPass = "http://127.0.0.1:${toString site.backendPort}";
            proxyWebsockets = site.websockets;
            extraConfig = appHeaders site.walletGate;
          };
          extraConfig = serverLimits;
        })
        cfg.sites;
    };
    # nixpkgs nixos/modules/services/networking/firewall.nix (networking.firewall.allowedTCPPorts)
    networking.firewall.allowedTCPPorts = lib.optional (publicRoutes != { }) cfg.port
      ++ map (site: site.listenPort) (lib.filter (site: site.public) (builtins.attrValues cfg.sites));
  };
}
