# Rendered by xnodectl 0.1.0 from template 'ai-chatbot' as app 'ai-chatbot'.
# Do not edit: change the parameters and render again.
# parameters: models=[ "llama3.2:3b" ], accel="cpu", ollama_port=11434, webui_port=8081, port=8082, webui_auth=true, expose=false, wallet_gate=false
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        # The GPU variant is a package choice: nixos-25.11 removed services.ollama.acceleration in
        # favour of the pkgs.ollama[-cpu,-cuda,-rocm,-vulkan] builds (nixpkgs nixos/modules/services/misc/ollama.nix).
        ollamaPackages = {
          cpu = pkgs.ollama-cpu;
          cuda = pkgs.ollama-cuda;
          rocm = pkgs.ollama-rocm;
          vulkan = pkgs.ollama-vulkan;
        };
      in
      {
        # nixpkgs nixos/modules/services/misc/ollama.nix (services.ollama.{enable,package,host,port,
        # loadModels,openFirewall}); DynamicUser with StateDirectory=ollama when `user` is null.
        services.ollama = {
          enable = true;
          package = ollamaPackages.cpu;
          host = "127.0.0.1";
          port = 11434;
          # Pulled by ollama-model-loader.service after ollama starts; it retries with back-off.
          loadModels = [ "llama3.2:3b" ];
          openFirewall = false;
        };

        # nixpkgs nixos/modules/services/misc/open-webui.nix (services.open-webui.{enable,host,port,
        # environment,openFirewall}). Setting `environment` replaces the module's default, so the three
        # privacy switches from that default are repeated here.
        services.open-webui = {
          enable = true;
          host = "127.0.0.1";
          port = 8081;
          openFirewall = false;
          environment = {
            SCARF_NO_ANALYTICS = "True";
            DO_NOT_TRACK = "True";
            ANONYMIZED_TELEMETRY = "False";
            OLLAMA_BASE_URL = "http://127.0.0.1:${toString 11434}";
            WEBUI_AUTH = "True";
          };
        };

        # Open WebUI talks to ollama: start it after ollama is up.
        # nixpkgs nixos/lib/systemd-unit-options.nix (systemd.services.<name>.{after,wants})
        systemd.services.open-webui = {
          after = [ "ollama.service" ];
          wants = [ "ollama.service" ];
        };

        # Behind the node's reverse proxy (modules/proxy.nix) on a port of its own: Open WebUI uses
        # absolute paths (/_app/, /api/, /ws/) and cannot live under a path prefix. Local-only unless
        # exposed; the proxy, not Open WebUI, is what the firewall opens.
        xnode.proxy.sites.ai-chatbot = {
          listenPort = 8082;
          backendPort = 8081;
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
  xnode.apps.ai-chatbot = { template = "ai-chatbot"; health = [ { kind = "systemd"; target = "ollama.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "open-webui.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "11434"; status = 200; timeout = 60; } { kind = "http"; target = "http://127.0.0.1:11434/api/version"; status = 200; timeout = 120; } { kind = "http"; target = "http://127.0.0.1:8081/health"; status = 200; timeout = 900; } { kind = "tcp"; target = "8082"; status = 200; timeout = 120; } ]; secrets = [ ]; ports = [ { port = 11434; protocol = "tcp"; public = false; purpose = "ollama API (127.0.0.1)"; metrics = false; } { port = 8081; protocol = "tcp"; public = false; purpose = "Open WebUI (127.0.0.1; reached through the proxy)"; metrics = false; } { port = 8082; protocol = "tcp"; public = false; purpose = "Open WebUI through the node's reverse proxy (wallet gate when asked)"; metrics = false; } ]; };
}
