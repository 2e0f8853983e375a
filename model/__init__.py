"""GRD-Line model package: GRD-Net in pure PyTorch (no Ray, Kafka or Redis).

Modules: ``config`` (pydantic config, profiles), ``blocks`` / ``networks`` (G, C, Δ), ``perlin`` /
``anomalies`` (synthetic defects), ``losses``, ``trainer``, ``pipeline`` (train → calibrate →
save), ``data`` (MVTec layout), ``metrics``, ``calibration``, ``evaluate``, ``artefact``
(safetensors + JSON), ``predictor`` (serving API), ``cli`` (``grdline train|eval``), ``testing``
(tiny synthetic datasets). See docs/interfaces.md and shared/docs/grdnet-spec.md.
"""
