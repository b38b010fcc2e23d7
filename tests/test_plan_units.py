"""The plan's units (xnodectl/deploy/units.py): switch-to-configuration's rules on small unit
trees written to disk as a NixOS system has them (unit files in store-like dirs, linked from
etc/systemd/system, drop-ins in `<unit>.d/`, dependencies in `<target>.wants/`)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from xnodectl.cli.plan import _units_lines
from xnodectl.deploy import units, unittree
from xnodectl.deploy.units import Basis, Tree, UnitChanges

SVC = "[Unit]\nDescription=a\n[Service]\nExecStart=/bin/a {v}\n{extra}\n[Install]\nWantedBy=x\n"
TARGET = "[Unit]\nDescription=Multi-User\n"


def system(root: Path, files: Mapping[str, str]) -> Tree:
    """A system dir: each file in a store-like dir of its own (same text, same path, as Nix
    would share it), linked from etc/systemd/system; `*.wants/<unit>` values are ignored (links
    to the unit); the value "/dev/null" masks."""
    etc = root / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    store = root.parent / "store"
    store.mkdir(exist_ok=True)
    for name, text in files.items():
        link = etc / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if "/" in name and not name.endswith(".conf"):
            link.symlink_to(Path("..") / name.rsplit("/", 1)[1])
        elif text == "/dev/null":
            link.symlink_to("/dev/null")
        else:
            blob = store / f"{abs(hash(text)):x}-{name.replace('/', '_')}"
            blob.write_text(text)
            link.symlink_to(blob)
    return unittree.read_tree(root)


def svc(v: str = "1", extra: str = "") -> str:
    return SVC.format(v=v, extra=extra)


def plan(
    tmp: Path,
    old: Mapping[str, str],
    new: Mapping[str, str],
    active: Iterable[str] | None = None,
) -> UnitChanges:
    return units.classify(system(tmp / "old", old), system(tmp / "new", new), active)


def only(changes: UnitChanges, **lists: tuple[str, ...]) -> None:
    """Every list of `changes` is empty except those named."""
    fields = ("start", "stop", "restart", "stopped_then_started", "reload", "not_restarted")
    got = {f: getattr(changes, f) for f in fields}
    assert got == {f: lists.get(f, ()) for f in fields}


BASE = {"multi-user.target": TARGET, "multi-user.target.wants/a.service": ""}


def test_unchanged_system_does_nothing(tmp_path: Path) -> None:
    tree = {**BASE, "a.service": svc()}
    only(plan(tmp_path, tree, tree))


def test_changed_service_is_stopped_then_started(tmp_path: Path) -> None:
    changes = plan(tmp_path, {**BASE, "a.service": svc("1")}, {**BASE, "a.service": svc("2")})
    only(changes, restart=("a.service",), stopped_then_started=("a.service",))
    assert changes.basis == Basis.ASSUMED.value


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ("X-StopIfChanged=false", {"restart": ("a.service",)}),
        ("X-ReloadIfChanged=true", {"reload": ("a.service",)}),
        ("X-RestartIfChanged=false", {"not_restarted": ("a.service",)}),
        ("X-RestartIfChanged=0", {"not_restarted": ("a.service",)}),
        ("X-RestartIfChanged=true", {"restart": ("a.service",),
                                     "stopped_then_started": ("a.service",)}),
    ],
)  # fmt: skip
def test_the_new_units_x_keys_decide(
    tmp_path: Path, extra: str, expect: dict[str, tuple[str, ...]]
) -> None:
    """The NEW unit's keys count (the old one had none)."""
    old = {**BASE, "a.service": svc("1")}
    new = {**BASE, "a.service": svc("2", extra)}
    only(plan(tmp_path, old, new), **expect)


def test_old_units_keys_do_not_count(tmp_path: Path) -> None:
    old = {**BASE, "a.service": svc("1", "X-RestartIfChanged=false")}
    new = {**BASE, "a.service": svc("2")}
    only(plan(tmp_path, old, new), restart=("a.service",), stopped_then_started=("a.service",))


