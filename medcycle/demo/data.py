"""Data stages: the demo data and real DICOM in, de-identified; what we have; dataset v1 with box labels.

The radiographs' box labels come the way a first labeling round's do: a LabelImg (Pascal VOC) export, here
written from the generator's lesion boxes, imported into the labels layer as a label set under a box schema.
The dataset version takes its class labels from that set (an image with a lesion box is ``lesion``, the others
``normal``); the boxes stay in the label set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medcycle.demo.context import ACTOR, CT_DATASET, XR_DATASET, Demo

PYDICOM_DATA = ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "JPEG2000.dcm", "SC_rgb.dcm")
BOX_SCHEMA = {"name": "chest-lesion-boxes", "description": "Lung lesions on frontal chest radiographs, as boxes",
              "level": "instance", "classes": [{"name": "lesion", "kinds": ["box"], "color": "#e6194b"}]}
IMPORT_READER = "site-labelimg"
SPLIT = "train=0.6,val=0.2,test=0.2"
SPLIT_SEED = 7


def _generate(root: Path, params: dict[str, Any]) -> bool:
    """Write the demo data under ``root`` once per set of parameters; True when it was written now."""
    from medcycle.training.demo_data import generate

    stamp = root / "demo-params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params and (root / "labels.csv").is_file():
        return False
    generate(root, **params)
    stamp.write_text(json.dumps(params, sort_keys=True))
    return True


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def generate_and_ingest(demo: Demo) -> None:
    """Write the demo data (and the serving traffic), ingest it and real pydicom-data files, de-identified."""
    from pydicom.data import get_testdata_file

    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.catalog.ingest import ingest
    from medcycle.catalog.keys import load_or_create_key
    from medcycle.training.demo_data import load, read_studies

    p = demo.profile
    demo.begin("Generate the demo data and ingest it with de-identification (plus real DICOM from pydicom-data)")
    root = demo.home / "demo-data" / "cycle"  # not `demo data`'s folder: other sizes, other files
    params = {"seed": 0, "radiographs": p.radiographs, "volumes": p.volumes, "size": p.size,
              "volume_size": p.volume_size, "slices": p.slices}
    wrote = _generate(root, params)
    incoming = demo.home / "demo-data" / "incoming"
    wrote_incoming = _generate(incoming, {"seed": 1, "radiographs": p.incoming, "volumes": 0, "size": p.size})
    demo.data_root, demo.incoming_root = root, incoming
    rows = read_studies(root)
    xr = [r for r in rows if r["kind"] == "xr"]
    demo.say(f"{'wrote' if wrote else 'found'} {len(xr)} chest radiographs "
             f"({sum(r['label'] == 'lesion' for r in xr)} with a lesion) from "
             f"{len({(r['manufacturer'], r['model']) for r in xr})} scanners and "
             f"{len(rows) - len(xr)} CT volumes with nodules in {root}")
    demo.say(f"{'wrote' if wrote_incoming else 'found'} {p.incoming} more radiographs as serving traffic in {incoming}")
    for source in sorted({r["source"] for r in xr}):
        images = [root / r["image"] for r in xr if r["source"] == source]  # the images; their masks are the truth
        s = ingest(demo.platform, images, source=source, jobs=p.ingest_jobs, actor=ACTOR)
        demo.say(f"{source}: {s.ingested} radiographs ingested, {s.duplicates} already there, "
                 f"{len(s.rejected)} rejected, {len(s.quarantined)} quarantined")
    refs = load(demo.platform, root, kinds=("ct",), jobs=p.ingest_jobs, actor=ACTOR)
    demo.say(f"CT volumes and their nodule masks: dataset {refs.get(CT_DATASET, '-')}")
    real = [Path(f) for name in PYDICOM_DATA if (f := get_testdata_file(name)) is not None]
    s = ingest(demo.platform, real, source="pydicom-data", actor=ACTOR)
    demo.say(f"pydicom-data: {s.ingested} ingested, {len(s.quarantined)} quarantined (burned-in text suspects), "
             f"{s.duplicates} already there")
    pseudo = Pseudonymizer(load_or_create_key(demo.platform.settings.resolved_deid_key_file))
    for r in xr:
        image = root / r["image"]
        demo.truth[pseudo.uid(_sop_uid(image))] = {**r, "file": str(image), "mask_file": str(root / r["mask"])}
    demo.say("every identifier was replaced by a keyed pseudonym before anything was stored "
             "(no original UID, name or ID is in the database or the object store)")
    demo.look("Catalog (de-identified studies, thumbnails)", "/ui/data")
    demo.look("Ingest audit trail", "/ui/admin/audit")
    demo.done()


def summary(demo: Demo) -> None:
    from medcycle.catalog.summary import summarize

    demo.begin("What data do we have, how much, from where")
    with demo.platform.session(write=False) as session:
        totals = summarize(session).to_dict()
    t = totals["totals"]
    demo.say(f"{t['patients']} patients, {t['studies']} studies, {t['series']} series, {t['instances']} instances")
    for row in totals["by_source_modality_body_part"]:
        demo.say(f"{row['source']:<13} {row['modality'] or '-':<4} {row['body_part'] or '-':<10} "
                 f"{row['instances']:>5} instances")
    demo.look("Catalog summary by source, modality and body part", "/ui/data")
    demo.done()


def _box_annotations(demo: Demo) -> tuple[Any, list[Any]]:
    """The first round's boxes as a LabelImg (Pascal VOC) export on disk, read back through the VOC importer."""
    from medcycle.labels import formats
    from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind

    size = demo.profile.size
    refs = [ImageRef(uid, size, size, file_name=f"{uid}.dcm") for uid in sorted(demo.truth)]
    folder = demo.home / "demo-data" / "box-labels-voc"
    if not (folder / "classes.txt").is_file():
        anns = []
        for uid, row in sorted(demo.truth.items()):
            if row["x0"] != "":  # the generator's box is inclusive pixel indices; the model's is [x0, x1)
                box = Box(float(row["x0"]), float(row["y0"]), float(row["x1"]) + 1, float(row["y1"]) + 1)
                anns.append(Annotation(uid, "lesion", Kind.BOX, box))
        formats.write(AnnotationSet.of(refs, anns, ["lesion"]), "voc", folder)
    return formats.read(folder, "voc", images=refs), refs


