"""`loraswap experiments`: A/B experiments between adapter versions behind a public alias."""

from __future__ import annotations

from typing import Any

import click

from loraswap.cli.common import (
    pass_settings,
    print_json,
    print_table,
    ref_weight,
    router_errors,
    router_session,
)
from loraswap.settings import Settings

__all__ = ["command"]


_errors = router_errors


def _parse_variant(text: str) -> tuple[str, int]:
    return ref_weight(text, int, "support@3=50")


def _variants(values: tuple[str, ...]) -> list[tuple[str, int]]:
    return [_parse_variant(v) for v in values]


def _guardrails(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for value in values:
        key, sep, number = value.partition("=")
        try:
            out[key.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"expected LIMIT=NUMBER, got {value!r}", param_hint="--guardrail")
    return out


def _show(exp: Any) -> None:
    rows = [("name", exp.name), ("alias", exp.alias), ("status", exp.status),
            ("metric", exp.metric), ("control", exp.control),
            ("retention", "on" if exp.retention else "off")]
    if exp.metric == "score":
        rows.append(("score range", f"{exp.score_min:g}..{exp.score_max:g}"))
    if exp.labels:
        rows.append(("labels", ", ".join(exp.labels)))
    if exp.mode == "bandit":
        rows.append(("mode", f"bandit (Thompson sampling every {exp.bandit_interval_s:g} s, "
                             f"min share {exp.min_share:.0%})"))
    for key, limit in exp.guardrails.items():
        rows.append(("guardrail", f"{key} {limit:g}"))
    for variant, reason, _at in exp.cut:
        rows.append(("cut", f"{variant}: {reason}"))
    data = exp.as_dict()
    for key in ("created_at", "started_at", "stopped_at", "weights_changed_at"):
        if data[key]:
            rows.append((key.replace("_", " "), data[key]))
    total = sum(v.weight for v in exp.variants)
    for v in exp.variants:
        over = f"  ({v.serves} with a system prompt)" if v.serves else ""
        rows.append(("variant", f"{v.ref}  weight {v.weight} ({v.weight / total:.0%}){over}"))
    if exp.auto_promote:
        rows.append(("auto-promote", "the winner, once the sequential test decides"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.group("experiments")
def command() -> None:
    """A/B experiments: an alias whose requests are split between adapter versions."""


@command.command("create")
@click.argument("alias")
@click.option("--variant", "variants", multiple=True, required=True, metavar="REF=WEIGHT",
              help="An adapter (name@version, or name for its latest version) or 'base', "
              "with an integer weight. Two or more.")
@click.option("--name", default=None, help="Experiment name (default: the alias, or alias-N).")
@click.option("--control", default=None, help="The variant lifts are measured against "
              "(default: the first).")
@click.option("--metric", type=click.Choice(["thumbs", "score"]), default="thumbs",
              show_default=True)
@click.option("--retention/--no-retention", default=False, show_default=True,
              help="Keep prompts and outputs of this experiment's requests (needed for export).")
@click.option("--score-range", nargs=2, type=float, default=(1.0, 5.0), show_default=True)
@click.option("--label", "labels", multiple=True, help="Allowed categorical labels.")
@click.option("--description", default="")
@click.option("--salt", default=None, help="Assignment salt (default: random).")
@click.option("--bandit", is_flag=True,
              help="Thompson sampling sets the weights on a schedule (thumbs metric); users "
                   "already assigned keep their variant.")
@click.option("--min-share", type=float, default=0.1, show_default=True,
              help="Bandit: the least share of new users any variant gets.")
@click.option("--bandit-interval", type=float, default=60.0, show_default=True,
              help="Bandit: seconds between weight updates (by the running server).")
@click.option("--guardrail", "guardrails", multiple=True, metavar="LIMIT=NUMBER",
              help="Cut a variant that breaches this limit: latency_p95_ms, error_rate, "
                   "negative_rate, tokens_per_request; min_requests before a verdict (default 20).")
@click.option("--prompt-variant", "prompt_variants", multiple=True, nargs=4,
              metavar="NAME REF WEIGHT PROMPT",
              help="A prompt variant: REF (e.g. 'base') answering with the system prompt "
                   "PROMPT first, under the key NAME.")
@click.option("--auto-promote", is_flag=True,
              help="End by promoting the winner to the alias once the sequential test decides "
                   "(checked by the running server).")
@click.option("--start", "start_now", is_flag=True, help="Start it right away.")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def create(settings: Settings, alias: str, variants: tuple[str, ...], name: str | None,
           control: str | None, metric: str, retention: bool, score_range: tuple[float, float],
           labels: tuple[str, ...], description: str, salt: str | None, bandit: bool,
           min_share: float, bandit_interval: float, guardrails: tuple[str, ...],
           prompt_variants: tuple[tuple[str, str, str, str], ...], auto_promote: bool,
           start_now: bool, as_json: bool) -> None:
    """Create an experiment on ALIAS (a draft until started)."""
    specs: list[tuple] = list(_variants(variants))
    for key, ref, weight, prompt in prompt_variants:
        specs.append((ref, _parse_variant(f"{ref}={weight}")[1], key, prompt))
    with router_session(settings) as router:
        exp = router.create(
            alias=alias, variants=specs, name=name, control=control, auto_promote=auto_promote,
            metric=metric, retention=retention, score_min=score_range[0],
            score_max=score_range[1], labels=list(labels), description=description, salt=salt,
            mode="bandit" if bandit else "fixed", min_share=min_share,
            bandit_interval_s=bandit_interval, guardrails=_guardrails(guardrails))
        if start_now:
            exp = router.start(exp.name)
        print_json(exp.as_dict()) if as_json else _show(exp)


def _transition(action: str) -> None:
    @command.command(action)
    @click.argument("name")
    @pass_settings
    @_errors
    def run(settings: Settings, name: str) -> None:
        with router_session(settings) as router:
            exp = getattr(router, action)(name)
        click.echo(f"{exp.name}: {exp.status}")

    run.help = {
        "start": "Start (or resume) NAME: its alias is served and split between variants.",
        "pause": "Pause NAME: everyone gets the control; requests are not counted.",
        "stop": "Stop NAME for good: the alias serves its pointer again (the control, unless "
                "set otherwise); data stays for analysis. `promote` stops it with a winner.",
    }[action]


for _action in ("start", "pause", "stop"):
    _transition(_action)


@command.command("promote")
@click.argument("name")
@click.option("--variant", default=None,
              help="The variant to promote (default: the winner the sequential test decided; "
                   "refused while it has not).")
@click.option("--reason", default=None, help="Why, for the alias history.")
@pass_settings
@_errors
def promote(settings: Settings, name: str, variant: str | None, reason: str | None) -> None:
    """End NAME by pointing its alias at the winning variant (recorded in the alias history)."""
    with router_session(settings) as router:
        exp = router.promote(name, variant, reason=reason)
        alias = router.get_alias(exp.alias)
    click.echo(f"{exp.name}: {exp.status}; alias {alias.name} -> {alias.served()}")


@command.command("weights")
@click.argument("name")
@click.option("--variant", "variants", multiple=True, required=True, metavar="REF=WEIGHT")
@pass_settings
@_errors
def weights(settings: Settings, name: str, variants: tuple[str, ...]) -> None:
    """Change NAME's weights (one REF=WEIGHT per variant).

    Units whose bucket now falls in another variant's range switch to it; all
    others keep their variant.
    """
    with router_session(settings) as router:
        _show(router.set_weights(name, _variants(variants)))


@command.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def list_(settings: Settings, as_json: bool) -> None:
    """List experiments."""
    with router_session(settings, with_registry=False) as router:
        exps = router.list()
    if as_json:
        print_json([e.as_dict() for e in exps])
        return
    print_table(["name", "alias", "status", "metric", "variants"],
                [(e.name, e.alias, e.status, e.metric,
                  " ".join(f"{v.ref}={v.weight}" for v in e.variants)) for e in exps])


@command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def show(settings: Settings, name: str, as_json: bool) -> None:
    """Show one experiment."""
    with router_session(settings, with_registry=False) as router:
        exp = router.get(name)
    print_json(exp.as_dict()) if as_json else _show(exp)


@command.command("delete")
@click.argument("name")
@pass_settings
@_errors
def delete(settings: Settings, name: str) -> None:
    """Delete an experiment that never served a request."""
    with router_session(settings, with_registry=False) as router:
        router.delete(name)
    click.echo(f"deleted {name}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


@command.command("results")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the results page (HTML with the chart) to this file.")
@pass_settings
@_errors
def results(settings: Settings, name: str, as_json: bool, html_out: str | None) -> None:
    """Per-variant results of NAME: rates, intervals, lift, p-value, SRM check."""
    with router_session(settings, with_registry=False) as router:
        data = router.results(name)
    if html_out:
        from pathlib import Path

        from router.results_page import render_results_page

        Path(html_out).write_text(render_results_page(data), encoding="utf-8")
    if as_json:
        print_json(data)
        return
    thumbs = data["metric"] == "thumbs"
    key = "thumbs" if thumbs else "score"
    fmt = _pct if thumbs else _num
    rows = []
    for v in data["variants"]:
        m, lift = v[key], v["lift"] or {}
        value = m["rate"] if thumbs else m["mean"]
        ci = m["ci95"]
        rows.append((
            v["variant"] + (" (control)" if v["is_control"] else ""), v["requests"], v["users"],
            v["feedback"], _pct(v["feedback_rate"]), m["n"], fmt(value),
            f"{fmt(ci[0])}..{fmt(ci[1])}" if ci else "-", fmt(lift.get("absolute")),
            _pct(lift.get("relative")), _num(lift.get("p_value")),
            _pct(lift.get("chance_to_win")),
            f"{_num(v['latency_ms']['p50'], '.0f')}/{_num(v['latency_ms']['p95'], '.0f')}",
            f"{v['tokens']['prompt']}/{v['tokens']['completion']}",
        ))
    exp = data["experiment"]
    click.echo(f"{exp['name']} (alias {exp['alias']}, {exp['status']}), metric {data['metric']}")
    print_table(["variant", "requests", "users", "feedback", "fb rate", "n",
                 "positive" if thumbs else "mean", "95% ci", "abs lift", "rel lift", "p",
                 "p(win)", "lat p50/p95 ms", "tokens in/out"], rows)
    srm = data["srm"]
    if srm["p_value"] is None:
        click.echo("SRM: not enough units yet")
    else:
        verdict = "MISMATCH (do not trust the lift)" if srm["flagged"] else "ok"
        click.echo(f"SRM: {verdict}: chi2={_num(srm['chi2'] if srm['chi2'] != 'inf' else None)} "
                   f"p={_num(srm['p_value'])} units={srm['units']}")
    for v in data["variants"]:
        lift = v["per_user_lift"]
        if lift is None:
            continue
        seq = lift["sequential"] or {}
        cs = seq.get("confidence_sequence")
        click.echo(
            f"decision {v['variant']}: {lift['decision']} (per user: {v['per_user']['users']} users, "
            f"lift {fmt(lift['absolute'])}, 95% confidence sequence "
            f"{f'{fmt(cs[0])}..{fmt(cs[1])}' if cs else '-'}, always-valid p "
            f"{_num(seq.get('p_value'))}, MDE now {fmt(seq.get('mde'))})")
