# Rendered by xnodectl 0.1.0 from template 'static-web' as app 'static-web'.
# Do not edit: change the parameters and render again.
# parameters: domain="www.example.org", aliases=[ ], source="local", root="/var/www/site", source_url="", source_rev="", source_hash="", subdir="", acme=true, acme_email="webmaster@example.org", hsts=true, csp="default-src 'self'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'; object-src 'none'", check_port=8088
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        domain = "www.example.org";
        subdir = "";
        # Files live on the node, outside the store (a string, never a Nix path literal).
        src = "/var/www/site";
        siteRoot = if subdir == "" then src else "${src}/${subdir}";
        # Values are validated by the template's patterns (no quotes, `$`, braces or newlines), so they
        # are safe inside nginx's double-quoted strings.
        securityHeaders = ''
          add_header Content-Security-Policy "${ "default-src 'self'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'; object-src 'none'" }" always;
          add_header X-Content-Type-Options "nosniff" always;
          add_header X-Frame-Options "DENY" always;
          add_header Referrer-Policy "strict-origin-when-cross-origin" always;
          add_header Permissions-Policy "camera=(), microphone=(), geolocation=()" always;
          add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
        '';
      in
      {
        # Checked when the node is evaluated, before anything is fetched or built.
        assertions = [
        ];

        # nixpkgs nixos/modules/services/web-servers/nginx/default.nix (services.nginx.{enable,
        # recommended*Settings,virtualHosts}) and nginx/vhost-options.nix (serverName, serverAliases,
        # root, enableACME, forceSSL, listen, extraConfig, locations) and nginx/location-options.nix
        # (tryFiles).
        services.nginx = {
          enable = true;
          recommendedTlsSettings = true;
          recommendedOptimisation = true;
          recommendedGzipSettings = true;
          virtualHosts.${domain} = {
            serverName = domain;
            serverAliases = [ ];
            root = siteRoot;
            enableACME = true;
            forceSSL = true;
            locations."/".tryFiles = "$uri $uri/ =404";
            extraConfig = securityHeaders;
          };
          # The same content on loopback only, for the health probe (it cannot send the site's Host).
          virtualHosts."static-web-check" = {
            listen = [ { addr = "127.0.0.1"; port = 8088; } ];
            root = siteRoot;
            locations."/".tryFiles = "$uri $uri/ =404";
          };
        };

        # The site directory, with a placeholder page until the owner uploads the site (an existing
        # index.html is never touched), so a first deploy serves something and its health probe passes.
        # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
        systemd.tmpfiles.rules = [
          "d ${src} 0755 root root -"
          "f ${src}/index.html 0644 root root - ${domain} is served by xnodectl: put the site in ${src}"
        ];

        # nixpkgs nixos/modules/security/acme/default.nix (security.acme.{acceptTerms,defaults.email});
        # the module serves a self-signed placeholder until the first order succeeds.
        security.acme = {
          acceptTerms = true;
          defaults.email = "webmaster@example.org";
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ 80 443 ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.static-web = { template = "static-web"; health = [ { kind = "systemd"; target = "nginx.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "80"; status = 200; timeout = 60; } { kind = "http"; target = "http://127.0.0.1:8088/"; status = 200; timeout = 60; } ]; secrets = [ ]; ports = [ { port = 80; protocol = "tcp"; public = true; purpose = "HTTP (ACME challenges; redirects to HTTPS when acme=true)"; metrics = false; } { port = 443; protocol = "tcp"; public = true; purpose = "HTTPS"; metrics = false; } { port = 8088; protocol = "tcp"; public = false; purpose = "Site copy for the health probe (127.0.0.1)"; metrics = false; } ]; };
}