def test_unit_section_flags_skip(tmp_path: Path) -> None:
    for key in ("RefuseManualStop", "X-OnlyManualStart"):
        root = tmp_path / key
        new_text = svc("2").replace("[Unit]\n", f"[Unit]\n{key}=yes\n")
        only(
            plan(root, {"a.service": svc("1")}, {"a.service": new_text}),
            not_restarted=("a.service",),
        )


def test_ignored_unit_keys_and_reload_triggers(tmp_path: Path) -> None:
    old = {"a.service": svc()}
    described = {"a.service": svc().replace("Description=a", "Description=b")}
    only(plan(tmp_path / "d", old, described))
    triggered = {"a.service": svc().replace("[Unit]\n", "[Unit]\nX-Reload-Triggers=/nix/x\n")}
    only(plan(tmp_path / "t", old, triggered), reload=("a.service",))
    # the [Install] section is not compared
    only(plan(tmp_path / "i", old, {"a.service": svc().replace("WantedBy=x", "WantedBy=y")}))


def test_gone_masked_and_kept_on_removal(tmp_path: Path) -> None:
    old = {**BASE, "a.service": svc(), "b.service": svc(), "c.service": svc()}
    keep = svc().replace("[Unit]\n", "[Unit]\nX-StopOnRemoval=false\n")
    old["c.service"] = keep
    new = {**BASE, "a.service": svc(), "b.service": "/dev/null"}
    only(plan(tmp_path, old, new), stop=("b.service",))


def test_new_units_start_only_when_an_active_target_wants_them(tmp_path: Path) -> None:
    old = {**BASE, "a.service": svc()}
    new = {
        **BASE,
        "a.service": svc(),
        "b.service": svc("b").replace("[Service]", "[Unit]\nWants=d.service\n[Service]"),
        "multi-user.target.wants/b.service": "",
        "c.service": svc("c"),  # wanted by nothing: not started (a timer or socket would)
        "d.service": svc("d"),
    }  # fmt: skip
    only(plan(tmp_path, old, new), start=("b.service", "d.service"))


def test_changed_drop_in_restarts_and_empty_value_clears(tmp_path: Path) -> None:
    old = {"a.service": svc(), "a.service.d/override.conf": "[Service]\nEnvironment=X=1\n"}
    new = {"a.service": svc(), "a.service.d/override.conf": "[Service]\nEnvironment=X=2\n"}
    only(
        plan(tmp_path / "1", old, new), restart=("a.service",), stopped_then_started=("a.service",)
    )
    # a drop-in that clears ExecStart and sets it back to the same value: no change
    same = {
        "a.service": svc(),
        "a.service.d/z.conf": "[Service]\nExecStart=\nExecStart=/bin/a 1\n",
    }
    only(plan(tmp_path / "2", {"a.service": svc()}, same))
    # a drop-in that only adds X-RestartIfChanged=false makes the change skipped
    skip = {
        "a.service": svc("2"),
        "a.service.d/keep.conf": "[Service]\nX-RestartIfChanged=false\n",
    }
    only(plan(tmp_path / "3", {"a.service": svc()}, skip), not_restarted=("a.service",))


def test_socket_activated_service(tmp_path: Path) -> None:
    sock = "[Socket]\nListenStream=80\n"
    old = {"a.service": svc("1"), "a.socket": sock}
    new = {"a.service": svc("2"), "a.socket": sock}
    only(
        plan(tmp_path / "1", old, new, active=["a.service", "a.socket"]),
        stop=("a.service",),
        restart=("a.socket",),
        stopped_then_started=("a.socket",),
    )
    opted_out = {"a.service": svc("2", "X-NotSocketActivated=true"), "a.socket": sock}
    both = ("a.service", "a.socket")
    only(
        plan(tmp_path / "2", old, opted_out, active=both),
        restart=both,
        stopped_then_started=both,
    )


