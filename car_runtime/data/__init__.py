"""Files shipped inside the package (and the wheel): one copy of each.

- ``systemd/``: ``car-runtime.service``, ``99-car-runtime.rules``, ``config.example.yaml``
  (``car-runtime install-service`` installs them);
- ``calibration/``: the stock default ``calibration.json`` and its JSON schema;
- ``launch/``: the ROS 2 launch file ``car_runtime.launch.py``.
"""

from pathlib import Path

DIR = Path(__file__).resolve().parent
SYSTEMD = DIR / "systemd"
CALIBRATION = DIR / "calibration"
LAUNCH = DIR / "launch"
