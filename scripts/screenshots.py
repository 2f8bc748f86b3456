#!/usr/bin/env python
"""Screenshots of the Dagster UI for the README, taken from a throwaway deployment of the examples.

    .venv/bin/python scripts/screenshots.py [--out docs] [--port N] [--keep-home]

It refreshes the bundled example repo into a temporary DAGSTER_HOME, ELT_STATE_DIR and
ELT_WAREHOUSE, materializes every example asset in process (as scripts/demo.py does), starts
`dagster-webserver` on that instance, and has headless Chromium take:

- asset-graph.png: /asset-groups?expanded=<every group>, the global asset lineage
- asset-github-issues.png: /assets/github_issues/issues?view=events, the dlt asset's latest
  materialization with its metadata
- asset-csv-orders.png: /assets/csv_orders/customers?view=events, the same for a Sling asset

Chromium is driven over the DevTools protocol, not with `--screenshot --virtual-time-budget`:
the UI lays the graph out in a web worker, which virtual time does not wait for, and the graph's
settings (orientation, node rows) live in the page's localStorage. Each picture is taken once the
page shows what it is for and its text has stopped changing, in a window as tall as its content.
The webserver and Chromium are always stopped, and the temporary folder is removed unless
--keep-home. Exit codes: 0 done, 1 a step failed, 2 no Chromium (Debian's `chromium` package).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The process-group handling and the scrubbed environment of the e2e tests.
from tests.e2e_helpers import Proc, clean_env, free_port, start  # noqa: E402

BIN = Path(sys.executable).parent
LOCATION = "elt_repo"
# (asset key, file): the assets whose latest materialization is pictured.
ASSET_SHOTS = (
    (("github_issues", "issues"), "asset-github-issues.png"),
    (("csv_orders", "customers"), "asset-csv-orders.png"),
)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Written to the page's localStorage before the UI starts: no "Join the Dagster community"
# dialog, a left-to-right graph, and asset nodes showing their latest event and kinds.
LOCAL_STORAGE = {
    "communityNux": "1",
    "asset-graph-direction": "horizontal",
    "asset-node-facets": ["latest-event", "kind-tag"],
}
# Localhost only: never through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failed(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Shot:
    what: str
    path: str  # URL path on the webserver
    ready: str  # JS: true once the page shows what the picture is for
    fit: str  # JS: the CSS height (px) of a window that shows all of it
    complete: str = "true"  # JS: true if the fitted window shows everything it should
    width: int = 1600
    min_height: int = 1000
    max_height: int = 2400
    reload_on_resize: bool = False  # the graph centers itself only when it loads


# --------------------------------------------------------------------------- helpers


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:3.0f}s] {message}", flush=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; Failed naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Failed:
            raise
        except Exception as exc:  # not up yet, or reloading
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send stdout and stderr of this process and its children to `path` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


# --------------------------------------------------------------------------- the instance


def deployment_env(tmp: Path) -> dict[str, str]:
    """The calling environment without ELT_/DAGSTER_/tool settings, pointed at `tmp`."""
    env = clean_env({})
    project = tmp / "project"  # no .env and no elt.yaml: the defaults, i.e. the bundled examples
    project.mkdir()
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    env.update(
        DAGSTER_HOME=str(home),
        ELT_PROJECT_DIR=str(project),
        ELT_STATE_DIR=str(tmp / "state"),
        ELT_WAREHOUSE=str(tmp / "warehouse.duckdb"),
        DAGSTER_DISABLE_TELEMETRY="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def materialize_examples(env: Mapping[str, str], log_path: Path) -> None:
    """Refresh the example repo and materialize every asset into the instance, in process."""
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))  # this checkout's elt_repo, whatever the venv has installed
    from elt_repo.refresh import refresh
    from elt_repo.settings import load_settings

    with output_to(log_path):
        result = refresh(load_settings())
    if result.error:
        raise Failed(f"refreshing the example repo failed: {result.error}")
    manifest = result.manifest
    log(f"  commit {(manifest.commit or '?')[:12]}: {len(manifest.pipelines)} pipelines")
    for error in manifest.errors:  # the UI shows them too, as assets in elt_config_errors
        log(f"  warning: {error}")

    # As in scripts/demo.py: dagster-sling warns about every run that has run config.
    logging.getLogger("dagster.builtin").setLevel(logging.ERROR)
    with output_to(log_path):
        # Imported only now: the code location loads the manifest just written.
        from dagster import DagsterInstance

        import elt_repo.definitions as location
        from elt_repo.cli.demo import materialize_all

        with DagsterInstance.get() as instance:
            outcomes = materialize_all(location.defs, location.manifest, instance)
    failed = [
        o.op + (f" [{o.partition}]" if o.partition else "") for o in outcomes if not o.success
    ]
    if not outcomes or failed:
        raise Failed(f"materializing the examples failed: {', '.join(failed) or 'nothing ran'}")
    log(f"  {len(outcomes)} runs succeeded")


# --------------------------------------------------------------------------- processes


class Process(Proc):
    """A process group of the throwaway deployment (tests/e2e_helpers.py's, stopped alike)."""

    @classmethod
    def start(cls, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> Process:
        proc = start(log_path.stem, argv, env, log_path.parent, cwd=ROOT)
        return cls(name, proc.popen, proc.log_path)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise Failed(f"{self.name} exited with code {self.popen.returncode}")


# --------------------------------------------------------------------------- the webserver


def graphql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with HTTP.open(request, timeout=30) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(json.dumps(payload["errors"])[:500])
    return payload["data"]


LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
ASSETS_QUERY = """{ assetNodes { assetKey { path } groupName
    repository { location { name } } } }"""


def wait_for_location(server: Process, url: str) -> dict[tuple[str, ...], str | None]:
    """Wait until the webserver answers and the code location has loaded; asset key -> group."""

    def answers() -> bool:
        server.check_alive()
        return bool(graphql(url, "{ version }"))

    wait_for(answers, 120, "dagster-webserver to answer")

    def loaded() -> bool:
        server.check_alive()
        workspace = graphql(url, LOCATION_QUERY)["workspaceOrError"]
        entry = next(
            (e for e in workspace.get("locationEntries") or [] if e["name"] == LOCATION), None
        )
        if entry is None or entry["loadStatus"] != "LOADED":
            return False
        loaded = entry["locationOrLoadError"]
        if loaded["__typename"] != "RepositoryLocation":
            raise Failed(f"the code location {LOCATION} failed to load: {loaded.get('message')}")
        return True

    wait_for(loaded, 120, f"the code location {LOCATION} to load")
    return {
        tuple(n["assetKey"]["path"]): n["groupName"]
        for n in graphql(url, ASSETS_QUERY)["assetNodes"]
        if n["repository"]["location"]["name"] == LOCATION
    }


# --------------------------------------------------------------------------- Chromium


class Browser:
    """Headless Chromium with one tab, driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path, log_path: Path) -> None:
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1600,1000",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks one and writes it to the profile
            "about:blank",
        ]
        self.process = Process.start("chromium", argv, os.environ, log_path)
        self.ws: Any = None
        self._exit = contextlib.ExitStack()  # holds the websocket
        self._id = 0
        try:
            self._connect(profile / "DevToolsActivePort")
        except BaseException:
            self.close()
            raise

    def _connect(self, port_file: Path) -> None:
        def port() -> str | None:
            self.process.check_alive()
            lines = port_file.read_text().split() if port_file.exists() else []
            return lines[0] if lines else None

        devtools = f"http://127.0.0.1:{wait_for(port, 30, 'Chromium to start')}"
        with HTTP.open(f"{devtools}/json/list", timeout=10) as response:
            pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
        if not pages:
            raise Failed("Chromium opened no tab to drive")
        from websockets.sync.client import connect  # installed with dagster-webserver

        url = pages[0]["webSocketDebuggerUrl"]
        self.ws = self._exit.enter_context(connect(url, max_size=None, proxy=None))
        self.call("Page.enable")
        preset = "".join(
            f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
            for k, v in LOCAL_STORAGE.items()
        )
        self.call("Page.addScriptToEvaluateOnNewDocument", source=preset)

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._id:  # anything else is an event: not needed
                if "error" in message:
                    raise Failed(f"Chromium: {method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "JS exception"))
        return result["result"].get("value")

    def resize(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def settle(self, ready: str, timeout: float) -> None:
        """Wait until `ready` holds and the page's text has not changed for 2 seconds.

        Digits are left out of the comparison: "12 seconds ago" changes every second.
        """
        seen: dict[str, Any] = {"text": None, "since": 0.0}

        def check() -> bool:
            if not self.evaluate(ready):
                seen["text"] = None
                return False
            text = self.evaluate("document.body.innerText.replace(/[0-9]+/g, '#')")
            if text != seen["text"]:
                seen.update(text=text, since=time.monotonic())
                return False
            return time.monotonic() - seen["since"] >= 2.0

        wait_for(check, timeout, "the page to render")

    def shoot(self, url: str, shot: Shot, out: Path, timeout: float = 90) -> tuple[int, int]:
        """Load `url`, wait for it, fit the window's height to it, and save a PNG."""
        height = shot.min_height
        self.resize(shot.width, height)
        self.call("Page.navigate", url=url)
        try:
            self.settle(shot.ready, timeout)
            wanted = self.evaluate(shot.fit) or height
            fitted = max(shot.min_height, min(shot.max_height, int(wanted)))
            if fitted != height:
                height = fitted
                self.resize(shot.width, height)
                if shot.reload_on_resize:
                    self.call("Page.navigate", url=url)
                self.settle(shot.ready, timeout)
            if not self.evaluate(shot.complete):
                raise Failed(f"the page does not show all of it at {shot.width}x{height}")
        except Failed as exc:
            failed = Path(tempfile.gettempdir()) / f"{out.stem}.failed.png"
            self.save(failed)
            raise Failed(f"{shot.what} ({url}): {exc}; it showed: {shown(failed)}") from None
        self.save(out)
        return shot.width, height

    def save(self, path: Path) -> None:
        path.write_bytes(
            base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._exit.close()
        self.process.stop()


# --------------------------------------------------------------------------- the pictures

# The graph's viewport element and the graph inside it (scaled by a CSS transform).
_GRAPH = """const pane = document.querySelector('[data-svg-viewport]');
const svg = pane && pane.querySelector('svg[class*=svgContainer]');"""
# A window that shows the whole graph at the scale the UI picked (fit to width, at most 1).
GRAPH_FIT = f"""(() => {{ {_GRAPH}
  if (!svg) return 0;
  const scale = new DOMMatrix(getComputedStyle(svg.parentElement).transform).a || 1;
  return window.innerHeight - pane.clientHeight + svg.height.baseVal.value * scale + 48; }})()"""
# A window tall enough for the scrolling panel that holds the "Metadata" heading.
METADATA_FIT = """(() => {
  const head = [...document.querySelectorAll('body *')].find(
    (e) => e.children.length === 0 && e.textContent.trim() === 'Metadata');
  let el = head;
  while (el && !(el.scrollHeight > el.clientHeight + 1 &&
                 /(auto|scroll)/.test(getComputedStyle(el).overflowY))) el = el.parentElement;
  if (!el) return window.innerHeight;
  return window.innerHeight - el.clientHeight + el.scrollHeight + 24; })()"""


def graph_drawn(names: list[str] | None = None) -> str:
    """The graph is drawn with latest events loaded (and a node for each of `names`)."""
    return f"""(() => {{ {_GRAPH}
  if (!svg) return false;
  const text = svg.textContent;
  return text.includes('ago') && {json.dumps(names or [])}.every((n) => text.includes(n)); }})()"""


def text_ready(texts: list[str]) -> str:
    """Every one of `texts` is on the page (case-insensitive)."""
    lower = json.dumps([t.lower() for t in texts])
    return f"{lower}.every((t) => document.body.innerText.toLowerCase().includes(t))"


def plan(assets: Mapping[tuple[str, ...], str | None]) -> list[tuple[str, Shot]]:
    """(file, shot) for the graph and each pictured asset."""
    groups = sorted({g for g in assets.values() if g})
    shots = [
        (
            "asset-graph.png",
            Shot(
                "the asset graph",
                "/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in groups),
                graph_drawn(),  # nodes outside the window are not drawn
                GRAPH_FIT,
                complete=graph_drawn(sorted({k[-1] for k in assets})),
                width=1280,
                reload_on_resize=True,
            ),
        )
    ]
    for key, file in ASSET_SHOTS:
        if key not in assets:
            raise Failed(f"no asset {'/'.join(key)} in the code location; it has {sorted(assets)}")
        # The Events tab opens on the latest materialization, its metadata beside the list.
        ready = text_ready(["materialized in run", "Metadata", "dagster/row_count", "elt/commit"])
        shots.append(
            (
                file,
                Shot(
                    f"the asset {'/'.join(key)}",
                    f"/assets/{'/'.join(key)}?view=events",
                    ready,
                    METADATA_FIT,
                ),
            )
        )
    return shots


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Screenshot the Dagster UI (the asset graph and two assets' latest "
        "materialization) from a throwaway deployment of the bundled examples, for the README.",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="folder for the PNGs (default: docs/)"
    )
    parser.add_argument("--port", type=int, default=0, help="webserver port (default: a free one)")
    parser.add_argument(
        "--keep-home",
        action="store_true",
        help="keep the temporary DAGSTER_HOME, state, warehouse and logs, and say where",
    )
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        print(
            f"error: no Chromium found ($CHROMIUM, or {', '.join(CHROMIUM_NAMES)} on PATH). "
            "Install Debian's `chromium` package: apt-get install -y chromium",
            file=sys.stderr,
        )
        return 2

    out = args.out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="elt_screenshots_"))
    server: Process | None = None
    browser: Browser | None = None
    step_log = tmp / "materialize.log"  # the log that explains a failure of the current step
    try:
        out.mkdir(parents=True, exist_ok=True)
        env = deployment_env(tmp)
        log("1/3 materializing the examples")
        materialize_examples(env, step_log)

        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        log(f"2/3 starting dagster-webserver on {url}")
        step_log = tmp / "webserver.log"
        server = Process.start(
            "dagster-webserver",
            [str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml")]
            + ["-h", "127.0.0.1", "-p", str(port)],
            env,
            step_log,
        )
        assets = wait_for_location(server, url)
        log(f"  {len(assets)} assets loaded")

        log(f"3/3 screenshots with {chromium}")
        step_log = tmp / "chromium.log"
        browser = Browser(chromium, tmp / "chromium_profile", step_log)
        step_log = tmp / "webserver.log"
        for file, shot in plan(assets):
            path = out / file
            width, height = browser.shoot(url + shot.path, shot, path)
            size = path.stat().st_size // 1024
            log(f"  {shown(path)}  {width}x{height}  {size} KB  ({shot.path})")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A Failed says what failed; anything else is unforeseen and gets its traceback.
        detail = str(exc) if isinstance(exc, Failed) else traceback.format_exc()
        print(f"error: {detail}", file=sys.stderr)
        if step_log.is_file() and step_log.stat().st_size:
            print(f"--- last lines of {step_log.name}:\n{tail(step_log, 20)}", file=sys.stderr)
        return 1
    finally:
        if browser is not None:
            browser.close()
        if server is not None:
            server.stop()
        if args.keep_home:
            log(f"kept {tmp} (DAGSTER_HOME={tmp / 'dagster_home'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
