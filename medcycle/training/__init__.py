"""MONAI/PyTorch training on dataset versions (the ``train`` extra), reported through the tracking SDK.

Nothing here is imported by ``import medcycle``; torch and MONAI are imported only by the modules that
train. Modules:

- ``config``: declarative configs (JSON/TOML/YAML, data only) and their validation;
- ``data``: a pulled folder's ``manifest.csv`` → samples (DICOM/NIfTI/PNG readers, labels, masks) and the
  MONAI transforms and loaders;
- ``models``: the fixed registry of networks; ``trainers``: the loop, metrics, checkpoints, ``train_version``;
- ``demo_data``: synthetic chest radiographs and CT volumes as DICOM for the whole cycle;
- ``cli``: ``medcycle train …`` and ``medcycle demo data``.

See ``docs/training.md``.
"""
