"""``car-runtime ros``: run the ``car_runtime`` ROS 2 node (see :mod:`car_runtime.ros.node`).

Example (a laptop, no hardware; parameters as in the README's ROS 2 table)::

    car-runtime ros --ros-args -p model_path:=models/demo-untrained-deep-ffc-discrete.tar.gz \\
        -p camera:=car_runtime/data/footage/car-event-track-seq-160x120 -p fps:=15.0 \\
        -p output:=record:drive.jsonl
    ros2 service call /car_runtime/enable std_srvs/srv/SetBool "{data: true}"

rclpy comes from the ``ros`` extra (``pip install 'car-runtime[ros]'``) or a sourced ROS 2 install.
"""

from __future__ import annotations

import argparse

INSTALL_HINT = (
    "install it with `pip install 'car-runtime[ros]'` or source a ROS 2 install "
    "(`source /opt/ros/<distro>/setup.bash`)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ros",
        help="run the car_runtime ROS 2 node (services, status, decisions, live parameters)",
        description="Run the car_runtime ROS 2 node over the same drive loop as `run`. "
        "Starts disarmed unless -p arm:=true; arm with the ~/enable service.",
    )
    p.add_argument("--launch-file", action="store_true", dest="launch_file",
                   help="print the path of the installed ROS 2 launch file and exit "
                        "(ros2 launch $(car-runtime ros --launch-file) model_path:=...)")
    p.add_argument(
        "--ros-args",
        nargs=argparse.REMAINDER,
        dest="ros_args",
        metavar="ARG",
        help="ROS arguments, e.g. --ros-args -p model_path:=PATH -p camera:=auto "
        "--params-file car.yaml (everything after --ros-args goes to ROS)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_runtime.errors import CarRuntimeError

    if args.launch_file:
        from car_runtime import data

        print(data.LAUNCH / "car_runtime.launch.py")
        return 0

    try:
        import rclpy  # noqa: F401

        from car_runtime.ros import log_bridge, node
    except ImportError as exc:
        if (exc.name or "").startswith("car_runtime"):
            raise
        raise CarRuntimeError(f"the ros command needs rclpy ({exc}); {INSTALL_HINT}") from None
    log_bridge.install(verbose=getattr(args, "verbose", False))  # one log format: ROS's
    argv = ["car-runtime"]
    if args.ros_args is not None:
        argv += ["--ros-args", *args.ros_args]
    return node.main(argv)