def test_mounts_sockets_slices(tmp_path: Path) -> None:
    mount = "[Mount]\nWhat=/dev/{w}\nWhere=/data\nOptions={o}\n"
    old = {
        "data.mount": mount.format(w="a", o="ro"),
        "srv.mount": mount.format(w="a", o="ro"),
        "-.mount": mount.format(w="a", o="ro"),
        "x.socket": "[Socket]\nListenStream=1\n",
        "x.slice": "[Slice]\nCPUQuota=10%\n",
    }
    new = {
        "data.mount": mount.format(w="a", o="rw"),  # options only: reload
        "srv.mount": mount.format(w="b", o="ro"),  # device: restart
        "-.mount": mount.format(w="b", o="ro"),  # the root: reloaded, never restarted
        "x.socket": "[Socket]\nListenStream=2\n",  # sockets: left alone
        "x.slice": "[Slice]\nCPUQuota=20%\n",  # slices: daemon-reload applies them
    }
    only(plan(tmp_path, old, new), restart=("srv.mount",), reload=("-.mount", "data.mount"))


def test_template_instances(tmp_path: Path) -> None:
    old = {"getty@.service": svc("1"), "multi-user.target": TARGET}
    new = {"getty@.service": svc("2"), "multi-user.target": TARGET}
    changes = plan(tmp_path, old, new, active=["getty@tty1.service", "multi-user.target"])
    only(changes, restart=("getty@tty1.service",), stopped_then_started=("getty@tty1.service",))
    assert changes.basis == Basis.SYSTEMD.value


def test_known_active_set_rules(tmp_path: Path) -> None:
    """Inactive units are not restarted; a wanted unit that is not running is started."""
    old = {**BASE, "a.service": svc("1"), "b.service": svc("1")}
    new = {**BASE, "a.service": svc("2"), "b.service": svc("2")}
    changes = plan(tmp_path, old, new, active=["multi-user.target", "b.service"])
    only(changes, start=("a.service",), restart=("b.service",), stopped_then_started=("b.service",))


def test_node_reply_shares_texts_with_the_new_system(tmp_path: Path) -> None:
    wanted = {**BASE, "multi-user.target.wants/b.service": ""}
    new = system(tmp_path / "new", {**wanted, "a.service": svc("2"), "b.service": svc("b")})
    old_text = svc("1")
    reply = "\n".join(
        [
            "K\t/nix/store/k",
            "E\ta.service\t/nix/store/old-a",
            f"E\tb.service\t{new.entries['b.service']}",
            f"E\tmulti-user.target\t{new.entries['multi-user.target']}",
            "E\tmulti-user.target.wants/a.service\t/nix/store/old-a",
            f"C\ta.service\t{base64.b64encode(old_text.encode()).decode()}",
            "A\ta.service\tactive",
            "A\tb.service\tfailed",
            "A\tmulti-user.target\tactive",
        ]
    )
    got = unittree.parse_node_reply(reply, new)
    assert got.active == frozenset({"a.service", "multi-user.target"})
    assert got.old.texts["a.service"] == old_text
    assert got.old.texts["b.service"] == svc("b")  # read locally: same store path
    changes = units.classify(got.old, new, got.active)  # b failed; the target wants it
    only(changes, restart=("a.service",), stopped_then_started=("a.service",), start=("b.service",))
    assert unittree.parse_node_reply("K\t\nA?\n", new).active is None


def test_text_lines_say_basis_and_limits(tmp_path: Path) -> None:
    changes = plan(tmp_path, {**BASE, "a.service": svc("1")}, {**BASE, "a.service": svc("2")})
    lines = _units_lines(changes)
    assert lines[0] == "  units to restart: a.service*"
    assert "  units to start: none" in lines
    assert "(* stopped before the activation script, started after it)" in lines[1]
    assert lines[-1].startswith("  units basis: the node's systemd could not be asked")
    assert "not a dry-activate" in lines[-1] and "restartTriggers" in lines[-1]


def test_parsing_quotes_comments_and_sections() -> None:
    data: units.UnitInfo = {}
    text = '# c\n; c\nKey=outside\n[Service]\nA="x y"\nB = 1\nB=2\n[Install]\nWantedBy=z\n'
    units.parse_ini(data, text)
    assert data == {"Service": {"A": ["x y"], "B": ["1", "2"]}}
