"""Fixtures for the replay tests; the helpers live in ``replay_expect.py``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


@pytest.fixture(scope="session")
def ros_msgs(typestore):
    """Constructors for sensor_msgs Image / CompressedImage with an empty header (like stock)."""
    T = typestore.types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                      frame_id="")

    def image(bgr: np.ndarray, encoding: str = "bgr8"):
        arr = bgr if encoding == "bgr8" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = arr.shape[:2]
        return T["sensor_msgs/msg/Image"](
            header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3,
            data=np.ascontiguousarray(arr).reshape(-1),
        )

    def compressed(jpeg: bytes):
        return T["sensor_msgs/msg/CompressedImage"](
            header=header, format="jpeg", data=np.frombuffer(jpeg, np.uint8).copy()
        )

    def string(text: str):
        return T["std_msgs/msg/String"](data=text)

    return {"image": image, "compressed": compressed, "string": string}


@pytest.fixture(scope="session")
def seq_frames(footage_seq_dir: Path) -> list[Path]:
    return sorted(footage_seq_dir.glob("*.jpg"))


@pytest.fixture(scope="session")
def demo_policy(demo_model: Path):
    """The demo model compiled separately from any replay (f32, OpenVINO defaults)."""
    from car_runtime.model.policy import load_model

    loaded = load_model(demo_model)
    yield loaded.policy
    loaded.close()
