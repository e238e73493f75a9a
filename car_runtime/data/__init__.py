"""Files shipped inside the package (and the wheel): one copy of each.

- ``systemd/``: ``car-runtime.service``, ``99-car-runtime.rules``, ``config.example.yaml``
  (``car-runtime install-service`` installs them);
- ``calibration/``: the stock default ``calibration.json`` and its JSON schema;
- ``launch/``: the ROS 2 launch file ``car_runtime.launch.py``;
- ``footage/car-event-track-seq-160x120/``: 100 real-car camera frames (MIT, see its
  PROVENANCE.md), the default frames of ``car-runtime bench`` and ``doctor``'s short bench.
"""

from pathlib import Path

DIR = Path(__file__).resolve().parent
SYSTEMD = DIR / "systemd"
CALIBRATION = DIR / "calibration"
LAUNCH = DIR / "launch"
FOOTAGE = DIR / "footage" / "car-event-track-seq-160x120"
