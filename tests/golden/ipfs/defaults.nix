# Rendered by xnodectl 0.1.0 from template 'ipfs' as app 'ipfs'.
# Do not edit: change the parameters and render again.
# parameters: storage_max="50GB", profile="server", swarm_port=4001, gateway_port=8080, api_port=5001, gateway_fetch=true, expose=false, wallet_gate=false
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        swarmPort = toString 4001;
      in
      {
        # nixpkgs nixos/modules/services/network-filesystems/kubo.nix (services.kubo.*): the module
        # builds its default config with `ipfs init --profile=server` unless localDiscovery is set.
        services.kubo = {
          enable = true;
          localDiscovery = false; # nixpkgs kubo.nix: keep the server profile, no LAN port scans
          enableGC = true; # nixpkgs kubo.nix: --enable-gc, so Datastore.StorageMax is enforced
          autoMigrate = true; # nixpkgs kubo.nix: repo migrations on package upgrades
          settings = {
            # nixpkgs kubo.nix declares Addresses.API (default: unix socket only) and
            # Addresses.Gateway; both stay on loopback. The module derives ipfs-api.socket and
            # ipfs-gateway.socket from them.
            Addresses.API = [ "/ip4/127.0.0.1/tcp/${toString 5001}" ];
            Addresses.Gateway = "/ip4/127.0.0.1/tcp/${toString 8080}";
            # nixpkgs kubo.nix Addresses.Swarm (listOf str): the public p2p listeners.
            Addresses.Swarm = [
              "/ip4/0.0.0.0/tcp/${swarmPort}"
              "/ip6/::/tcp/${swarmPort}"
              "/ip4/0.0.0.0/udp/${swarmPort}/quic-v1"
              "/ip4/0.0.0.0/udp/${swarmPort}/quic-v1/webtransport"
              "/ip4/0.0.0.0/udp/${swarmPort}/webrtc-direct"
              "/ip6/::/udp/${swarmPort}/quic-v1"
              "/ip6/::/udp/${swarmPort}/quic-v1/webtransport"
              "/ip6/::/udp/${swarmPort}/webrtc-direct"
            ];
            # Freeform kubo settings (nixpkgs kubo.nix `settings` is a JSON freeform submodule);
            # keys per kubo docs/config.md.
            Datastore.StorageMax = "50GB";
            Gateway.NoFetch = false;
          };
        };

        # The gateway behind the node's reverse proxy (modules/proxy.nix): local-only unless exposed.
        xnode.proxy.routes."/ipfs/" = {
          port = 8080;
          public = false;
          walletGate = false;
        };
        xnode.proxy.routes."/ipns/" = {
          port = 8080;
          public = false;
          walletGate = false;
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ 4001 ];
  networking.firewall.allowedUDPPorts = [ 4001 ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.ipfs = { template = "ipfs"; health = [ { kind = "systemd"; target = "ipfs.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "4001"; status = 200; timeout = 60; } { kind = "http"; target = "http://127.0.0.1:8080/ipfs/bafkqaaa"; status = 200; timeout = 180; } { kind = "http"; target = "http://127.0.0.1:5001/api/v0/version"; status = 405; timeout = 180; } ]; secrets = [ ]; ports = [ { port = 4001; protocol = "tcp"; public = true; purpose = "IPFS swarm (libp2p TCP and QUIC)"; metrics = false; } { port = 4001; protocol = "udp"; public = true; purpose = "IPFS swarm (libp2p TCP and QUIC)"; metrics = false; } { port = 8080; protocol = "tcp"; public = false; purpose = "IPFS HTTP gateway (127.0.0.1; public only through the proxy)"; metrics = false; } { port = 5001; protocol = "tcp"; public = false; purpose = "kubo RPC API (127.0.0.1; Prometheus metrics)"; metrics = true; metricsPath = "/debug/metrics/prometheus"; } ]; };
}
