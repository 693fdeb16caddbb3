"""Model stages: a hypothesis in the register, two training runs that name it, release gates, the registry.

The model segments lung lesions on the radiographs of dataset v2 (its consensus masks). The first run is a
short baseline, the second trains twice as long (both with a cosine learning-rate decay). Both are tracked
(params, metrics, the weights by digest, a validation image with its predicted mask) and linked to the
hypothesis and the exact dataset version. Each is registered as a version of ``chest-lesion``, judged by the
release gates (Dice with a bootstrap interval, per-source subgroups, stress, OOD, non-inferiority against
``production``, the pinned regression case), given its card, and promoted: v1 first, then v2 — which makes a
rollback possible later.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import select

from medcycle.demo.context import ACTOR, MODEL, PRODUCTION, PROJECT, Demo

HYPOTHESIS = "Reader-consensus masks train a lesion segmenter that works on every scanner"
OTHER_HYPOTHESES = (
    ("Nodule volumetry on low-dose CT", "killed",
     "Only a dozen CT volumes and no radiologist time for 3D masks this quarter."),
    ("Triage of normal chest radiographs", None, None),
)
CARD = {
    "intended_use": "Second reader for lung lesions on frontal (PA) chest radiographs of adults: outlines "
                    "suspected lesions for a radiologist, who makes every decision.",
    "out_of_scope_use": "Not for CT, MRI, lateral views or children; not a replacement for a radiologist's "
                        "read; not for images the OOD gate refuses.",
    "limitations": "Trained on synthetic radiographs from four scanners (demo data); lesions smaller than about "
                   "5% of the image width are missed more often.",
    "ethical_considerations": "Trained only on de-identified data; performance is reported per source and "
                              "manufacturer so a site that does worse is seen.",
    "owners": ["demo-ml-team"],
    "licence": "Internal use only",
}
CONTRACT = {"input": {"modality": ["DX"], "body_part": ["CHEST"], "view": "PA"},
            "output": {"classes": ["lesion"], "mask": True},
            "header_rules": {"modality": ["DX", "CR"], "body_part": ["CHEST"], "allow_missing": ["body_part"]}}


def _hypothesis_row(session: Any, title: str) -> Any:
    from medcycle.hypotheses.tables import HypothesisRow

    return session.scalar(select(HypothesisRow).where(HypothesisRow.title == title).order_by(HypothesisRow.id)
                          .limit(1))


def hypothesis(demo: Demo) -> None:
    """The hypothesis the runs test (with its questions answered and scored), beside two other ideas."""
    from medcycle.hypotheses import answers, decisions, lifecycle, links, register, scoring, votes
    from medcycle.hypotheses.inputs import ref_of

    demo.begin("A hypothesis in the register, scored and voted on")
    with demo.platform.session() as session:
        row = _hypothesis_row(session, HYPOTHESIS)
        created = row is None
        if row is None:
            row = register.create(session, HYPOTHESIS, project=PROJECT, actor=ACTOR, description=(
                "Masks drawn by three readers and combined with STAPLE are good enough to train a small U-Net whose "
                "Dice holds on every scanner of the network."))
            ref = ref_of(row.id)
            for key, text, confidence in (
                    ("problem", "Missed lung lesions are a leading cause of delayed diagnosis.", "high"),
                    ("data_available", "Radiographs from four scanners at three clinics, de-identified.", "high"),
                    ("expert_access", "Three readers and a senior for adjudication.", "medium"),
                    ("baseline_quality", "A U-Net reaches Dice 0.8 on the consensus masks.", "medium"),
                    ("rollout_quality", "Dice 0.7 overall, 0.3 on every source, non-inferior to production.",
                     "medium")):
                answers.answer(session, ref, key, text, confidence=confidence, actor=ACTOR)
            scoring.score(session, ref, ice=scoring.Ice(8, 6, 7), rice=scoring.Rice(4000, 2, 70, 3), actor=ACTOR)
            for voter, value in (("dr-lead", "up"), ("demo-ml-team", "up"), ("dr-novice", "down")):
                votes.vote(session, ref, value, voter=voter, actor=ACTOR)
            decisions.decide(session, ref, "go", by="head-of-radiology", note="Worth a quarter.", actor=ACTOR)
            lifecycle.explore(session, ref, note="dataset v2 is ready", actor=ACTOR)
            for title, status, reason in OTHER_HYPOTHESES:
                other = register.create(session, title, project=PROJECT, actor=ACTOR)
                scoring.score(session, ref_of(other.id), ice=scoring.Ice(5, 3, 4) if status else scoring.Ice(6, 5, 8),
                              actor=ACTOR)
                if status == "killed" and reason:
                    lifecycle.close(session, ref_of(other.id), "killed", reason, actor=ACTOR)
        ref = ref_of(row.id)
        if demo.v2 is not None:
            links.link(session, ref, "dataset", demo.v2, note="the data it is tested on", actor=ACTOR)
    demo.hypothesis = ref
    done = "registered, answered, scored (ICE 336), voted" if created else "already in the register"
    demo.say(f"{ref} '{HYPOTHESIS}': {done}; status exploring; two other ideas beside it, one killed with its reason")
    demo.look("Hypothesis register: ICE/RICE, votes, the HiPPO's call side by side", "/ui/hypotheses")
    demo.look(f"{ref}: questions, status history, linked runs and data", f"/ui/hypotheses/{ref}")
    demo.done()


def _config(demo: Demo, name: str, epochs: int, width: int, scheduler: str) -> Any:
    from medcycle.training.config import validate

    p = demo.profile
    return validate({
        "task": "segmentation-2d",
        "data": {"dataset": demo.v2, "image_modalities": ["DX"], "classes": ["lesion"], "missing_mask": "empty"},
        "input": {"size": [p.train_size, p.train_size], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
        "augment": [{"name": "flip", "prob": 0.5}],
        "model": {"name": "basic-unet", "width": width},
        "optimizer": {"name": "adam", "lr": 0.005, "scheduler": scheduler},
        "training": {"epochs": epochs, "batch_size": 8, "seed": 0, "threads": p.threads},
        "tracking": {"project": PROJECT, "name": name, "hypothesis": demo.hypothesis,
                     "tags": {"stage": "demo", "masks": "consensus"}},
    })


def training_config(demo: Demo, name: str, epochs: int, width: int, scheduler: str = "cosine") -> Any:
    """The validated training config of one of :func:`run_specs`' runs (a file for ``medcycle run enqueue``
    is its ``params()``)."""
    return _config(demo, name, epochs, width, scheduler)


def _finished_run(demo: Demo, name: str) -> str | None:
    from medcycle.experiments.tables import ProjectRow, RunRow

    with demo.platform.session(write=False) as session:
        found: str | None = session.scalar(
            select(RunRow.id).join(ProjectRow, ProjectRow.id == RunRow.project_id)
            .where(ProjectRow.name == PROJECT, RunRow.name == name, RunRow.status == "finished")
            .order_by(RunRow.started_at.desc()).limit(1))
    return found


def run_specs(demo: Demo) -> list[tuple[str, int, int, str]]:
    """(name, epochs, width, learning-rate schedule): a short baseline, then the same network trained longer;
    both decay the learning rate to zero (cosine), which keeps a short run from ending on a noisy step."""
    (e1, e2), (w1, w2) = demo.profile.epochs, demo.profile.widths
    return [(f"unet-w{w1}-e{e1}", e1, w1, "cosine"), (f"unet-w{w2}-e{e2}", e2, w2, "cosine")]


def train(demo: Demo) -> None:
    """Two runs on the CPU, each naming the hypothesis and reading dataset v2 (pulled, verified)."""
    from medcycle.training.trainers import train_version

    demo.begin("Two training runs on the CPU (tracked, linked to the hypothesis and to dataset v2)")
    options: dict[str, Any] = {}
    if demo.profile.light_tracking:
        options = {"resources": False, "capture_output": False, "capture": False, "flush_interval": 0.05}
    demo.runs = []
    for name, epochs, width, scheduler in run_specs(demo):
        run_id = _finished_run(demo, name)
        if run_id is not None:
            demo.say(f"{name}: run {run_id[:12]} already trained")
            demo.runs.append(run_id)
            continue

        def progress(epoch: int, metrics: dict[str, float], total: int = epochs, run: str = name) -> None:
            demo.say(f"{run} epoch {epoch + 1}/{total}: val Dice {metrics.get('val/dice', float('nan')):.3f}, "
                     f"loss {metrics.get('train/epoch_loss', float('nan')):.3f}")

        result = train_version(demo.platform, _config(demo, name, epochs, width, scheduler), run_options=options,
                               on_epoch=progress)
        demo.say(f"{name}: run {result.run_id[:12]}, best val Dice {result.best:.3f} at epoch {result.best_epoch + 1}, "
                 f"{result.seconds:.0f} s on {result.device}, weights {result.weights_digest[:12]}")
        demo.runs.append(result.run_id)
    demo.look("Runs table (filter by hypothesis or project)", f"/ui/runs?project={PROJECT}")
    demo.look("The two runs compared (metrics, params, curves)", f"/ui/runs/compare?ids={','.join(demo.runs)}")
    demo.look("A run: captured code, data version, metrics, predicted mask", f"/ui/runs/{demo.runs[-1]}")
    demo.done()


def _policy(demo: Demo) -> Any:
    from medcycle.evaluation.policy import parse

    return parse({
        "split": "test", "bootstrap": {"resamples": demo.profile.resamples, "seed": 0},
        "factors": ["source", "manufacturer"], "min_group": 5,
        # Dice is per image, an image without a lesion scoring 1 when nothing is marked on it: a model that marks
        # nothing scores about the share of such images (half, here), so the bar is well above it
        "metrics": {"dice": {"min": 0.7}}, "subgroups": {"dice": {"min": 0.3}},
        "non_inferiority": {"against": PRODUCTION, "metric": "dice", "margin": 0.1},
        "regression": True,
        "stress": {"noise": [0.05], "contrast": [0.7], "max_drop": {"dice": 0.4}},
        "ood": {"path": str(ood_cases(demo)), "false_alarm_rate": 0.05, "max_false_alarms": 0.25,
                "min_flagged": 0.6},
    }, "demo-release-gates")


def ood_cases(demo: Demo) -> Path:
    """A folder of inputs the model must refuse: a CT slice, an MR slice and a colour photo-like image."""
    import shutil

    from pydicom.data import get_testdata_file

    folder = demo.home / "demo-data" / "ood-cases"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"):
        source = get_testdata_file(name)
        if source is not None and not (folder / name).is_file():
            shutil.copyfile(source, folder / name)
    return folder


def _version_of_run(demo: Demo, run_id: str) -> str | None:
    from medcycle.models.tables import ModelVersionRow

    with demo.platform.session(write=False) as session:
        row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.model == MODEL,
                                                           ModelVersionRow.run_id == run_id))
        return f"{row.model}@v{row.version}" if row is not None else None


def _gates(demo: Demo, ref: str) -> tuple[bool, list[dict[str, Any]], dict[str, Any]]:
    """The version's latest gate report (evaluating it first when it has none)."""
    from medcycle.evaluation.run import evaluate
    from medcycle.models import registry

    with demo.platform.session(write=False) as session:
        reports = registry.gate_reports(session, ref)
        if reports:
            s = dict(reports[0].summary or {})
            return bool(reports[0].passed), list(s.get("gates") or []), dict(s.get("metrics") or {})
    assert demo.v2 is not None
    ev = evaluate(demo.platform, ref, demo.v2, _policy(demo), actor=ACTOR, via="demo")
    return ev.passed, [{"name": g.name, "passed": g.passed, "reasons": g.reasons} for g in ev.gates], ev.metrics


