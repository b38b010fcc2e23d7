"""xnodectl.nix: exact argv (runner patched as seen from the module), JSON parsing, closure diffs,
copy progress; plus one real `nix build` + `path-info` of a fixture flake that needs no nixpkgs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.standin import StandinFlake
from tests.xnodes import NIX_CONF
from xnodectl import nix
from xnodectl.errors import CommandFailed
from xnodectl.process import Result

FLAGS = ["nix", "--extra-experimental-features", "nix-command flakes"]
SYS = "/nix/store/" + "a" * 32 + "-nixos-system-n1-25.11"


class FakeRunner:
    """Stands in for process.arun (unit level); records argv and returns canned output."""

    def __init__(self, stdout: str = "", stderr_lines: tuple[str, ...] = (), code: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.stdout, self.stderr_lines, self.code = stdout, stderr_lines, code

    async def __call__(self, argv: list[str], **kw: Any) -> Result:
        self.calls.append({"argv": list(argv), **kw})
        for line in self.stderr_lines:
            if kw.get("on_stderr_line"):
                kw["on_stderr_line"](line)
        if self.code and kw.get("check", True):
            raise CommandFailed(argv, self.code, "\n".join(self.stderr_lines))
        return Result(tuple(argv), self.code, self.stdout, "", 0.0)


def test_build_argv_and_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    out = json.dumps([{"drvPath": "/nix/store/x.drv", "outputs": {"out": SYS}}])
    fake = FakeRunner(out)
    monkeypatch.setattr("xnodectl.nix.process.arun", fake)
    paths = asyncio.run(nix.build(["/ws#nixosConfigurations.n1.config.system.build.toplevel"]))
    assert paths == [SYS]
    assert fake.calls[0]["argv"] == [
        *FLAGS,
        "build",
        "--no-link",
        "--json",
        "/ws#nixosConfigurations.n1.config.system.build.toplevel",
    ]


def test_build_fail_fast_flags_and_error_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRunner(code=1, stderr_lines=("warning: retrying", "error: unable to download x"))
    monkeypatch.setattr("xnodectl.nix.process.arun", fake)
    with pytest.raises(CommandFailed) as info:
        asyncio.run(nix.build(["a#b"], fail_fast=True))
    assert fake.calls[0]["argv"] == [
        *FLAGS,
        "build",
        "--no-link",
        "--json",
        "--option",
        "download-attempts",
        "1",
        "--option",
        "connect-timeout",
        "3",
        "a#b",
    ]
    assert info.value.stderr == "error: unable to download x"


def test_copy_argv_env_and_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    leaf = "/nix/store/" + "b" * 32 + "-leaf"
    lines = (
        "@nix " + json.dumps({"action": "start", "id": 7, "level": 3, "type": 100,
                              "text": "copying", "fields": [leaf, "local", "ssh://h"]}),
        '@nix {"action":"stop","id":7}',
        "not json",
    )  # fmt: skip
    fake = FakeRunner(stderr_lines=lines)
    monkeypatch.setattr("xnodectl.nix.process.arun", fake)
    done: list[str] = []
    asyncio.run(
        nix.copy("ssh://root@h", [SYS], sshopts="-p 2222", substitute=True, on_path=done.append)
    )
    call = fake.calls[0]
    assert call["argv"] == [
        *FLAGS,
        "copy",
        "--to",
        "ssh://root@h",
        "--log-format",
        "internal-json",
        "-v",
        "--substitute-on-destination",
        SYS,
    ]
    assert call["env"] == {"NIX_SSHOPTS": "-p 2222"}
    assert done == [leaf]


def test_copy_failure_shows_plain_error(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (
        '@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m cannot connect"}',
    )
    monkeypatch.setattr("xnodectl.nix.process.arun", FakeRunner(code=1, stderr_lines=lines))
    with pytest.raises(CommandFailed) as info:
        asyncio.run(nix.copy("ssh://root@h", [SYS], sshopts=""))
    assert info.value.stderr == "error: cannot connect"


def test_path_info_both_json_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    as_list = json.dumps([{"path": SYS, "narSize": 10, "references": []}])
    monkeypatch.setattr("xnodectl.nix.process.arun", FakeRunner(as_list))
    assert asyncio.run(nix.closure(SYS)).nar_size == 10
    as_obj = json.dumps({SYS: {"narSize": 12, "references": []}, "/nix/store/gone": None})
    fake = FakeRunner(as_obj)
    monkeypatch.setattr("xnodectl.nix.process.arun", fake)
    closure = asyncio.run(nix.closure(SYS, store="ssh://h"))
    assert closure.nar_size == 12 and list(closure.paths) == [SYS]
    assert fake.calls[0]["argv"] == [
        *FLAGS,
        "path-info",
        "--json",
        "--recursive",
        "--store",
        "ssh://h",
        SYS,
    ]


def _p(name: str) -> str:
    return f"/nix/store/{'c' * 32}-{name}"


def test_split_name_and_diff() -> None:
    assert nix.split_name(_p("openssl-3.0.13")) == ("openssl", "3.0.13")
    assert nix.split_name(_p("etc")) == ("etc", "")
    new = nix.Closure(_p("sys"), {
        p: nix.PathInfo(p, size, ()) for p, size in
        [(_p("openssl-3.0.14"), 100), (_p("geth-1.14.0"), 1000), (_p("etc"), 5)]})  # fmt: skip
    diff = nix.diff_closures(
        [_p("openssl-3.0.13"), _p("nginx-1.25"), _p("etc")], new, present={_p("etc")}
    )
    assert [c.name for c in diff.added] == ["geth"]
    assert [(c.name, c.before) for c in diff.removed] == [("nginx", "1.25")]
    assert [(c.before, c.after) for c in diff.upgraded] == [("3.0.13", "3.0.14")]
    assert (diff.paths_to_copy, diff.bytes_to_copy) == (2, 1100)


def test_real_build_and_closure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real nix on a stand-in fixture flake (no nixpkgs needed): one build, sizes from path-info."""
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    flake = StandinFlake(tmp_path / "f", ["n1", "n2"], size=3, leaf_bytes=1000).write()
    attrs = [nix.toplevel_attr(flake.directory, n) for n in ("n1", "n2")]
    paths = asyncio.run(nix.build(attrs))
    assert paths[0] == paths[1]  # identical closures are built once
    closure = asyncio.run(nix.closure(paths[0]))
    assert len(closure.paths) == 4 and closure.nar_size > 3000
