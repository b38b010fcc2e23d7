# xnode.proxy: one nginx reverse proxy in front of the apps' web UIs. Apps add routes; the proxy
# listens on localhost only unless a route is marked public (the template's user asked for it).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.proxy;
  anyPublic = lib.any (r: r.public) (builtins.attrValues cfg.routes);
  listenAddr = if anyPublic then "0.0.0.0" else "127.0.0.1";
in
{
  options.xnode.proxy = {
    port = mkOption {
      type = types.port;
      default = 80;
      description = "Port the reverse proxy listens on.";
    };
    routes = mkOption {
      default = { };
      description = "Path prefix (e.g. \"/chat/\") -> local backend.";
      type = types.attrsOf (types.submodule {
        options = {
          port = mkOption { type = types.port; description = "Backend port on 127.0.0.1."; };
          public = mkOption {
            type = types.bool;
            default = false;
            description = "Reachable from the network (opens the proxy port in the firewall).";
          };
          websockets = mkOption { type = types.bool; default = true; description = "Proxy WebSocket upgrades."; };
          walletGate = mkOption {
            type = types.bool;
            default = false;
            description = "Require a wallet sign-in (SIWE) by the owner or an allowed address; see modules/wallet-gate.nix.";
          };
          stripPrefix = mkOption {
            type = types.bool;
            default = false;
            description = "Remove the path prefix before passing the request on.";
          };
        };
      });
    };
  };

  config = mkIf (cfg.routes != { }) {
    # nixpkgs nixos/modules/services/web-servers/nginx/default.nix (services.nginx.enable,
    # recommendedProxySettings, virtualHosts) and nginx/vhost-options.nix (listen, locations)
    # and nginx/location-options.nix (proxyPass, proxyWebsockets, extraConfig).
    services.nginx = {
      enable = true;
      recommendedProxySettings = true;
      virtualHosts."xnode-proxy" = {
        default = true;
        listen = [{ addr = listenAddr; port = cfg.port; }];
        locations = lib.mapAttrs
          (path: route: {
            proxyPass = "http://127.0.0.1:${toString route.port}" + (if route.stripPrefix then "/" else "");
            proxyWebsockets = route.websockets;
          })
          cfg.routes;
      };
    };
    # nixpkgs nixos/modules/services/networking/firewall.nix (networking.firewall.allowedTCPPorts)
    networking.firewall.allowedTCPPorts = lib.optional anyPublic cfg.port;
  };
}
