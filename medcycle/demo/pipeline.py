"""A pipeline stage: two cached steps that check dataset v2 before anyone trains on it.

``count`` reads the pulled version's manifest and counts items per split and modality; ``check`` fails when a
split lacks images or consensus masks. The steps run as subprocesses on this machine (the local executor), with
the dataset pulled for them; a second run of the demo finds the succeeded run and leaves it.
"""

from __future__ import annotations

import yaml  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy import select

from medcycle.demo.context import ACTOR, PROJECT, Demo

PIPELINE = "chest-xr-checks"
DATASET_VAR = "${MEDCYCLE_DATASET_CHEST_XR}"
COUNT = ("import collections, csv, json, sys; "
         "rows = list(csv.DictReader(open(sys.argv[1] + '/manifest.csv'))); "
         "c = collections.Counter((r['split'] or 'unsplit') + '/' + r['modality'] for r in rows); "
         "json.dump(dict(sorted(c.items())), open('counts.json', 'w'), indent=1); print(dict(sorted(c.items())))")
CHECK = ("import json, sys; c = json.load(open(sys.argv[1])); "
         "splits = sorted({k.split('/')[0] for k in c}); "
         "bad = [s for s in splits if not c.get(s + '/DX') or not c.get(s + '/SEG')]; "
         "json.dump({'splits': splits, 'without_images_or_masks': bad}, open('report.json', 'w')); "
         "print('every split has images and masks' if not bad else 'missing in: ' + ', '.join(bad)); "
         "sys.exit(1 if bad else 0)")


def spec_text(dataset: str) -> str:
    return yaml.safe_dump({
        "pipeline": PIPELINE, "project": PROJECT,
        "description": f"Check {dataset} before training: every split has images and consensus masks.",
        "steps": [
            {"name": "count", "description": "Items per split and modality, from the pulled manifest.",
             "command": ["python", "-c", COUNT, DATASET_VAR], "inputs": {"datasets": [dataset]},
             "outputs": {"counts": "counts.json"}},
            {"name": "check", "description": "Fail when a split lacks images or masks.",
             "command": ["python", "-c", CHECK, "${{ steps.count.outputs.counts }}"],
             "outputs": {"report": "report.json"}},
        ]}, sort_keys=False)


def check_pipeline(demo: Demo) -> None:
    from medcycle.pipelines.runner import run_pipeline
    from medcycle.pipelines.spec import parse_pipeline
    from medcycle.pipelines.tables import PipelineRunRow

    assert demo.v2 is not None
    demo.begin(f"A pipeline checks {demo.v2} before training (cached steps, run as subprocesses)")
    with demo.platform.session(write=False) as session:
        done = session.scalar(select(PipelineRunRow.id).where(PipelineRunRow.pipeline == PIPELINE,
                                                              PipelineRunRow.status == "succeeded").limit(1))
    if done is not None:
        demo.say(f"pipeline {PIPELINE} succeeded before (run {done[:12]})")
        run_id = str(done)
    else:
        spec = parse_pipeline(spec_text(demo.v2), source=f"{PIPELINE}.yaml", base=demo.home)
        detail = run_pipeline(demo.platform, spec, actor=ACTOR, via="demo",
                              on_event=lambda e: demo.say(f"step {e.step}: {e.state.value}"))
        run_id = detail.run.id
        demo.say(f"pipeline {PIPELINE}: {detail.run.status.value}" +
                 (f" ({detail.run.error})" if detail.run.error else ""))
    demo.look(f"Pipeline {PIPELINE}: its steps, logs and outputs", f"/ui/pipelines/{run_id}")
    demo.look("Pipelines", "/ui/pipelines")
    demo.done()

