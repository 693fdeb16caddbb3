"""The data catalog and dataset pages in headless Chromium: charts draw, the field and the CT window change,
thumbnails load (MONOCHROME1 included), and a dataset version shows its card and a diff."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import StudyRow
from medcycle.datasets import cards, items, labels, versions
from medcycle.datasets.splits import ratios_policy
from medcycle.platform import Platform
from medcycle.testing.browser import LiveServer
from medcycle.testing.catalog import make_catalog
from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph
from tests.browser.helpers import SCREENSHOTS, log_in, shot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PHANTOMS = 'source == "phantoms"'


def populate(platform: Platform, folder: Path) -> None:
    """A synthetic multi-site catalog (no stored images, some quarantined), real ingested phantoms (two CT
    series, DX radiographs as MONOCHROME1 and MONOCHROME2) and a dataset 'chest-xr' with two versions."""
    with platform.session() as s:
        if items.list_datasets(s):
            return  # the live server is shared by the session; the data is already there
        make_catalog(s, sources=3, patients=40, studies_per_patient=2, series_per_study=2, instances_per_series=4,
                     quarantine_rate=0.03, seed=11)
    write_ct_series(folder / "ct1", slices=9, seed=1)
    write_ct_series(folder / "ct2", FakePatient(patient_id="MRN-CT2"), slices=7, seed=2, lesion=False)
    write_radiograph(folder / "dx1.dcm", FakePatient(patient_id="MRN-DX1"), monochrome1=True, seed=3)
    write_radiograph(folder / "dx2.dcm", FakePatient(patient_id="MRN-DX2"), seed=4)
    summary = ingest(platform, [folder], source="phantoms")
    assert summary.ingested == 18 and not summary.rejected
    with platform.session() as s:
        studies = sorted(s.scalars(select(StudyRow.uid)))
        csv = "study,label\n" + "".join(
            f"{u},{'pneumonia' if i % 3 == 0 else 'normal'}\n" for i, u in enumerate(studies))
        items.create_dataset(s, "chest-xr", query='modality in ["CR", "DX"] and source == "clinic-a"',
                             description="Chest radiographs for pneumonia triage")
        labels.import_labels(s, platform.objects, "chest-xr", csv, origin="labels.csv")
        versions.freeze(s, platform.objects, "chest-xr", tag="v1.0",
                        policy=ratios_policy("train=0.7,val=0.15,test=0.15"), message="first release")
        items.add_items(s, "chest-xr", query='modality in ["CR", "DX"] and source == "clinic-b"')
        flipped = "study,label\n" + "".join(
            f"{u},{'normal' if i % 3 == 0 or i % 7 == 0 else 'pneumonia' if i % 5 == 0 else 'normal'}\n"
            for i, u in enumerate(studies))
        labels.import_labels(s, platform.objects, "chest-xr", flipped, origin="labels-reviewed.csv")
        cards.edit_card(s, "chest-xr", {"motivation": "Triage of chest radiographs for suspected pneumonia.",
                                        "licence": "Internal research use only."})
        versions.freeze(s, platform.objects, "chest-xr", tag="v2.0", message="clinic-b added, labels reviewed")


def images_loaded(tab: Page) -> list[int]:
    """Scroll the thumbnails into view (they load lazily, one at a time), wait for all, return their widths."""
    tab.locator("#series").scroll_into_view_if_needed()
    tab.wait_for_function(
        "() => [...document.querySelectorAll('.thumb-frame img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    widths: list[int] = tab.eval_on_selector_all(".thumb-frame img", "imgs => imgs.map(i => i.naturalWidth)")
    return widths


def test_catalog_page_charts_fields_presets_and_thumbnails(
    live_server: LiveServer, page: Page, console_errors: list[str], tmp_path: Path
) -> None:
    populate(live_server.platform, tmp_path / "in")
    log_in(page, live_server.url, live_server.token, "/ui/data")
    assert page.locator("main h1").inner_text() == "Data catalog"
    page.wait_for_selector("#chart-sources .main-svg")
    page.wait_for_selector("#chart-manufacturers .main-svg")
    page.wait_for_selector("#chart-distribution .main-svg")
    assert page.locator("#chart-sources path.surface").count() > 10  # source → modality → body part
    page.select_option("#breakdown-metric", "bytes")  # redrawn in place
    page.wait_for_selector("#chart-sources .main-svg")
    shot(page, "catalog")

    # A field: a server round trip redraws the distribution.
    page.select_option("#field", "p50")
    page.wait_for_url(re.compile(r"field=p50"))
    page.wait_for_selector("#chart-distribution .main-svg")
    assert page.locator("#chart-distribution .bars path").count() >= 5
    page.select_option("#field", "manufacturer")
    page.wait_for_url(re.compile(r"field=manufacturer"))
    page.wait_for_selector("#chart-distribution .main-svg")

    # Only the ingested phantoms have stored images: filter to them, then look at the thumbnails.
    page.fill("#q", PHANTOMS)
    page.click(".query-form button[type=submit]")
    page.wait_for_url(re.compile(r"q=source"))
    assert page.locator("[data-testid=total-instances]").inner_text() == "18"
    assert page.locator(".thumb-frame img").count() == 4
    assert all(w > 0 for w in images_loaded(page))
    assert page.locator(".thumb .badge", has_text="MONOCHROME1").count() == 1
    before = page.locator("img[data-ct]").first.get_attribute("src") or ""
    page.select_option("#preset", "lung")  # CT images swap in place, others keep their own window
    page.wait_for_function(
        "() => [...document.querySelectorAll('img[data-ct]')].every(i => i.src.includes('preset=lung'))")
    assert all(w > 0 for w in images_loaded(page))
    assert "preset=lung" not in before and "preset=lung" in page.url
    others = page.locator(".thumb-frame img:not([data-ct])")
    assert others.count() == 2 and others.evaluate_all("imgs => imgs.every(i => i.src.includes('preset=auto'))")
    page.locator("#series").screenshot(path=str(SCREENSHOTS / "catalog-series.png"))
    shot(page, "catalog-thumbnails")

    # The range form narrows the filter.
    page.select_option("#field", "p50")
    page.wait_for_url(re.compile(r"field=p50"))
    page.fill(".range-form input[name=hi]", "0")
    page.click(".range-form button[type=submit]")
    page.wait_for_url(re.compile(r"p50\+%3C%3D\+0"))
    query = page.locator("#q").input_value()
    assert query.startswith('source == "phantoms" and p50 >= ') and query.endswith(" and p50 <= 0")

    # A bad filter: the message and hint on the page (a 400 document, which Chromium logs).
    page.fill("#q", 'modality = "CT"')
    page.click(".query-form button[type=submit]")
    page.wait_for_selector("#query-error")
    assert "Use == to compare." in page.locator("#query-error").inner_text()
    console_errors[:] = [e for e in console_errors if "400" not in e]
    shot(page, "catalog-bad-filter")
    assert console_errors == []


def test_dataset_pages_show_versions_card_and_diff(
    live_server: LiveServer, page: Page, console_errors: list[str], tmp_path: Path
) -> None:
    populate(live_server.platform, tmp_path / "in")
    log_in(page, live_server.url, live_server.token, "/ui/datasets")
    assert page.locator("main h1").inner_text() == "Datasets"
    shot(page, "datasets")
    page.click("a[href='/ui/datasets/chest-xr']")
    page.wait_for_url(f"{live_server.url}/ui/datasets/chest-xr")
    assert page.locator("main h1").inner_text() == "chest-xr"
    assert page.locator("main table").first.locator("tbody tr").count() == 2
    shot(page, "dataset")
    page.click("form.compare-form button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/datasets/chest-xr/v2\?against=v1"))
    assert page.locator("main h1").inner_text() == "chest-xr v2"
    page.wait_for_selector("#chart-balance .main-svg")
    summary = page.locator("[data-testid=diff-summary]").inner_text().lower()
    assert "added" in summary and "label changes" in summary
    assert page.locator("h3.card-section", has_text="Composition").count() == 1
    shot(page, "dataset-version")
    assert console_errors == []
