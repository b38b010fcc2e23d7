# xnode.proxy: one nginx reverse proxy in front of the apps' web UIs. Apps add path routes on the
# shared proxy port, or sites (a port of their own, for apps that must own the root of their URL).
# Everything listens on localhost only unless a route or site is marked public (the template's user
# asked for it).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.proxy;
  anyPublic = lib.any (r: r.public) (builtins.attrValues cfg.routes);
  listenAddr = public: if public then "0.0.0.0" else "127.0.0.1";
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
      virtualHosts = lib.optionalAttrs (cfg.routes != { })
        {
          "xnode-proxy" = {
            default = true;
            listen = [{ addr = listenAddr anyPublic; port = cfg.port; }];
            locations = lib.mapAttrs
              (path: route: {
                proxyPass = "http://127.0.0.1:${toString route.port}" + (if route.stripPrefix then "/" else "");
                proxyWebsockets = route.websockets;
              })
              cfg.routes;
          };
        }
      // lib.mapAttrs'
        (name: site: lib.nameValuePair "xnode-site-${name}" {
          listen = [{ addr = listenAddr site.public; port = site.listenPort; }];
          locations."/" = {
            proxyPass = "http://127.0.0.1:${toString site.backendPort}";
            proxyWebsockets = site.websockets;
          };
        })
        cfg.sites;
    };
    # nixpkgs nixos/modules/services/networking/firewall.nix (networking.firewall.allowedTCPPorts)
    networking.firewall.allowedTCPPorts = lib.optional anyPublic cfg.port
      ++ map (site: site.listenPort) (lib.filter (site: site.public) (builtins.attrValues cfg.sites));
  };
}
