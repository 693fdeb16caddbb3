"""The data catalog and dataset pages in-process: filters, distributions, thumbnails, access, versions, cards."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from medcycle.api.app import create_app
from medcycle.auth import audit, users
from medcycle.catalog.ingest import ingest
from medcycle.catalog.query import parse, run_query
from medcycle.catalog.summary import summarize
from medcycle.catalog.tables import InstanceRow, StudyRow
from medcycle.datasets import cards, items, labels, versions
from medcycle.datasets.splits import ratios_policy
from medcycle.platform import Platform
from medcycle.testing.catalog import CatalogFixture, make_catalog
from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph
from medcycle.web import catalog as catalog_page
from tests.web.test_pages import parts

PNG = b"\x89PNG\r\n\x1a\n"
THUMB_SRC = re.compile(r'data-src="(/v1/catalog/instances/[^"]+/thumbnail\.png\?[^"]+)"')  # loaded by catalog.js


@dataclass
class Data:
    fixture: CatalogFixture
    ct_series: str
    ct_middle: str  # the CT series' middle slice (instance number 3 of 5)
    mono1: str  # a DX radiograph stored as MONOCHROME1
    mono2: str  # the same anatomy stored as MONOCHROME2


def populate(platform: Platform, tmp_path: Path) -> Data:
    """Synthetic rows on two clinics (10% quarantined, no stored images) and real ingested phantoms."""
    with platform.session() as s:
        fx = make_catalog(s, sources=2, patients=12, studies_per_patient=2, series_per_study=2,
                          instances_per_series=3, quarantine_rate=0.1, seed=3)
    write_ct_series(tmp_path / "in" / "ct", slices=5)
    write_radiograph(tmp_path / "in" / "dx-m1.dcm", FakePatient(patient_id="MRN-1"), monochrome1=True, seed=4)
    write_radiograph(tmp_path / "in" / "dx-m2.dcm", FakePatient(patient_id="MRN-2"), seed=4)
    summary = ingest(platform, [tmp_path / "in"], source="phantoms")
    assert summary.ingested == 7 and not summary.rejected
    with platform.session() as s:
        ct = run_query(s, 'source == "phantoms" and modality == "CT"').rows
        dx = {r["photometric"]: r["instance"] for r in run_query(s, 'source == "phantoms" and modality == "DX"').rows}
        numbers = {r["instance"]: s.scalar(select(InstanceRow.instance_number).where(InstanceRow.uid == r["instance"]))
                   for r in ct}
    middle = next(uid for uid, n in numbers.items() if n == 3)
    return Data(fx, ct[0]["series"], middle, dx["MONOCHROME1"], dx["MONOCHROME2"])


def login(client: TestClient, platform: Platform, name: str, role: str) -> TestClient:
    with platform.session() as s:
        users.create_user(s, name, role)
        token = users.create_token(s, name).secret
    r = client.post("/login", data={"token": token, "next": "/"})
    assert r.status_code == 303
    return client


@pytest.fixture
def data(platform: Platform, tmp_path: Path) -> Data:
    return populate(platform, tmp_path)


@pytest.fixture
def admin(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform), follow_redirects=False) as c:
        yield login(c, platform, "ada", "admin")


@pytest.fixture
def viewer(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform), follow_redirects=False) as c:
        yield login(c, platform, "vic", "viewer")


def page_data(html: str) -> dict[str, object]:
    block = re.search(r'<script type="application/json" id="catalog-data">(.*?)</script>', html, re.S)
    assert block is not None
    found: dict[str, object] = json.loads(block.group(1))
    return found


def thumbnails(html: str) -> list[str]:
    return [unescape(src) for src in THUMB_SRC.findall(html)]


def stat(html: str, name: str) -> int:
    m = re.search(rf'data-testid="{name}">([\d,]+)<', html)
    assert m is not None, name
    return int(m.group(1).replace(",", ""))


# -- the catalog page ----------------------------------------------------------------------------------
def test_catalog_page_shows_totals_breakdowns_and_data(admin: TestClient, platform: Platform, data: Data) -> None:
    r = admin.get("/ui/data")
    assert r.status_code == 200
    page = parts(r.text)
    assert page.h1 == "Data catalog" and page.title == "Data catalog · medcycle"
    with platform.session() as s:
        summary = summarize(s)
    fx = data.fixture
    assert stat(r.text, "total-instances") == summary.totals.instances == fx.instances - fx.quarantined + 7
    assert stat(r.text, "total-patients") == summary.totals.patients
    assert stat(r.text, "quarantined") == data.fixture.quarantined > 0
    charts = page_data(r.text)["breakdown"]
    assert isinstance(charts, dict)
    sun = charts["sunburst"]
    roots = [i for i, parent in enumerate(sun["parents"]) if parent == ""]
    assert sorted(sun["labels"][i] for i in roots) == ["clinic-a", "clinic-b", "phantoms"]
    assert sum(sun["instances"][i] for i in roots) == summary.totals.instances
    assert "Medcycle Phantoms" in charts["manufacturer"]["labels"]
    assert charts["year"]["labels"]
    assert "clinic-a" in r.text and "CC-BY-4.0" in r.text  # the sources table
    table = r.text.split('id="instances"')[1].split("</section>")[0]
    assert table.count("<tr>") == catalog_page.PAGE_SIZE + 1 and 'rel="next"' in table  # a full page, and more
    # plotly and our chart script, no inline code
    assert '<script src="/static/vendor/plotly.min.js"></script>' in r.text
    assert re.search(r"<script>(?!</script>)", r.text) is None


def test_filter_narrows_every_section(admin: TestClient, data: Data) -> None:
    r = admin.get("/ui/data", params={"q": 'source == "phantoms"'})
    assert r.status_code == 200
    assert stat(r.text, "total-instances") == 7 and stat(r.text, "total-series") == 3
    assert stat(r.text, "quarantined") == 0
    assert 'value="source == &#34;phantoms&#34;"' in r.text
    assert "clinic-a" not in r.text.split('id="instances"')[1].split("Sources")[0]
    assert len(thumbnails(r.text)) == 3


@pytest.mark.parametrize(("query", "message", "hint"), [
    ('modality = "CT"', "unexpected character &#39;=&#39; at column 10", "Use == to compare."),
    ('modalty == "CT"', "unknown field", "Did you mean &#39;modality&#39;?"),
    ("slice_thickness < \"thin\"", "is a number field", "Compare slice_thickness with a number"),
])
def test_bad_filter_answers_400_with_message_and_hint(
    admin: TestClient, data: Data, query: str, message: str, hint: str
) -> None:
    r = admin.get("/ui/data", params={"q": query, "field": "p50"})
    assert r.status_code == 400
    assert parts(r.text).h1 == "Data catalog"
    error = r.text.split('id="query-error"')[1].split("</div>")[0]
    assert message in error and hint in error
    assert 'aria-invalid="true"' in r.text and "Traceback" not in r.text
    assert "catalog-data" not in r.text  # no half-computed sections


@pytest.mark.parametrize(("params", "message"), [
    ({"field": "patient"}, "cannot draw the distribution of &#39;patient&#39;"),
    ({"preset": "sunset"}, "unknown window preset"),
    ({"page": "0"}, "page must be a whole number"),
    ({"q": "x" * 5000}, "longer than 4096 characters"),
])
def test_bad_parameters_are_400_pages(admin: TestClient, data: Data, params: dict[str, str], message: str) -> None:
    r = admin.get("/ui/data", params=params)
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]
    assert message in r.text and "Traceback" not in r.text


def test_distribution_picks_a_chart_for_each_kind_of_field(platform: Platform, data: Data) -> None:
    every = parse("")
    with platform.session() as s:
        total = summarize(s).totals.instances
        p50 = catalog_page.distribution(s, every, "p50")
        kvp = catalog_page.distribution(s, every, "kvp")
        modality = catalog_page.distribution(s, every, "modality")
        dates = catalog_page.distribution(s, every, "study_date")
        ct_only = catalog_page.distribution(s, parse('modality == "CT"'), "modality")
        none = catalog_page.distribution(s, parse('modality == "XA"'), "p50")
        everything = catalog_page.distribution(s, every, "quarantined", include_quarantined=True)
        sizes = catalog_page.distribution(s, every, "bytes")  # an integer column, binned
        rows = run_query(s, None, limit=10_000).rows
    for dist, name in ((p50, "p50"), (sizes, "bytes")):  # the bins, against numpy's of the same definition
        values = np.array([r[name] for r in rows if r[name] is not None], dtype=np.float64)
        # bin k holds min + k·width <= v < min + (k+1)·width, and the last one the maximum too; numpy's
        # histogram on edges summed in floating point can put its last edge a hair below the maximum
        assert dist.minimum is not None and dist.maximum is not None
        width = (dist.maximum - dist.minimum) / catalog_page.HIST_BINS
        bins = np.clip(np.floor((values - dist.minimum) / width), 0, catalog_page.HIST_BINS - 1).astype(int)
        expected = np.bincount(bins, minlength=catalog_page.HIST_BINS).tolist()
        assert dist.kind == "histogram" and dist.counts == expected, name
        edges = [*dist.x, dist.maximum]
        inner = np.histogram(values, bins=edges)[0].tolist()  # numpy agrees wherever no value sits on an edge
        assert sum(abs(a - b) for a, b in zip(inner, expected, strict=True)) <= 2 * sum(
            int(np.isclose(values, e, rtol=1e-12, atol=0).sum()) for e in edges), name
    assert p50.kind == "histogram" and len(p50.counts) == catalog_page.HIST_BINS
    assert sum(p50.counts) == p50.present == total - p50.missing
    assert p50.minimum is not None and p50.x[0] == p50.minimum and p50.counts[-1] >= 1  # the maximum is counted
    assert kvp.kind == "values" and sum(kvp.counts) == kvp.present and 120.0 in kvp.x
    assert modality.kind == "categories" and sum(modality.counts) + modality.other == total
    assert set(modality.x) >= {"CT", "DX"}
    assert dates.kind == "dates" and sum(dates.counts) == dates.present and dates.x == sorted(dates.x)
    assert ct_only.x == ["CT"]
    assert none.kind == "empty" and none.total == 0
    assert dict(zip(everything.x, everything.counts, strict=True))["true"] == data.fixture.quarantined


def test_distribution_field_selector(admin: TestClient, data: Data) -> None:
    r = admin.get("/ui/data", params={"field": "kvp", "q": 'modality == "CT"'})
    assert r.status_code == 200
    eda = page_data(r.text)["distribution"]
    assert isinstance(eda, dict) and eda["field"] == "kvp" and eda["kind"] == "values"
    assert '<option value="kvp" selected>' in r.text
    assert 'action="/ui/data/range"' in r.text and 'name="lo"' in r.text  # a number field gets a range form
    r = admin.get("/ui/data", params={"field": "manufacturer"})
    assert page_data(r.text)["distribution"]["kind"] == "categories"  # type: ignore[index]
    assert 'action="/ui/data/range"' not in r.text


def test_range_form_rewrites_the_filter(admin: TestClient, data: Data) -> None:
    r = admin.get("/ui/data/range", params={"q": 'modality == "CT"', "field": "slice_thickness", "lo": "1",
                                            "hi": "2.5", "preset": "lung"})
    assert r.status_code == 303
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["q"] == ['modality == "CT" and slice_thickness >= 1 and slice_thickness <= 2.5']
    assert "field" not in query and query["preset"] == ["lung"]  # slice_thickness is the default field
    again = catalog_page.with_range(query["q"][0], "slice_thickness", 0.5, None)
    assert again == 'modality == "CT" and slice_thickness >= 0.5'  # old bounds replaced, not stacked
    assert catalog_page.with_range('modality == "CT" or modality == "MR"', "kvp", 80, 120) == (
        '(modality == "CT" or modality == "MR") and kvp >= 80 and kvp <= 120')
    assert catalog_page.with_range("", "kvp", None, None) == ""
    followed = admin.get(r.headers["location"])
    assert followed.status_code == 200
    bad = admin.get("/ui/data/range", params={"field": "modality", "lo": "1"})
    assert bad.status_code == 400 and "not a number field" in bad.text


def test_quarantined_instances_are_counted_apart_unless_asked(admin: TestClient, data: Data) -> None:
    fx = data.fixture
    left_out = admin.get("/ui/data", params={"field": "state"})
    assert f"Instances <span class=\"count\">{fx.instances - fx.quarantined + 7:,}</span>" in left_out.text
    assert page_data(left_out.text)["distribution"]["x"] == ["ok"]  # type: ignore[index]
    included = admin.get("/ui/data", params={"field": "state", "quarantined": "1"})
    assert f"Instances <span class=\"count\">{fx.instances + 7:,}</span>" in included.text
    dist = page_data(included.text)["distribution"]
    assert isinstance(dist, dict) and dict(zip(dist["x"], dist["counts"], strict=True))["quarantined"] == fx.quarantined
    # the totals stay without them either way, and say so
    assert stat(included.text, "total-instances") == stat(left_out.text, "total-instances")
    assert ">hide</a>" in included.text and ">show</a>" in left_out.text


# -- thumbnails ----------------------------------------------------------------------------------------
def test_series_grid_shows_the_middle_instance_and_pages(admin: TestClient, platform: Platform, data: Data) -> None:
    r = admin.get("/ui/data", params={"q": f'series == "{data.ct_series}"', "preset": "lung"})
    assert thumbnails(r.text) == [f"/v1/catalog/instances/{data.ct_middle}/thumbnail.png?preset=lung&size=256"]
    assert "data-ct" in r.text
    assert f'<noscript><img loading="lazy" width="176" height="176" src="{thumbnails(r.text)[0]}"' in unescape(r.text)
    # synthetic rows have no stored image: their tiles say so instead of a broken image
    clinic = admin.get("/ui/data", params={"q": 'source == "clinic-a"'})
    assert thumbnails(clinic.text) == [] and "image not in the object store" in clinic.text
    n_series = stat(admin.get("/ui/data").text, "total-series")
    with platform.session() as s:
        total, first = catalog_page.series_page(s, platform.objects, parse(""), page=1)
        _, second = catalog_page.series_page(s, platform.objects, parse(""), page=2)
    assert total == n_series > catalog_page.GRID_SIZE
    assert len(first) == catalog_page.GRID_SIZE and second and {t.uid for t in first}.isdisjoint(t.uid for t in second)
    r2 = admin.get("/ui/data", params={"spage": "2"})
    assert second[0].uid in r2.text and 'rel="prev"' in r2.text


def test_thumbnails_load_as_pngs_and_are_audited(admin: TestClient, platform: Platform, data: Data) -> None:
    r = admin.get("/ui/data", params={"q": 'source == "phantoms"', "preset": "bone"})
    srcs = thumbnails(r.text)
    assert len(srcs) == 3
    ct = [src for src in srcs if data.ct_middle in src]
    assert ct and "preset=bone" in ct[0]
    assert all("preset=auto" in src for src in srcs if src not in ct)  # presets apply to CT only
    for src in srcs:
        image = admin.get(src)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG)
    with platform.session() as s:
        events = audit.query(s, action="image.view", actor="ada")
    assert {e.target_id for e in events} >= {data.ct_middle, data.mono1, data.mono2}
    assert all(e.target_kind == "instance" for e in events)


def test_presets_window_ct_and_monochrome1_displays_like_monochrome2(admin: TestClient, data: Data) -> None:
    def pixels(uid: str, preset: str = "auto") -> np.ndarray:
        r = admin.get(catalog_page.thumbnail_url(uid, preset))
        assert r.status_code == 200
        return np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), dtype=np.float64)

    lung, brain = pixels(data.ct_middle, "lung"), pixels(data.ct_middle, "brain")
    assert not np.array_equal(lung, brain)
    m1, m2 = pixels(data.mono1), pixels(data.mono2)
    # Both display the same anatomy the same way: lungs dark, mediastinum bright (MONOCHROME1 is inverted).
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] > 0.95
    size = m1.shape[1]
    assert m1[:, size // 2].mean() > m1[:, int(size * 0.3)].mean() + 40


def test_viewer_sees_the_page_without_images_and_gets_403_on_thumbnails(
    viewer: TestClient, platform: Platform, data: Data
) -> None:
    r = viewer.get("/ui/data", params={"q": 'source == "phantoms"'})
    assert r.status_code == 200 and parts(r.text).h1 == "Data catalog"
    assert thumbnails(r.text) == []  # no image the browser would fail to load
    assert 'data-testid="no-read-data"' in r.text and "read-data" in r.text
    assert "read-data needed" in r.text
    denied = viewer.get(catalog_page.thumbnail_url(data.ct_middle, "auto"))
    assert denied.status_code == 403
    with platform.session() as s:
        assert not audit.query(s, action="image.view", actor="vic")


def test_catalog_page_needs_a_login(platform: Platform) -> None:
    with TestClient(create_app(platform), follow_redirects=False) as c:
        r = c.get("/ui/data?q=modality")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/ui/data")


def test_empty_catalog_page(sqlite_platform: Platform) -> None:
    with TestClient(create_app(sqlite_platform), follow_redirects=False) as c:
        login(c, sqlite_platform, "ada", "admin")
        r = c.get("/ui/data")
        assert r.status_code == 200 and parts(r.text).h1 == "Data catalog"
        assert 'data-testid="empty-catalog"' in r.text
        assert "<code>medcycle data ingest PATH --source NAME</code>" in r.text
        assert "chart-sources" not in r.text and 'id="series"' not in r.text
        filtered = c.get("/ui/data", params={"q": 'modality == "CT"'})
        assert "No series match this filter." in filtered.text and "No matching instance has a value" in filtered.text


# -- datasets ------------------------------------------------------------------------------------------
def labels_csv(studies: list[str], flip: int = 0) -> str:
    rows = ["study,label"]
    for i, uid in enumerate(studies):
        label = "pneumonia" if (i % 3 == 0) != (i < flip) else "normal"
        rows.append(f"{uid},{label}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def dataset(platform: Platform, data: Data) -> str:
    """'cxr': clinic-a's images, study labels and a 60/20/20 split frozen as v1 (tag v1.0); then clinic-b's images
    added and every label flipped, frozen as v2 (tag v2.0). 'empty-one' has no version."""
    with platform.session() as s:
        studies = sorted(s.scalars(select(StudyRow.uid)))
        items.create_dataset(s, "cxr", query='source == "clinic-a"', description="Chest <b>images</b>", actor="ada")
        labels.import_labels(s, platform.objects, "cxr", labels_csv(studies), origin="labels.csv")
        versions.freeze(s, platform.objects, "cxr", tag="v1.0", policy=ratios_policy("train=0.6,val=0.2,test=0.2"),
                        message="first cut")
        items.add_items(s, "cxr", query='source == "clinic-b"')
        labels.import_labels(s, platform.objects, "cxr", labels_csv(studies, flip=len(studies)), origin="labels-v2.csv")
        cards.edit_card(s, "cxr", {"motivation": "Find pneumonia <early>."})
        versions.freeze(s, platform.objects, "cxr", tag="v2.0")
        items.create_dataset(s, "empty-one")
    return "cxr"


def test_datasets_list_shows_working_sets_and_versions(admin: TestClient, dataset: str) -> None:
    r = admin.get("/ui/datasets")
    assert r.status_code == 200
    page = parts(r.text)
    assert page.h1 == "Datasets" and page.title == "Datasets · medcycle"
    row = r.text.split('href="/ui/datasets/cxr"')[1].split("</tr>")[0]
    assert 'href="/ui/datasets/cxr/v2"' in row and "v2.0" in row and "no leakage" in row
    assert "patient-level: train 60%, val 20%, test 20%, seed 0" in row
    assert "Chest &lt;b&gt;images&lt;/b&gt;" in row  # escaped, as every text on the pages
    assert "not frozen yet" in r.text  # empty-one


def test_dataset_page_shows_versions_tags_splits_and_leakage(
    admin: TestClient, platform: Platform, dataset: str
) -> None:
    r = admin.get("/ui/datasets/cxr")
    assert r.status_code == 200 and parts(r.text).h1 == "cxr"
    with platform.session() as s:
        log = versions.log(s, "cxr")
        info = items.dataset_info(s, items.get_dataset(s, "cxr"))
    assert [v.seq for v in log] == [2, 1]
    for v in log:
        assert f'href="/ui/datasets/cxr/v{v.seq}"' in r.text and v.short in r.text
        for name in v.split_counts:
            assert f"{name}: {v.split_counts[name]['items']:,} images" in r.text
    assert "v1.0" in r.text and "v2.0" in r.text and "first cut" in r.text
    assert f"{info.items:,} images" in r.text and "no leakage" in r.text
    assert "Find pneumonia &lt;early&gt;." in r.text  # a human card field
    assert "not written yet" in r.text and "medcycle dataset card edit cxr" in r.text


def test_version_page_renders_the_card_in_the_layout(admin: TestClient, platform: Platform, dataset: str) -> None:
    r = admin.get("/ui/datasets/cxr/v2.0")
    assert r.status_code == 200
    assert parts(r.text).h1 == "cxr v2" and r.text.count("<html") == 1 and r.text.count("<body") == 1
    assert '<a class="nav-link active" href="/ui/datasets"' in r.text
    for section in ("Motivation", "Composition", "Collection process", "Preprocessing and de-identification",
                    "Uses", "Distribution and licence", "Maintenance and changes"):
        assert f'<h3 class="card-section">{section}</h3>' in r.text
    assert "Find pneumonia &lt;early&gt;." in r.text and "<early>" not in r.text
    assert "<code>medcycle dataset pull cxr@v2 --to DIR</code>" in r.text  # backticks in the card's text
    assert "Against v1:" in r.text  # the card's own account of the changes
    with platform.session() as s:
        card = cards.version_card(s, versions.resolve(s, "cxr@v2"))
    balance = card["facts"]["class_balance"]
    chart = json.loads(re.search(r'id="balance-data">(.*?)</script>', r.text, re.S).group(1))  # type: ignore[union-attr]
    assert chart["splits"] == ["train", "val", "test"]
    assert {c["name"]: sum(c["counts"]) for c in chart["classes"]} == {
        label: sum(per.get(label, 0) for per in balance.values()) for label in ("normal", "pneumonia")}
    assert "/v1/datasets/cxr/versions/" in r.text and "card?format=md" in r.text
    # v1 and an id prefix name the same pages
    v1 = admin.get("/ui/datasets/cxr/v1")
    with platform.session() as s:
        v1_id = versions.resolve(s, "cxr@v1").id
    assert admin.get(f"/ui/datasets/cxr/{v1_id[:10]}").text.count(v1_id) == v1.text.count(v1_id) > 0


def test_version_page_diff_against_another_version(admin: TestClient, platform: Platform, dataset: str) -> None:
    r = admin.get("/ui/datasets/cxr/v2", params={"against": "v1"})
    assert r.status_code == 200
    with platform.session() as s:
        expected = versions.diff(s, "cxr@v1", "cxr@v2")
    summary = expected.summary()
    assert summary["added"] > 0 and summary["relabeled"] > 0
    counts = r.text.split('data-testid="diff-summary"')[1].split("</dl>")[0]
    for key, label in (("added", "added"), ("removed", "removed"), ("relabeled", "label changes"),
                       ("moved", "split moves")):
        assert re.search(rf"<dt>{label}</dt><dd[^>]*>{summary[key]}</dd>", counts), key
    assert expected.added[0] in r.text
    uid, old, new = expected.relabeled[0]
    assert f"<td><code>{uid}</code></td><td>{', '.join(old)}</td><td>{', '.join(new)}</td>" in r.text
    assert '<option value="v1" selected>' in r.text
    same = admin.get("/ui/datasets/cxr/v1", params={"against": "v1.0"})
    assert "the same items, labels and splits" in same.text


@pytest.mark.parametrize(("path", "message"), [
    ("/ui/datasets/nope", "dataset &#39;nope&#39; does not exist"),
    ("/ui/datasets/cxr/v9", "has no version &#39;v9&#39;"),
    ("/ui/datasets/cxr/v2?against=v7", "has no version &#39;v7&#39;"),
])
def test_unknown_datasets_and_versions_are_404_pages(admin: TestClient, dataset: str, path: str, message: str) -> None:
    r = admin.get(path)
    assert r.status_code == 404 and message in r.text and "medcycle dataset" in r.text


def test_datasets_page_when_there_are_none(sqlite_platform: Platform) -> None:
    with TestClient(create_app(sqlite_platform), follow_redirects=False) as c:
        login(c, sqlite_platform, "vic", "viewer")
        r = c.get("/ui/datasets")
        assert r.status_code == 200 and "No datasets yet" in r.text
        assert "<code>medcycle dataset create NAME --query EXPR</code>" in r.text
