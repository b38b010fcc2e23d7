"""Images: owner and SSH key in, the dry run (generated flake, exact command) out, then the real
`xnodectl image build --json` in a child process, its progress streamed, the image downloadable."""

from __future__ import annotations

import dataclasses
import json
import shlex
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from xnodectl import process
from xnodectl.studio import services
from xnodectl.studio.deploys import Run, _pump
from xnodectl.studio.web import form, page, studio


class Builds:
    """The image builds of this studio. Each gets a private directory (0700) for its key file and
    its image; a build is a `Run` whose lines are the CLI's progress (stderr)."""

    def __init__(self) -> None:
        self.builds: dict[str, Run] = {}
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:  # created by the first build only
            self._root = Path(tempfile.mkdtemp(prefix="xnodectl-studio-images-"))
        return self._root

    def interrupt(self) -> None:
        for run in self.builds.values():
            if not run.done and run.proc is not None:
                run.proc.send_signal(signal.SIGINT)

    def start(self, choice: services.ImageChoice) -> Run:
        import asyncio

        services.image_dry_run(choice)  # bad input: the CLI's one-line error, nothing started
        run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{len(self.builds) + 1}"
        directory = self.root / run_id
        directory.mkdir(mode=0o700)
        key_file = None
        if choice.ssh_key:
            key_file = directory / "key.pub"
            key_file.write_text(choice.ssh_key.strip() + "\n")
        argv = services.image_argv(choice, key_file, directory)
        run = Run(run_id, argv, {})
        self.builds[run_id] = run
        loop = asyncio.get_running_loop()
        proc = process.spawn(argv, stdout=process.PIPE, stderr=process.PIPE, new_session=True)
        run.proc = proc
        out: list[bytes] = []

        def log(raw: bytes) -> None:
            line = raw.decode(errors="replace").rstrip("\n")
            loop.call_soon_threadsafe(run.feed, {"type": "log", "line": line})

        def watch() -> None:
            reader = threading.Thread(target=_pump, args=(proc.stdout, out.append), daemon=True)
            reader.start()
            _pump(proc.stderr, log)  # type: ignore[arg-type]  # spawned with stderr=PIPE
            code = proc.wait()
            reader.join()
            if code == 0:
                result = json.loads(b"".join(out))
                loop.call_soon_threadsafe(run.feed, {"type": "report", "image": result})
            loop.call_soon_threadsafe(run.finish, code, "\n".join(
                str(x.get("line", "")) for x in run.lines if x.get("type") == "log"
            ))  # fmt: skip

        threading.Thread(target=watch, name=f"image-{run_id}", daemon=True).start()
        return run


def _builds(request: Request) -> Builds:
    builds: Builds = request.app.state.builds
    return builds


def _choice(request: Request, data: dict[str, str]) -> services.ImageChoice:
    """The form's choice; the store keys the workspace has now (none is created here)."""
    return services.ImageChoice(
        owner=data.get("owner", "").strip(),
        ssh_key=data.get("ssh_key", "").strip(),
        format=data.get("format", "iso"),
        hostname=data.get("hostname", "").strip() or None,
        store_keys=services.image_store_keys(studio(request).ws, build=False),
    )


async def images_page(request: Request) -> Response:
    runs = list(reversed(_builds(request).builds.values()))
    return page(request, "images.html", values={}, formats=services.IMAGE_FORMATS, runs=runs)


async def images_submit(request: Request) -> Response:
    data = await form(request)
    choice = _choice(request, data)
    if data.get("action") == "build":
        services.image_dry_run(choice)  # bad input: the CLI's one-line error, no key created
        keys = services.image_store_keys(studio(request).ws, build=True)
        run = _builds(request).start(dataclasses.replace(choice, store_keys=keys))
        return RedirectResponse(f"/images/{run.id}", status_code=303)
    files, argv, directory = services.image_dry_run(choice)
    command = ["xnodectl", "image", "build", "--owner", choice.owner, "--format", choice.format]
    if choice.ssh_key:
        command += ["--ssh-key", "KEY.pub"]
    if choice.hostname:
        command += ["--hostname", choice.hostname]
    return page(
        request,
        "images.html",
        values=data,
        formats=services.IMAGE_FORMATS,
        runs=[],
        dry_run={"files": files, "argv": shlex.join(argv), "directory": directory},
        command=shlex.join([*command, "--dry-run"]),
    )


def _build(request: Request) -> Run:
    run = _builds(request).builds.get(request.path_params["id"])
    if run is None:
        raise services.UsageError(
            f"no image build '{request.path_params['id'][:40]}' in this studio", hint="see /images"
        )
    return run


async def build_page(request: Request) -> Response:
    run = _build(request)
    command = shlex.join(["xnodectl", *run.argv[3:]])
    return page(request, "image.html", run=run, command=command)


async def build_events(request: Request) -> Response:
    run = _build(request)

    async def stream() -> AsyncIterator[bytes]:
        async for index, item in run.follow(0):
            yield f"id: {index}\nevent: {item['type']}\ndata: {json.dumps(item)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")


async def download(request: Request) -> Response:
    run = _build(request)
    if run.report is None:
        raise services.UsageError("the image is not built (yet)", hint="wait for the build")
    path = Path(run.report["image"]["path"])
    builds = _builds(request)
    if builds.root not in path.parents or not path.is_file():  # only what this studio built
        raise services.UsageError("the image file is gone", hint="build it again")
    return FileResponse(path, filename=path.name, headers={"cache-control": "no-store"})
