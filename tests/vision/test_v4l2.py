"""V4L2 camera description: the ioctl numbers and structure layouts against the values
``linux/videodev2.h`` gives on x86-64, the decoding of filled structures (packed here field by
field as a driver fills them), and the real syscalls on what this machine has: no camera, so a
character device that is not V4L2 (/dev/null), a missing node and a regular file. A real camera
is only on the car: ``car-runtime doctor`` there lists what it offers."""

from __future__ import annotations

import struct

from car_runtime.vision import v4l2


def test_ioctl_numbers_are_the_kernels():
    # From the kernel's headers on x86-64 (e.g. `printf("%lx", VIDIOC_QUERYCAP)`).
    assert v4l2.VIDIOC_QUERYCAP == 0x80685600
    assert v4l2.VIDIOC_ENUM_FMT == 0xC0405602
    assert v4l2.VIDIOC_ENUM_FRAMESIZES == 0xC02C564A
    assert v4l2.VIDIOC_ENUM_FRAMEINTERVALS == 0xC034564B
    assert (v4l2.CAPABILITY.size, v4l2.FMTDESC.size, v4l2.FRMSIZE.size, v4l2.FRMIVAL.size) == (
        104, 64, 44, 52)


def test_fourcc():
    assert v4l2.fourcc_code("MJPG") == 0x47504A4D  # v4l2_fourcc('M','J','P','G')
    assert v4l2.fourcc_text(0x56595559) == "YUYV"


def test_parse_capability_uses_the_nodes_device_caps():
    def cap(caps: int, device_caps: int) -> bytes:
        return (b"uvcvideo".ljust(16, b"\0") + b"HD Camera: HD Camera".ljust(32, b"\0")
                + b"usb-0000:00:15.0-2".ljust(32, b"\0")
                + struct.pack("<III3I", 0x050F00, caps, device_caps, 0, 0, 0))

    capture_node = cap(0x84A00001, 0x04200001)  # DEVICE_CAPS set, node captures
    metadata_node = cap(0x84A00001, 0x04800000)  # same device, its metadata node
    assert v4l2.parse_capability(capture_node) == (
        "uvcvideo", "HD Camera: HD Camera", "usb-0000:00:15.0-2", True)
    assert v4l2.parse_capability(metadata_node)[3] is False
    assert v4l2.parse_capability(cap(0x00000001, 0))[3] is True  # an old driver: no DEVICE_CAPS


def test_parse_enumerations():
    fmt = struct.pack("<III32sII3I", 0, 1, 1, b"Motion-JPEG", v4l2.fourcc_code("MJPG"), 0, 0, 0, 0)
    assert v4l2.parse_fmtdesc(fmt) == ("MJPG", "Motion-JPEG")
    discrete = struct.pack("<III6I2I", 0, v4l2.fourcc_code("MJPG"), 1, 640, 480, 0, 0, 0, 0, 0, 0)
    assert v4l2.parse_frmsize(discrete) == [(640, 480)]
    stepwise = struct.pack("<III6I2I", 0, 0, 3, 160, 1920, 16, 120, 1080, 8, 0, 0)
    assert v4l2.parse_frmsize(stepwise) == [(1920, 1080), (160, 120)]
    ival = struct.pack("<IIIII6I2I", 0, 0, 640, 480, 1, 1, 30, 0, 0, 0, 0, 0, 0)
    assert v4l2.parse_frmival(ival) == [30.0]
    ival = struct.pack("<IIIII6I2I", 0, 0, 640, 480, 1, 333333, 10000000, 0, 0, 0, 0, 0, 0)
    assert round(v4l2.parse_frmival(ival)[0], 2) == 30.0  # 100 ns units, as some drivers report
    cont = struct.pack("<IIIII6I2I", 0, 0, 640, 480, 2, 1, 60, 1, 5, 1, 1, 0, 0)
    assert v4l2.parse_frmival(cont) == [60.0, 5.0]


def test_camera_info_offers():
    info = v4l2.CameraInfo("/dev/video0", captures=True, formats=[
        v4l2.Format("MJPG", "Motion-JPEG", (v4l2.Mode(640, 480, (30.0, 15.0)),)),
        v4l2.Format("YUYV", "YUYV 4:2:2", (v4l2.Mode(640, 480, (10.0,)),)),
    ])
    assert info.offers("MJPG", 640, 480, 30)
    assert not info.offers("YUYV", 640, 480, 30) and not info.offers("MJPG", 1280, 720, 30)
    assert info.to_json()["formats"][0]["modes"] == [{"width": 640, "height": 480, "fps": [30.0, 15.0]}]


def test_real_syscalls_on_what_this_machine_has(tmp_path):
    assert v4l2.describe("/dev/null").error == "not a V4L2 device"  # real ioctl: ENOTTY
    missing = v4l2.describe(tmp_path / "video9")
    assert missing.error.startswith("cannot open") and not missing.captures
    plain = tmp_path / "video0"
    plain.write_bytes(b"")
    assert v4l2.describe(plain).error == "not a V4L2 device"
