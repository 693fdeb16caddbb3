"""Labeling stages: a mask task over dataset v1 read by simulated readers, agreement and STAPLE consensus, and
dataset v2 whose labels and masks come from the consensus label set.

The readers (:mod:`medcycle.demo.readers`) submit through the same calls as the web UI: their queues, then
:func:`medcycle.labels.tasks.submit`, which scores each item's agreement when its last reader is in and sends
disagreements below the threshold to the adjudication queue, where the senior reader decides. The consensus is
STAPLE over every reading (SimpleITK), with the senior's decision where an item was adjudicated.

Dataset v2 takes its class labels from the consensus label set (:func:`medcycle.labels.sets.dataset_labels`) and
its masks as objects in the images' studies (Modality ``SEG`` secondary captures, the form the trainer pairs with
images), ingested — de-identified — like any other file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.demo.context import ACTOR, XR_DATASET, Demo
from medcycle.demo.readers import READERS, SENIOR, SimulatedReader

MASK_SCHEMA = {"name": "chest-lesion-masks", "description": "Lung lesions on frontal chest radiographs, as masks",
               "level": "instance", "classes": [{"name": "lesion", "kinds": ["mask"], "color": "#e6194b"}]}
TASK_NAME = "lesion masks, round 2 (demo)"
THRESHOLD = 0.5  # items whose readers agree less (mean pairwise Dice) go to the senior reader
CONSENSUS_READER = "consensus:staple"


def _truth(demo: Demo, item: str) -> npt.NDArray[np.bool_]:
    from PIL import Image

    with Image.open(demo.truth[item]["mask_file"]) as img:
        return np.asarray(img) > 0


def _spacing(demo: Demo) -> tuple[float, float]:
    s = round(0.15 * 1024 / demo.profile.size, 4)  # the generator's ImagerPixelSpacing
    return s, s


def _reading(demo: Demo, reader: SimulatedReader, item: str) -> tuple[list[Any], float]:
    from medcycle.labels.model import Annotation, Kind, Mask

    mask, spent = reader.read(_truth(demo, item), item)
    if not mask.any():
        return [], spent
    return [Annotation(item, "lesion", Kind.MASK, Mask(mask.astype(np.uint8), spacing=_spacing(demo)))], spent


def _register_readers(demo: Demo) -> None:
    from medcycle.errors import NotFound
    from medcycle.labels.readers import get_reader, set_reader

    wanted = [(r.name, True, False) for r in READERS] + [(SENIOR.name, True, True)]
    with demo.platform.session() as session:
        for name, qualified, senior in wanted:
            try:
                have = get_reader(session, name)
                if have.qualified == qualified and have.senior == senior:
                    continue
            except NotFound:
                pass
            set_reader(session, name, qualified=qualified, senior=senior, note="simulated reader (demo)", actor=ACTOR)


def labeling_task(demo: Demo) -> None:
    """A mask task over v1's radiographs: three readers per image, disagreements adjudicated by the senior."""
    from medcycle.datasets import versions
    from medcycle.labels import adjudication, schemas, tasks
    from medcycle.store.base import utcnow

    assert demo.v1 is not None
    demo.begin("A labeling task read by simulated readers of different skill")
    _register_readers(demo)
    with demo.platform.session() as session:
        schema = schemas.add_schema(session, demo.platform.objects, MASK_SCHEMA, origin="demo", actor=ACTOR)
        existing = [t for t in tasks.list_tasks(session) if t.name == TASK_NAME]
        if existing:
            task = existing[-1]
        else:
            version = versions.resolve(session, demo.v1)
            uids = [u for u in versions.item_states(session, version.id) if u in demo.truth]
            chosen = tasks.items_from_instances(session, uids, schema.level, origin=f"dataset {demo.v1}",
                                                origin_digest=version.id)
            task = tasks.create_task(session, chosen, schema=schema.ref, readers_per_item=len(READERS),
                                     readers=[r.name for r in READERS], adjudication_threshold=THRESHOLD, seed=7,
                                     due=(utcnow() + timedelta(days=7)).date(), name=TASK_NAME, actor=ACTOR)
    demo.task_ref = task.ref
    submitted = 0
    for reader in READERS:
        with demo.platform.session() as session:
            for entry in tasks.reader_queue(session, reader.name, task=task.ref, limit=100_000):
                anns, spent = _reading(demo, reader, entry.item)
                tasks.submit(session, demo.platform.objects, task.ref, entry.item, reader.name, anns, seconds=spent,
                             tool="demo simulation", via="demo")
                submitted += 1
    resolved = 0
    with demo.platform.session() as session:
        for open_item in adjudication.adjudication_queue(session, task=task.ref, state="open", limit=10_000):
            anns, spent = _reading(demo, SENIOR, open_item.item)
            adjudication.adjudicate(session, demo.platform.objects, task.ref, open_item.item, senior=SENIOR.name,
                                    annotations=anns, seconds=spent, note="senior read (demo)", via="demo")
            resolved += 1
        info = tasks.get_task(session, task.ref)
    demo.say(f"{info.ref} '{TASK_NAME}' under {schema.ref}: {info.items} images from {demo.v1}, "
             f"{info.readers_per_item} readers each, adjudication below Dice {THRESHOLD}")
    demo.say(f"{submitted} readings submitted now" if submitted else "every reading was already in")
    for r in READERS:
        progress = next((p for p in info.readers_progress if p.reader == r.name), None)
        if progress is not None:
            demo.say(f"{r.name:<12} sensitivity {r.sensitivity:.2f} specificity {r.specificity:.2f}: "
                     f"{progress.submitted}/{progress.assigned} read, {progress.seconds / 60:.0f} min")
    states = info.item_states
    demo.say(f"items: {states.get('complete', 0)} agreed, {states.get('resolved', 0)} adjudicated by {SENIOR.name}"
             f"{f' ({resolved} now)' if resolved else ''}, {states.get('adjudication', 0)} waiting")
    demo.look("Labeling tasks and reader queues", "/ui/labels")
    demo.look(f"Task {info.ref}: progress and items", f"/ui/labels/tasks/{info.ref}")
    demo.done()


