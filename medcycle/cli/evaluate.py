"""``medcycle evaluate MODEL --on NAME@TAG --policy FILE``: release gates for CI (exit 1 when a gate fails)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, table


def evaluate(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The version: NAME@vN, NAME@ALIAS or NAME (latest).")],
    on: Annotated[str, typer.Option("--on", help="The dataset version, NAME@TAG.")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Release-gate policy (YAML or JSON).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write report.{json,md,html} here.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Pull the dataset here (default HOME/pulls/evaluation).")
                        ] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="When every gate passes, store the "
                                            "model's monitoring reference (statistics of the validation split).")
                         ] = True,
    json: bool = JsonOpt,
) -> None:
    """Judge a model version on a dataset version: metrics with CIs, subgroups, non-inferiority, regression,
    stress, OOD, reproducibility and load suites. Records the gate report that promotion needs and the cases
    of the review gallery; exits 1 when any gate fails."""
    from medcycle.evaluation.policy import load_policy
    from medcycle.evaluation.run import evaluate as run_evaluation

    cli = state(ctx)
    rules = load_policy(policy)
    platform = cli.platform()
    err = err_console()
    result = run_evaluation(platform, model, on, rules, data_dir=data_dir, actor=cli.actor, via="cli",
                            log=lambda msg: err.print(f"[dim]{msg}[/]"))
    if reference and result.passed:
        from medcycle.errors import MedcycleError
        from medcycle.monitoring.reference import capture

        try:
            capture(platform, result.model, on, split=rules.operating_split, data_dir=data_dir, actor=cli.actor,
                    via="cli", log=lambda msg: err.print(f"[dim]{msg}[/]"))
            err.print(f"[dim]monitoring reference of {result.model} stored (split {rules.operating_split})[/]")
        except MedcycleError as exc:  # the gates passed; the reference is a separate step that can be redone
            err.print(f"[yellow]no monitoring reference stored: {exc.message}[/]"
                      + (f"\n  {exc.hint} (`medcycle monitor reference capture {result.model} --on {on}`)"
                         if exc.hint else ""))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for kind, digest in result.report_digests.items():
            (out / f"report.{kind}").write_bytes(platform.objects.get(digest))
    if json:
        emit_json(result.to_dict())
    else:
        table(f"{result.model} on {result.dataset} ({result.split}, {result.cases} cases)",
              ["gate", "result", "reasons"],
              [(g.name, "pass" if g.passed else "FAIL", "; ".join(g.reasons) or None) for g in result.gates])
        table("Metrics", ["metric", "value", "95% CI"],
              [(k, v["value"], f"{v['ci_low']}–{v['ci_high']}") for k, v in result.metrics.items()])
        for gate in result.gates:
            if gate.name == "load":
                d = gate.data
                console().print(f"load: {d['requests']} cases, p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, "
                                f"{d['throughput']} cases/s")
            if gate.name == "reproducibility":
                same = gate.data.get("same_seed")
                if same:
                    console().print(f"reproducibility: same seed → identical weights {same['identical_weights']}, "
                                    f"identical metrics {same['identical_metrics']}")
                for name, sp in gate.data.get("spread", {}).items():
                    console().print(f"reproducibility: {name} spread {sp['spread']} over "
                                    f"{len(gate.data.get('seeds', []))} seeds")
        verdict = "[green]all gates passed[/]" if result.passed else "[red]a gate failed[/]"
        console().print(f"{verdict} · gate report {result.report_id}"
                        + (f" · reports in {out}" if out is not None else ""))
        if result.cases_list and result.report_id:
            console().print(f"review the {len(result.cases_list)} worst cases: "
                            f"/ui/evaluation/{result.report_id}/review")
    if not result.passed:
        raise typer.Exit(1)