def _pin_typical_case(demo: Demo, ref: str) -> None:
    """Pin a typical lesion of v1's test split (its median Dice among the lesions it finds): later versions must
    still find it. A typical case rather than the hardest one: v1 only just finds its hardest lesion, so whether
    a later version does says more about the split than about the version."""
    from medcycle.evaluation.predict import load, predict
    from medcycle.models import registry

    with demo.platform.session(write=False) as session:
        if registry.pinned_cases(session, MODEL):
            return
        version = registry.resolve(session, ref)
        digest = version.dataset_digest
    folder = demo.home / "pulls" / "evaluation" / str(digest)[:16]
    # a lesion found: some overlap with a mask that is not empty (an empty mask and an empty prediction have Dice 1
    # but no surface distance)
    found = [p for p in predict(load(demo.platform, ref), folder, "test")
             if p.dice is not None and p.dice > 0 and math.isfinite(p.metrics.get("hd95", math.nan))]
    if not found:
        return
    typical = sorted(found, key=lambda p: (p.dice or 0.0, p.key))[len(found) // 2]
    expected = f"{max(0.05, (typical.dice or 0.0) - 0.3):.2f}"
    with demo.platform.session() as session:
        registry.pin_case(session, MODEL, typical.key, expected, from_ref=ref, actor=ACTOR,
                          reason=f"a typical lesion for {ref} (Dice {typical.dice:.2f}): keep Dice >= {expected}")
    demo.say(f"pinned a typical test lesion of {ref} into the regression suite (Dice must stay >= {expected})")


def evaluate_and_release(demo: Demo) -> None:
    """Register each run's model, judge it by the release gates, fill its card and promote it to production."""
    from medcycle.models import cards, registry

    demo.begin("Evaluation with release gates; the models registered with their cards and promoted")
    demo.versions, demo.promoted = [], []
    for run_id in demo.runs:
        ref = _version_of_run(demo, run_id)
        if ref is None:
            with demo.platform.session() as session:
                ref = registry.register(session, demo.platform.objects, MODEL, run_id=run_id, contract=CONTRACT,
                                        description="Lung lesion segmentation on chest radiographs",
                                        task="segmentation-2d", actor=ACTOR).ref
            demo.say(f"registered {ref} from run {run_id[:12]} (weights, data version, label set, commit)")
        demo.versions.append(ref)
        passed, gates, metrics = _gates(demo, ref)
        dice = metrics.get("dice") or {}
        demo.say(f"{ref} on {demo.v2} test split: Dice {dice.get('value', float('nan')):.3f} "
                 f"(95% CI {dice.get('ci_low', float('nan')):.3f}–{dice.get('ci_high', float('nan')):.3f})")
        for g in gates:
            reasons = "; ".join(g.get("reasons") or []) or "ok"
            demo.say(f"   gate {g['name']:<16} {'pass' if g['passed'] else 'FAIL'}  {reasons[:100]}")
        with demo.platform.session() as session:
            human = dict(registry.resolve(session, ref).card or {}).get("human", {})
            if any(human.get(k) != v for k, v in CARD.items()):
                cards.edit(session, ref, dict(CARD), actor=ACTOR, via="demo")
            problems = cards.validate(cards.build(session, ref))
            moves = [m for m in registry.alias_history(session, MODEL, PRODUCTION) if m.to_ref == ref]
        if problems:
            demo.say(f"card of {ref} incomplete: {'; '.join(problems[:2])}")
        if moves:
            demo.say(f"{ref} was promoted to {PRODUCTION} before")
            demo.promoted.append(ref)
        elif passed and not problems:
            with demo.platform.session() as session:
                move = registry.promote(session, ref, PRODUCTION, actor=ACTOR, via="demo")
            demo.say(f"promoted {ref} to {PRODUCTION} (was {move.from_ref or 'nothing'})")
            demo.promoted.append(ref)
        else:
            demo.say(f"{ref} is not promoted: its gates failed")
        if ref == demo.versions[0]:
            _pin_typical_case(demo, ref)
    demo.look("Evaluation: gate reports of every version", "/ui/evaluation")
    demo.look(f"{MODEL}: versions, aliases, promotion history", f"/ui/models/{MODEL}")
    if demo.versions:
        name, _, version = demo.versions[-1].partition("@")
        demo.look(f"{demo.versions[-1]}: model card and lineage", f"/ui/models/{name}/{version}")
    demo.done()