def _task_readings(demo: Demo, task_id: int, items: list[str]) -> tuple[list[Any], dict[str, set[str]]]:
    from medcycle.labels import tasks

    anns: list[Any] = []
    read: dict[str, set[str]] = {r.name: set() for r in READERS}
    with demo.platform.session(write=False) as session:
        for item in items:
            for reader, found in tasks.readings(session, demo.platform.objects, task_id, item).items():
                read.setdefault(reader, set()).add(item)
                anns.extend(found)
    return anns, read


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * float((a & b).sum()) / total


def agreement_and_consensus(demo: Demo) -> None:
    """Reader × reader Dice, Fleiss' kappa on "is there a lesion", STAPLE's reader estimates, the consensus set."""
    from medcycle.labels import adjudication, sets, store, tasks
    from medcycle.labels.agreement import Ratings, fleiss_kappa
    from medcycle.labels.consensus import MaskMethod, mask_consensus
    from medcycle.labels.mask_agreement import mask_matrix

    assert demo.task_ref is not None
    demo.begin("Agreement and consensus (STAPLE; adjudicated items take the senior's decision)")
    with demo.platform.session(write=False) as session:
        row = tasks.get_task_row(session, demo.task_ref)
        task_id = row.id
        states = tasks.item_states(session, task_id)
    items = sorted(states)
    anns, read = _task_readings(demo, task_id, items)
    names = [r.name for r in READERS]
    matrix = mask_matrix(anns, "lesion", metric="dice", read=read)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    demo.say(f"mean Dice between readers over {len(items)} images: " +
             ", ".join(f"{a}–{b} {matrix.value(a, b) or 0:.2f}" for a, b in pairs))
    drew = {(a.reader, a.image) for a in anns}
    ratings = Ratings.from_table({r: {i: "lesion" if (r, i) in drew else "none" for i in items} for r in names},
                                 ["none", "lesion"])
    demo.say(f"agreement on whether there is a lesion: Fleiss' kappa {fleiss_kappa(ratings):.2f}")
    result = mask_consensus(anns, "lesion", method=MaskMethod.STAPLE, read=read)
    truth = {i: _truth(demo, i) for i in items}
    for r in READERS:
        est = result.estimate(r.name)
        dices = [d for i in items if truth[i].any() and (d := _dice(_mask_of(anns, r.name, i, truth[i]), truth[i]))
                 is not None]
        demo.say(f"STAPLE's estimate of {r.name:<12} sensitivity {est.sensitivity:.2f}, specificity "
                 f"{est.specificity:.4f} (pixel level); Dice against the truth {np.mean(dices):.2f}")
    staple = {a.image: a for a in result.annotations}
    with demo.platform.session() as session:
        ids: list[str] = []
        adjudicated = 0
        for item in items:
            state = states[item][0]
            if state is tasks.ItemState.RESOLVED:
                ids += list(adjudication.get_adjudication(session, demo.task_ref, item).annotation_ids)
                adjudicated += 1
            elif item in staple:
                ids += [rec.id for rec in store.save(session, demo.platform.objects, [staple[item]], item=item,
                                                     level=row.level, reader=CONSENSUS_READER, task_id=task_id,
                                                     stage=store.Stage.IMPORT, tool="STAPLE (SimpleITK)")]
        label_set = sets.create_label_set(
            session, demo.platform.objects, ids, schema=row.schema_id, items=items, actor=ACTOR,
            origin=f"task {demo.task_ref}: STAPLE of {len(names)} readers, {adjudicated} adjudicated")
        resolved = sets.resolve_label_set(session, demo.platform.objects, label_set.id)
    demo.consensus_set = label_set.id
    final = {a.image: np.asarray(a.geometry.binary) for a in resolved.annotations  # type: ignore[union-attr]
             if a.geometry is not None}
    dices = [d for i in items if truth[i].any() and (d := _dice(final.get(i, np.zeros_like(truth[i])), truth[i]))
             is not None]
    found = sum(1 for i in items if truth[i].any() and i in final)
    false = sum(1 for i in items if not truth[i].any() and i in final)
    demo.say(f"consensus label set {label_set.id[:16]}…: {len(final)} lesion masks on {len(items)} images; against "
             f"the truth: Dice {np.mean(dices):.2f}, {found}/{sum(t.any() for t in truth.values())} lesions found, "
             f"{false} false positives")
    demo.look(f"Reader agreement of {demo.task_ref} (Dice and kappa matrices)",
              f"/ui/labels/tasks/{demo.task_ref}/agreement")
    first = next((i for i in items if i in final), items[0])
    demo.look("One item: every reader's mask, the consensus and the adjudication",
              f"/ui/labels/tasks/{demo.task_ref}/items/{first}/review")
    demo.done()


