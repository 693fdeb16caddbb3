"""The Predictor's penultimate features for the drift monitor: taken in the same forward pass, on the layer the
contract names (else the head's input), the same as the reference capture's FeatureTap; prepared cases."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving.predictor import CaseInput, Predictor
from medcycle.training.data import read_file
from tests.serving.core_fixtures import CLS, SEG, SrvTemplate


def _cases(template: SrvTemplate, n: int = 5) -> list[CaseInput]:
    return [CaseInput(read_file(p)) for p in template.radiographs[:n]]


def test_embeddings_are_the_heads_input_from_the_same_pass(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    import torch

    from medcycle.monitoring.embeddings import FeatureTap

    predictor = Predictor.load(srv_platform, CLS, max_batch=2)  # chunks: the tap collects across passes
    predictor.gate = None
    cases = _cases(srv_template)
    calls = 0

    def count(_module: object, _inputs: object, _output: object) -> None:
        nonlocal calls
        calls += 1

    handle = predictor.model.register_forward_hook(count)
    try:
        got = predictor.predict(cases)
    finally:
        handle.remove()
    assert calls == 3  # 5 images in chunks of 2: no second forward pass for the features
    head = [m for m in predictor.model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)][-1]
    tensors = [predictor.transform(predictor.transform.units(c.pixels)[0]) for c in cases]
    with torch.inference_mode(), FeatureTap(predictor.model) as tap:
        predictor.model(torch.stack(tensors))
    expected = tap.features()
    assert expected.shape == (5, head.in_features if isinstance(head, torch.nn.Linear) else head.in_channels)
    for pred, want in zip(got, expected, strict=True):
        assert pred.embedding is not None and pred.embedding.dtype == np.float32
        np.testing.assert_allclose(pred.embedding, want, rtol=1e-4, atol=1e-5)
    # a segmentation network: its final convolution's input, pooled over space
    seg = Predictor.load(srv_platform, SEG)
    seg.gate = None
    [one] = seg.predict(cases[:1])
    assert one.embedding is not None and one.embedding.ndim == 1 and np.isfinite(one.embedding).all()


def test_the_contract_names_the_embedding_layer(srv_platform: Platform, srv_template: SrvTemplate,
                                                caplog: pytest.LogCaptureFixture) -> None:
    base = Predictor.load(srv_platform, CLS)
    names = [n for n, m in base.model.named_modules() if n and not list(m.children())]
    earlier = next(n for n in reversed(names[:-1]) if "conv" in n.lower() or "lin" in n.lower())
    with srv_platform.session() as s:
        run = registry.info(s, registry.resolve(s, f"{CLS}@v1")).run_id
        registry.register(s, srv_platform.objects, "chest-named", run_id=run, contract={"embedding_layer": earlier})
        registry.register(s, srv_platform.objects, "chest-wrong", run_id=run,
                          contract={"embedding_layer": "no.such.layer"})
    named = Predictor.load(srv_platform, "chest-named")
    assert named.tap is not None and named.tap.layer is dict(named.model.named_modules())[earlier]
    with caplog.at_level(logging.WARNING):
        wrong = Predictor.load(srv_platform, "chest-wrong")
    assert wrong.tap is None and "no.such.layer" in caplog.text  # served all the same, without embeddings
    wrong.gate = None
    [pred] = wrong.predict(_cases(srv_template, 1))
    assert pred.status == "ok" and pred.embedding is None


def test_prepared_cases_predict_as_unprepared_ones(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    predictor = Predictor.load(srv_platform, CLS)
    cases = _cases(srv_template, 4)
    ready = [predictor.prepare(c) for c in cases]
    other = Predictor.load(srv_platform, CLS)  # prepared by another predictor: prepared again, not trusted
    direct, prepared, foreign = predictor.predict(cases), predictor.predict(cases, ready), other.predict(cases, ready)
    for a, b, c in zip(direct, prepared, foreign, strict=True):
        assert a.status == b.status == c.status
        assert a.probabilities == b.probabilities
        np.testing.assert_allclose(a.probabilities, c.probabilities, atol=1e-6)
