"""`loraswap status` and `loraswap scale`: a running server's engines, seen and resized.

Both ask the server over HTTP (`GET /admin/engine`, `POST /admin/engine/replicas`), so they
work from any machine with an admin key. `status` shows the same view in both modes: one
engine for `loraswap serve`, every replica for `loraswap serve --replicas N`.
"""

from __future__ import annotations

import click

from loraswap.cli.common import fail, pass_settings, print_json, print_table
from loraswap.settings import Settings

__all__ = ["command", "scale_command"]


def _url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def _call(settings: Settings, url: str | None, key: str | None, method: str, path: str,
          **kw: object) -> dict:
    import httpx

    base = (url or _url(settings)).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.request(method, f"{base}{path}", headers=headers, timeout=60, **kw)
    except httpx.HTTPError as exc:
        fail(f"no server answered at {base}: {exc}")
    if r.status_code >= 300:
        fail(f"{base}{path} answered {r.status_code}: {r.text[:300]}")
    return {"base": base, **r.json()}


def _server_options(func):
    func = click.option("--key", envvar="LORASWAP_ADMIN_KEY", help="An admin API key (where "
                        "keys are configured); also $LORASWAP_ADMIN_KEY.")(func)
    return click.option("--url", help="The server's base URL.  [default: from host and "
                        "port]")(func)


@click.command("status")
@_server_options
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@pass_settings
def command(settings: Settings, url: str | None, key: str | None, as_json: bool) -> None:
    """Print the engine view of a running server: each engine replica, its adapters, its load."""
    view = _call(settings, url, key, "GET", "/admin/engine")
    base = view.pop("base")
    if as_json:
        print_json(view)
        return
    replicas = view.get("replicas")
    plural = "" if replicas is not None and len(replicas) == 1 else "s"
    mode = (f"{len(replicas)} engine replica{plural} (Ray Serve)" if replicas is not None
            else "one engine (single process)")
    click.echo(f"{base}: base {view['base_model']}, {mode}, adapter capacity "
               f"{view['adapter_capacity']} per engine, {view['running_requests']} requests "
               "running")
    if replicas is None:
        replicas = [{"replica": "engine", "node": "-", "pid": "-", "running": True,
                     "running_requests": view["running_requests"], "adapter_loads": "-",
                     "loaded": view["loaded"], "seen_s_ago": 0}]
    print_table(["replica", "node", "pid", "up", "requests", "loads", "holds"],
                [[r["replica"], r["node"], r["pid"], "yes" if r["running"] else "no",
                  r["running_requests"], r["adapter_loads"], ", ".join(r["loaded"]) or "-"]
                 for r in replicas])
    ingresses = view.get("ingresses")
    if ingresses:
        click.echo("")
        print_table(["ingress", "node", "pid", "leads", "requests"],
                    [[i["ingress"], i["node"], i["pid"], "yes" if i["leader"] else "no",
                      i["requests"]] for i in ingresses])


@click.command("scale")
@click.argument("replicas", type=click.IntRange(1, 1024))
@_server_options
@pass_settings
def scale_command(settings: Settings, replicas: int, url: str | None, key: str | None) -> None:
    """Set a scaled-out server's engine replica count, while it serves.

    New replicas take requests once their engine is ready; removed ones stop taking
    requests and finish the ones they hold. Not with autoscaling (min/max replicas)."""
    view = _call(settings, url, key, "POST", "/admin/engine/replicas",
                 json={"replicas": replicas})
    plural = "" if view["replicas"] == 1 else "s"
    click.echo(f"{view['base']}: scaling to {view['replicas']} engine replica{plural} "
               f"({view['current']} now); `loraswap status` shows them join or leave")