def _mask_of(anns: list[Any], reader: str, item: str, like: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    out = np.zeros_like(like)
    for a in anns:
        if a.reader == reader and a.image == item and a.geometry is not None:
            out |= np.asarray(a.geometry.binary)
    return out


def _write_mask(source_image: Path, mask: npt.NDArray[np.bool_], dest: Path, label_set: str) -> None:
    """A Modality SEG secondary capture of ``mask`` in the study of ``source_image`` (its patient and study
    modules copied, its own series), as the demo data stores masks; UIDs follow from the image and the set."""
    import pydicom
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    ds = pydicom.dcmread(source_image)
    original = str(ds.SOPInstanceUID)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["medcycle-demo-consensus", label_set, original])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["medcycle-demo-consensus-series", label_set, original])
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SEG", 99, 1
    ds.SeriesDescription = "lesion mask (reader consensus)"
    ds.ImageType, ds.ConversionType = ["DERIVED", "SECONDARY", "MASK"], "SYN"
    for keyword in ("PresentationIntentType", "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter",
                    "WindowWidth", "KVP", "ViewPosition"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = mask.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = mask.astype(np.uint8).tobytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)


def dataset_v2(demo: Demo) -> None:
    """Dataset v2: v1's images, labels from the consensus label set and the consensus masks as items."""
    import pydicom

    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.catalog.ingest import ingest
    from medcycle.catalog.keys import load_or_create_key
    from medcycle.datasets import items, labels, versions
    from medcycle.labels import sets

    assert demo.consensus_set is not None and demo.v1 is not None
    demo.begin("Dataset v2: labels and masks from the consensus label set")
    demo.v2 = f"{XR_DATASET}@v2"
    with demo.platform.session(write=False) as session:
        done = "v2" in {t for v in versions.log(session, XR_DATASET) for t in v.tags}
        resolved = sets.resolve_label_set(session, demo.platform.objects, demo.consensus_set)
        as_labels = sets.dataset_labels(session, demo.platform.objects, demo.consensus_set)
    masks = {a.image: np.asarray(a.geometry.binary) for a in resolved.annotations  # type: ignore[union-attr]
             if a.geometry is not None}
    pseudo = Pseudonymizer(load_or_create_key(demo.platform.settings.resolved_deid_key_file))
    folder = demo.home / "demo-data" / "consensus-masks"
    by_source: dict[str, list[Path]] = {}
    mask_uids = []
    for item, mask in sorted(masks.items()):
        row = demo.truth[item]
        dest = folder / row["source"] / row["patient_id"] / f"{demo.consensus_set[:16]}.dcm"
        if not dest.is_file():
            _write_mask(Path(row["file"]), mask, dest, demo.consensus_set)
        by_source.setdefault(row["source"], []).append(dest)
        mask_uids.append(pseudo.uid(str(pydicom.dcmread(dest, stop_before_pixels=True).SOPInstanceUID)))
    added = 0
    for source, paths in sorted(by_source.items()):
        added += ingest(demo.platform, paths, source=source, jobs=1, actor=ACTOR).ingested
    lesion = {item for item, _ in as_labels.pairs}
    csv = "instance,label\n" + "".join(f"{u},{'lesion' if u in lesion else 'normal'}\n" for u in as_labels.items)
    with demo.platform.session() as session:
        if not done:
            items.add_items(session, XR_DATASET, uids=mask_uids, actor=ACTOR)
            labels.import_labels(session, demo.platform.objects, XR_DATASET, csv,
                                 origin=f"labels set {demo.consensus_set[:16]} (consensus masks)", actor=ACTOR)
            versions.freeze(session, demo.platform.objects, XR_DATASET, tag="v2", actor=ACTOR,
                            message=f"labels and masks from the consensus of {demo.task_ref}")
        info = versions.get_version(session, demo.v2)
        change = versions.diff(session, demo.v1, demo.v2).summary()
    demo.say(f"{len(masks)} consensus masks written as SEG objects in their studies, {added} ingested now "
             f"(de-identified like every file)")
    demo.say(f"{demo.v2} = {info.id[:16]}…: {info.n_items} items; against v1: {change['added']} masks added "
             f"({change['added_bytes']} bytes), {change['relabeled']} images relabelled, {change['moved']} moved "
             "between splits (patients keep their split)")
    demo.look(f"{XR_DATASET}: v1 → v2 and the diff", f"/ui/datasets/{XR_DATASET}")
    demo.look(f"{demo.v2}: its card (sources, labels and their origin, splits)", f"/ui/datasets/{XR_DATASET}/v2")
    demo.done()
