"""Serving: a batched inference service on durable jobs (REST, DICOMweb, DICOM C-STORE intake).

Contract between the parts (each module owns one):

* :mod:`.predictor` — ``Predictor.load(platform, model_ref)`` resolves an alias once, loads the version by
  digest (through :func:`medcycle.evaluation.predict.load`), and ``predict(batch)`` runs the OOD gate, the
  training preprocessing, inference and postprocessing. Pure and testable on the CPU.
* :mod:`.intake` — ``submit(platform, inputs, *, model, source=None, idempotency_key=None, deadline_s=None,
  webhook=None, params=None) -> Job``: stores inputs as objects (never pixels in the queue), enqueues on the
  ``inference`` queue with object references. Every intake (REST, DICOMweb STOW-RS, C-STORE SCP) calls it.
* :mod:`.worker` — the dynamic batcher (counts images/slices, bounded delay) over :mod:`medcycle.jobs`,
  writing results idempotently (key = input digests + model version + parameters) and logging each
  prediction through :func:`medcycle.monitoring.log.record` (the monitoring layer owns the prediction log).
* :mod:`.results` — stored results (JSON findings, NIfTI/PNG masks, DICOM SEG, SR / secondary capture).
"""
