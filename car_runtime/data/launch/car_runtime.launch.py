"""Launch the ``car_runtime`` node (``car-runtime ros``) with every parameter as a launch argument.

On the car, after ``pip install 'car-runtime[ros]'`` (or with a sourced ROS 2 and car-runtime
installed into the same Python)::

    ros2 launch $(car-runtime ros --launch-file) \\
        model_path:=/opt/aws/deepracer/artifacts/my-model max_speed_pct:=40.0

(``car-runtime ros --launch-file`` prints where this file is installed.)

car-runtime is a pip package, not an ament package, so the node runs the ``car-runtime`` console
script from PATH (``launch_ros`` runs ``executable`` as given when no ``package`` is set) with the
``ros`` subcommand. Defaults below mirror ``car_runtime/ros/params.py`` (a test checks it).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# name: (default as launch text, type, description)
ARGUMENTS = {
    "model_path": ("", str, "model.tar.gz, model folder or model.xml (required)"),
    "camera": ("auto", str, "auto | camera index | /dev/videoN | video file | image folder"),
    "fps": ("0.0", float, "pace an image folder (0 = the source's own rate)"),
    "output": ("sysfs", str, "sysfs[:PWM_DIR] | serial:URL | record:PATH"),
    "calibration_path": ("/opt/aws/deepracer/calibration.json", str, "stock calibration.json"),
    "max_speed_pct": ("50.0", float, "throttle scale 0-100 (live)"),
    "arm": ("false", bool, "start armed; otherwise call ~/enable"),
    "deadline_ms": ("100.0", float, "neutral if no fresh command within this"),
    "max_frame_age_ms": ("100.0", float, "never act on an older frame"),
    "stall_timeout_ms": ("2000.0", float, "a stage stuck this long: neutral and exit 5"),
    "device": ("CPU", str, "OpenVINO device"),
    "precision": ("f32", str, "f32 | f16 | bf16"),
    "preprocess": ("stock", str, "stock | training | fast"),
    "threads": ("0", int, "inference threads (0 = all cores)"),
    "sac_squash": ("false", bool, "SAC models: tanh-squash outputs"),
    "status_interval_s": ("1.0", float, "period of ~/status (0 = off)"),
    "record_dir": ("", str, "flight recorder folder ('' = off)"),
    "record_storage": ("mcap", str, "flight recorder storage: mcap | sqlite3"),
    "record_min_free_mb": ("200.0", float, "stop recording below this much free space"),
    "debug_image_hz": ("0.0", float, "rate of ~/debug_image (0 = off; live)"),
}


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, _type, description) in ARGUMENTS.items()
    ]
    node = Node(
        executable="car-runtime",
        arguments=["ros"],
        name="car_runtime",
        output="screen",
        emulate_tty=True,
        parameters=[{
            name: ParameterValue(LaunchConfiguration(name), value_type=value_type)
            for name, (_default, value_type, _description) in ARGUMENTS.items()
        }],
    )
    return LaunchDescription([*arguments, node])
