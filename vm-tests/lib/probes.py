# Shared by the template VM tests (prepended to their testScript): an app's health probes, taken
# from /etc/xnode/apps.json (what the rendered module declares), run the way a deploy runs them.
import json


def run_health_probes(machine, app, kinds=("systemd", "tcp", "http")):
    """Wait until every probe of `app` of the given kinds passes, then have the node's own deploy
    agent (`xnode-activate probe`, what `xnodectl deploy` asks before confirming) agree."""
    apps = json.loads(machine.succeed("cat /etc/xnode/apps.json"))
    probes = [p for p in apps[app]["health"] if p["kind"] in kinds]
    assert probes, f"{app} declares no {kinds} health probes"
    for probe in probes:
        kind, target, timeout = probe["kind"], probe["target"], probe["timeout"]
        if kind == "systemd":
            machine.wait_for_unit(target, timeout=timeout)
        elif kind == "tcp":
            machine.wait_for_open_port(int(target), timeout=timeout)
        else:
            machine.wait_until_succeeds(
                f"test \"$(curl -s -o /dev/null -w '%{{http_code}}' '{target}')\" = {probe['status']}",
                timeout=timeout,
            )
    machine.succeed(f"cat > /tmp/{app}-probes.json <<'EOF'\n{json.dumps(probes)}\nEOF")
    verdict = json.loads(machine.succeed(f"xnode-activate probe --file /tmp/{app}-probes.json"))
    assert verdict["ok"], f"xnode-activate probe disagrees: {verdict}"
