"""The launch file, checked statically against the parameter table the node declares.

The ``launch``/``launch_ros`` packages are not on PyPI, so the file is parsed, not executed: its
Node action must run ``car-runtime ros`` under the node name ``car_runtime`` and pass exactly the
node's parameters, each launch argument defaulting to the node's own default.
"""

from __future__ import annotations

import ast

from car_runtime import data
from car_runtime.ros import params

LAUNCH_FILE = data.LAUNCH / "car_runtime.launch.py"


def _tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(encoding="utf-8"), filename=str(LAUNCH_FILE))


def _call(tree: ast.Module, name: str) -> ast.Call:
    calls = [n for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]
    assert len(calls) == 1, f"expected one {name}(...) in {LAUNCH_FILE.name}, found {len(calls)}"
    return calls[0]


def _arguments_table(tree: ast.Module) -> dict[str, tuple[str, str, str]]:
    """``ARGUMENTS = {name: (default text, type, description)}`` as literals (type by name)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["ARGUMENTS"]:
            table = {}
            for key, value in zip(node.value.keys, node.value.values):
                default, type_, description = value.elts
                table[ast.literal_eval(key)] = (
                    ast.literal_eval(default), type_.id, ast.literal_eval(description))
            return table
    raise AssertionError("no ARGUMENTS table in the launch file")


def test_launch_file_defines_generate_launch_description():
    tree = _tree()
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in names
    imports = {a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "Node", "DeclareLaunchArgument", "LaunchConfiguration"} <= imports


def test_node_action_runs_the_car_runtime_node():
    node = _call(_tree(), "Node")
    kw = {k.arg: k.value for k in node.keywords}
    assert "package" not in kw  # a pip install is not an ament package: the script is on PATH
    assert ast.literal_eval(kw["executable"]) == params.EXECUTABLE
    assert tuple(ast.literal_eval(kw["arguments"])) == params.EXECUTABLE_ARGS
    assert ast.literal_eval(kw["name"]) == params.NODE_NAME
    # parameters=[{name: ParameterValue(LaunchConfiguration(name), ...) for ... in ARGUMENTS}]
    (comp,) = kw["parameters"].elts
    assert isinstance(comp, ast.DictComp)
    assert ast.unparse(comp.generators[0].iter) == "ARGUMENTS.items()"
    assert ast.unparse(comp.value).startswith("ParameterValue(LaunchConfiguration(name)")


def test_launch_arguments_match_the_declared_parameters():
    table = _arguments_table(_tree())
    assert list(table) == list(params.NAMES)
    for p in params.PARAMETERS:
        text, type_name, description = table[p.name]
        assert type_name == type(p.default).__name__, p.name
        assert description, p.name
        if isinstance(p.default, bool):
            assert text == str(p.default).lower(), p.name
        elif isinstance(p.default, (int, float)):
            assert type(p.default)(text) == p.default and text == str(p.default), p.name
        else:
            assert text == p.default, p.name
