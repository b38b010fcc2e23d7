# Wallet gate: every xnode.proxy route with `walletGate = true` sits behind a Sign-In with
# Ethereum (EIP-4361) by the owner or an allowed address. nginx asks the gate (`xnode-gate`, on
# loopback) with `auth_request` on every request; without a session the browser is sent to the
# sign-in page at /auth/login. Sessions are server-side, short-lived, HttpOnly, SameSite=Strict,
# Secure behind TLS, and bound to the host name the owner signed in to.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.walletGate;
  proxy = config.xnode.proxy;
  gated = lib.filterAttrs (_: route: route.walletGate) proxy.routes;
  publicGated = lib.filterAttrs (_: route: route.public) gated;
  gatedSites = lib.filterAttrs (_: site: site.walletGate) proxy.sites;
  upstream = "http://127.0.0.1:${toString cfg.port}";
  # Every name with and without the proxy port: browsers omit the port only when it is 80/443.
  # Sites on ports of their own add their ports too.
  ports = [ proxy.port ] ++ map (site: site.listenPort) (builtins.attrValues gatedSites);
  domains = lib.unique (lib.concatMap (d: [ d ] ++ map (p: "${d}:${toString p}") ports) cfg.domains);
  args = [
    "--listen" "127.0.0.1"
    "--port" (toString cfg.port)
    "--chain-id" (toString cfg.chainId)
    "--session-ttl" (toString cfg.sessionTtl)
    "--secure-cookie" cfg.secureCookie
    "--node-name" config.networking.hostName
  ]
  ++ lib.concatMap (a: [ "--allow" a ]) cfg.allow
  ++ lib.concatMap (d: [ "--domain" d ]) domains;
  # Headers the gate trusts come from nginx only: proxy_set_header replaces whatever the client
  # sent. $http_host keeps the port the browser used (the SIWE domain); $server_addr:$server_port
  # is the address the request really arrived on.
  gateHeaders = ''
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Xnode-Server $server_addr:$server_port;
    proxy_set_header X-Real-IP $remote_addr;
  '';
  # nixpkgs nixos/modules/services/web-servers/nginx/vhost-options.nix (locations) and
  # nginx/location-options.nix (proxyPass, recommendedProxySettings, return, extraConfig);
  # directives: nginx ngx_http_auth_request_module (auth_request, auth_request_set).
  # The sign-in endpoints every gated virtual host carries.
  gateLocations = {
    "/auth/" = {
      proxyPass = upstream;
      recommendedProxySettings = false; # its Host is $host (no port); the gate needs $http_host
      # Nonces and sign-ins per client address: a sign-in takes about five requests; a flood
      # gets 429 from nginx before it reaches the gate (ngx_http_limit_req_module).
      extraConfig = gateHeaders + ''
        limit_req zone=xnode_auth burst=20 nodelay;
        limit_req_status 429;
      '';
    };
    # The subrequest target: internal, so a browser cannot probe it directly.
    "= /auth/check" = {
      proxyPass = "${upstream}/auth/check";
      recommendedProxySettings = false;
      extraConfig = ''
        internal;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
      '' + gateHeaders;
    };
    "@xnode_signin" = {
      return = "302 /auth/login?next=$request_uri";
    };
  };
  # Merged into modules/proxy.nix's location of a gated route or site (which sets proxyPass).
  gatedLocation = {
    extraConfig = ''
      auth_request /auth/check;
      error_page 401 = @xnode_signin;
      auth_request_set $xnode_address $upstream_http_x_xnode_address;
      proxy_set_header X-Xnode-Address $xnode_address;
    '';
  };
in
{
  options.xnode.walletGate = {
    enable = mkOption {
      type = types.bool;
      default = gated != { } || gatedSites != { };
      defaultText = lib.literalExpression "any xnode.proxy route or site has walletGate = true";
      description = "Run the wallet sign-in gate (on whenever a proxy route asks for it).";
    };
    port = mkOption {
      type = types.port;
      default = 8741;
      description = "Loopback port of the gate service (never exposed; nginx proxies /auth/).";
    };
    allow = mkOption {
      type = types.listOf (types.strMatching "0x[0-9a-fA-F]{40}");
      default = [ ];
      example = [ "0x52908400098527886E0F7030069857D2E4169EE7" ];
      description = "Addresses allowed besides the owner (xnode.owner.address).";
    };
    domains = mkOption {
      type = types.listOf (types.strMatching "[]A-Za-z0-9.:[-]+");
      default = lib.filter (name: name != "") [ config.networking.hostName ]
        ++ lib.optional (config.networking.domain != null) config.networking.fqdn;
      defaultText = lib.literalExpression "[ networking.hostName networking.fqdn ]";
      example = [ "apps.example.org" ];
      description = ''
        Host names the apps are served as; a SIWE message must name one of them (or the address
        the request arrived on), so a signature made for another site is useless here.
      '';
    };
    chainId = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "EIP-155 chain id the sign-in message carries.";
    };
    sessionTtl = mkOption {
      type = types.ints.between 60 86400;
      default = 3600;
      description = "Seconds a session lasts; sessions also end at logout and on gate restart.";
    };
    secureCookie = mkOption {
      type = types.enum [ "auto" "always" "never" ];
      default = "auto";
      description = "Mark the session cookie Secure: when the request came over TLS (auto), or always.";
    };
  };

  config = mkIf cfg.enable {
    # The gate reads the owner from /etc/xnode/owner-address (modules/owner.nix writes it from
    # xnode.owner.address; a test may provide the file itself).
    assertions = [{
      assertion = config.environment.etc ? "xnode/owner-address" || cfg.allow != [ ];
      message = "xnode.walletGate: a gated route needs xnode.owner.address or xnode.walletGate.allow.";
    }];

    # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services.<name>)
    systemd.services.xnode-gate = {
      description = "Xnode wallet gate (SIWE sign-in for app web UIs)";
      wantedBy = [ "multi-user.target" ];
      before = [ "nginx.service" ];
      after = [ "network.target" ];
      serviceConfig = import ./lib/service-hardening.nix // {
        ExecStart = lib.escapeShellArgs ([ "${config.xnode.package}/bin/xnode-gate" ] ++ args);
        DynamicUser = true; # reads only /etc/xnode/owner-address (0444); holds sessions in memory
      };
    };

    # nixpkgs nixos/modules/services/web-servers/nginx/vhost-options.nix (locations) and
    # nginx/location-options.nix (proxyPass, recommendedProxySettings, return, extraConfig);
    # directives: nginx ngx_http_auth_request_module (auth_request, auth_request_set).
    # ngx_http_limit_req_module: 5 requests a second per client address, in 1 MB (~16000 clients).
    services.nginx.appendHttpConfig = ''
      limit_req_zone $binary_remote_addr zone=xnode_auth:1m rate=5r/s;
    '';
    services.nginx.virtualHosts =
      lib.optionalAttrs (gated != { }) {
        "xnode-proxy".locations = gateLocations // lib.mapAttrs (_: _: gatedLocation) gated;
      }
      // lib.optionalAttrs (publicGated != { }) {
        "xnode-proxy-public".locations =
          gateLocations // lib.mapAttrs (_: _: gatedLocation) publicGated;
      }
      // lib.mapAttrs'
        (name: _: lib.nameValuePair "xnode-site-${name}" {
          locations = gateLocations // { "/" = gatedLocation; };
        })
        gatedSites;
  };
}