def dataset_v1(demo: Demo) -> None:
    """Dataset v1: the radiographs with box labels (as class labels per image) and a patient-level split."""
    from medcycle.datasets import items, labels, versions
    from medcycle.datasets.splits import parse_stratify, ratios_policy
    from medcycle.labels import schemas, sets, store

    demo.begin("Dataset v1: the radiographs with box labels and a patient-level split")
    aset, refs = _box_annotations(demo)
    uids = [r.key for r in refs]
    with demo.platform.session() as session:
        schema = schemas.add_schema(session, demo.platform.objects, BOX_SCHEMA, origin="demo", actor=ACTOR)
        ids: list[str] = []
        for uid in uids:
            found = aset.on(uid)
            if found:
                ids += [r.id for r in store.save(session, demo.platform.objects, found, item=uid, level="instance",
                                                 reader=IMPORT_READER, stage=store.Stage.IMPORT,
                                                 tool="LabelImg (Pascal VOC)")]
        box_set = sets.create_label_set(session, demo.platform.objects, ids, schema=schema.ref, items=uids,
                                        origin="LabelImg export (first labeling round)", actor=ACTOR)
        as_labels = sets.dataset_labels(session, demo.platform.objects, box_set.id)
        lesion = {item for item, _ in as_labels.pairs}
        csv = "instance,label\n" + "".join(f"{u},{'lesion' if u in lesion else 'normal'}\n" for u in uids)
        if XR_DATASET not in {d.name for d in items.list_datasets(session)}:
            items.create_dataset(session, XR_DATASET, description="Chest radiographs from four scanners, lung "
                                 "lesions labelled as boxes (v1) and as consensus masks (v2)", uids=uids, actor=ACTOR)
        tags = {t for v in versions.log(session, XR_DATASET) for t in v.tags}
        if "v1" not in tags:
            labels.import_labels(session, demo.platform.objects, XR_DATASET, csv,
                                 origin=f"labels set {box_set.id[:16]} ({schema.ref}, boxes)", actor=ACTOR)
            policy = ratios_policy(SPLIT, stratify=parse_stratify("label,source"), seed=SPLIT_SEED)
            frozen = versions.freeze(session, demo.platform.objects, XR_DATASET, tag="v1", policy=policy,
                                     actor=ACTOR, message="box labels from the first labeling round")
            info, leak = frozen.version, frozen.leakage.to_dict().get("ok", True)
        else:
            info, leak = versions.get_version(session, f"{XR_DATASET}@v1"), True
    demo.v1 = f"{XR_DATASET}@v1"
    demo.say(f"label set {box_set.id[:16]}… ({schema.ref}): {len(ids)} boxes on {len(uids)} images, "
             f"imported from a LabelImg export")
    counts = info.to_dict().get("split_counts") or {}
    demo.say(f"{demo.v1} = {info.id[:16]}… : {len(lesion)} lesion / {len(uids) - len(lesion)} normal, splits "
             f"{_splits(counts)}; leakage check: {'clean' if leak else 'LEAKS'}")
    demo.look("Dataset versions, diff and card", f"/ui/datasets/{XR_DATASET}")
    demo.done()


def _splits(counts: dict[str, Any]) -> str:
    shown = []
    for split, value in sorted(counts.items()):
        n = value.get("items") if isinstance(value, dict) else value
        shown.append(f"{split} {n}")
    return ", ".join(shown) or "-"
