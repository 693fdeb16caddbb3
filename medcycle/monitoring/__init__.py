"""Monitoring: the prediction log, drift detection, alerts, scheduled reports and dashboards.

Contract with serving: :func:`medcycle.monitoring.log.record(session, PredictionRecord)` is called once per
finished (or failed, or refused) inference job, in the transaction that stores its result; it holds no
patient data (header fields, input statistics, OOD score/decision, output summary, latency, model version,
outcome, error class).

Modules (docs/monitoring.md):

* :mod:`.log` — the prediction log (:class:`~.log.PredictionRecord`, :func:`~.log.record`, retention purge);
  :mod:`.describe` — what a record keeps of an input and an output (allow-listed header fields, input
  statistics, mask summary); :mod:`.embeddings` — penultimate features taken with hooks (``FeatureTap``).
* :mod:`.signals`, :mod:`.reference`, :mod:`.persistence`, :mod:`.drift` — drift signals, references
  calibrated to a false-page budget (``capture`` from a dataset version's validation split), the k-of-n
  paging rule, and windows of the log tested and stored.
* :mod:`.alerts`, :mod:`.operations`, :mod:`.notify`, :mod:`.sentry`, :mod:`.scrub` — alerts (tiers, dedup,
  grouping, cooldown, ack, silence), the error/OOD/latency rules, chat and Sentry delivery, scrubbing.
* :mod:`.report`, :mod:`.charts`, :mod:`.schedule` — reports (HTML with histogram images, posted), and the
  thrice-daily loop.
* :mod:`.dashboard`, :mod:`.overlay`, :mod:`.links`, :mod:`.metrics` — dashboard data, predictions drawn
  with mask contours, links back into the UI, Prometheus series.
"""
