"""The contract between ParanasalSSL.py, its .ui file, its Lib and its CMake lists.

The Qt widget only runs inside Slicer, so these checks read the files: the .ui is valid Qt
Designer XML; every widget the module code touches exists; every ``SlicerParameterName`` is a
parameter-node field bound to a widget type Slicer's parameterNodeWrapper can connect; the
module's imports from ParanasalSSLLib exist; CMake packages every module file.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "ParanasalSSL"
MODULE = MODULE_DIR / "ParanasalSSL.py"
REVIEW_PANEL = MODULE_DIR / "ParanasalSSLLib" / "review_panel.py"  # wires the Review section
JOBS_PANEL = MODULE_DIR / "ParanasalSSLLib" / "jobs_panel.py"  # Training and the background job
ANALYSIS_PANEL = MODULE_DIR / "ParanasalSSLLib" / "analysis_panel.py"  # Analyze and Outputs
UI = MODULE_DIR / "Resources" / "UI" / "ParanasalSSL.ui"
SIDES = ("left", "right")

# What slicer.parameterNodeWrapper's GUI connectors accept (guiConnectors.py), by field type.
CONNECTABLE = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI).getroot()  # raises on invalid XML


@pytest.fixture(scope="module")
def widgets(ui):
    return {w.get("name"): w for w in ui.iter("widget")}


@pytest.fixture(scope="module")
def moduleSource():
    return MODULE.read_text()


@pytest.fixture(scope="module")
def parameterFields(moduleSource):
    """name -> annotation source of the @parameterNodeWrapper class."""
    tree = ast.parse(moduleSource)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body
                    if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in ParanasalSSL.py")


def _property(widget, name):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            child = list(prop)[0]
            if child.tag == "stringlist":
                return [s.text for s in child]
            return child.text
    return None


def test_ui_file_is_a_slicer_module_panel(ui, widgets):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    top = ui.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "ParanasalSSL"
    sections = [_property(w, "text") for w in widgets.values()
                if w.get("class") == "ctkCollapsibleButton"]
    assert sections == ["Inputs", "Outputs", "Review", "Training", "Advanced"]
    declared = {c.findtext("class") for c in ui.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()}
    assert {c for c in used if c.startswith(("ctk", "qMRML"))} <= declared
    assert len(widgets) == len(list(ui.iter("widget")))  # widget names are unique


def test_every_widget_the_module_uses_exists(moduleSource, widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", moduleSource))
    for pattern in re.findall(r'getattr\(self\.ui, f"\{side\}(\w+)"\)', moduleSource):
        used |= {side + pattern for side in SIDES}
    assert used, "the module uses no widgets?"
    assert sorted(used - set(widgets)) == []


def test_every_widget_the_analysis_panel_uses_exists(widgets):
    source = ANALYSIS_PANEL.read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    for pattern in re.findall(r'getattr\(self\.ui, f"\{side\}(\w+)"\)', source):
        used |= {side + pattern for side in SIDES}
    assert {"applyButton", "analysisProgressBar", "analysisStatusLabel", "leftBadgeLabel",
            "rightVolumeLabel", "jumpToPeakButton", "exportResultsButton"} <= used
    assert sorted(used - set(widgets)) == []
    assert widgets["analysisStatusLabel"].get("class") == "QLabel"
    assert _property(widgets["analysisStatusLabel"], "wordWrap") == "true"


def test_every_widget_the_jobs_panel_uses_exists(widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", JOBS_PANEL.read_text()))
    assert {"trainButton", "trainDemoButton", "trainingLogTextEdit", "trainingProgressBar",
            "trainingStatusLabel", "reviewPredictButton", "reviewFinetuneButton"} <= used
    assert sorted(used - set(widgets)) == []


def test_every_widget_the_review_panel_uses_exists(widgets):
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    from ParanasalSSLLib import review_panel

    used = set(re.findall(r"self\.ui\.(\w+)", REVIEW_PANEL.read_text()))
    used |= {side + name for side in SIDES for name in review_panel.SIDE_WIDGETS}
    assert len(used) > 20 and sorted(used - set(widgets)) == []
    for side in SIDES:
        assert widgets[f"{side}TypeComboBox"].get("class") == "QComboBox"
        assert widgets[f"{side}CommentLineEdit"].get("class") == "QLineEdit"


def test_parameter_names_match_the_parameter_node_and_connect(widgets, parameterFields):
    bound = {_property(w, "SlicerParameterName"): w for w in widgets.values()
             if _property(w, "SlicerParameterName")}
    # connectGui refuses a name that is not a field; every field is shown in the GUI
    assert set(bound) == set(parameterFields)
    for name, widget in bound.items():
        annotation, cls = parameterFields[name], widget.get("class")
        if annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", name
            assert _property(widget, "nodeTypes") == [annotation], name
            continue
        base = re.sub(r"^Annotated\[(\w+(?:\.\w+)?),.*\]$", r"\1", annotation)
        assert cls in CONNECTABLE[base], (name, annotation, cls)
        if cls == "ctkSliderWidget":  # needs a bounded float, and the same bounds
            low, high = re.search(r"WithinRange\(([\d.]+), ([\d.]+)\)", annotation).groups()
            assert float(_property(widget, "minimum")) == float(low), name
            assert float(_property(widget, "maximum")) == float(high), name
        if cls == "QComboBox":  # needs a Choice annotation
            assert "Choice(" in annotation, name


def test_apply_is_disabled_with_a_reason_and_the_required_controls_exist(widgets):
    apply = widgets["applyButton"]
    assert _property(apply, "enabled") == "false" and _property(apply, "toolTip")
    assert _property(apply, "text") == "Analyze"
    expected = {
        "placeLeftRoiButton": "QPushButton", "placeRightRoiButton": "QPushButton",
        "suggestRoisButton": "QPushButton", "jumpToPeakButton": "QPushButton",
        "trainDemoButton": "QPushButton", "trainButton": "QPushButton",
        "trainingProgressBar": "QProgressBar", "trainingLogTextEdit": "QPlainTextEdit",
        "thresholdSliderWidget": "ctkSliderWidget", "opacitySliderWidget": "ctkSliderWidget",
        "modelFolderPathLineEdit": "ctkPathLineEdit", "stageComboBox": "QComboBox",
        "deviceComboBox": "QComboBox", "analysisProgressBar": "QProgressBar",
        "analysisStatusLabel": "QLabel",
    }
    for side in SIDES:
        for what in ("Probability", "Badge", "Volume"):
            expected[f"{side}{what}Label"] = "QLabel"
    assert {n: widgets[n].get("class") for n in expected if n in widgets} == expected
    assert _property(widgets["trainingLogTextEdit"], "readOnly") == "true"


def test_every_node_selector_gets_the_scene(ui, widgets):
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in ui.iter("connection")
                 if c.findtext("sender") == "ParanasalSSL"
                 and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert selectors and selectors == connected


def test_the_module_imports_only_what_the_lib_provides(moduleSource):
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    for node in ast.walk(ast.parse(moduleSource)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "ParanasalSSLLib"):
            for alias in node.names:
                if node.module == "ParanasalSSLLib":
                    importlib.import_module(f"ParanasalSSLLib.{alias.name}")
                else:
                    assert hasattr(importlib.import_module(node.module), alias.name), alias.name


def test_choices_offered_are_the_ones_the_training_commands_accept(moduleSource):
    from ParanasalSSLLib import training

    assert "Choice(list(STAGE_CHOICES))" in moduleSource
    assert "Choice(list(DEVICES))" in moduleSource
    assert training.STAGE_CHOICES[0] == "all" and set(training.DEVICES) == {"auto", "cuda", "cpu"}


def test_cmake_packages_every_module_file():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake
    assert "${MODULE_NAME}.py" in cmake
    assert re.search(r"file\(GLOB_RECURSE\s+\w+.*ParanasalSSLLib/\*\.py", cmake, re.S)
    assert re.search(r"file\(GLOB_RECURSE\s+\w+.*paranasal_ssl/\*\.py", cmake, re.S)
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
    assert (MODULE_DIR / "Resources" / "Icons" / "ParanasalSSL.png").is_file()
    top = (REPO / "CMakeLists.txt").read_text()
    for needle in ("project(ParanasalSSL)", "EXTENSION_DEPENDS", "PyTorch",
                   "find_package(Slicer REQUIRED)", "add_subdirectory(ParanasalSSL)",
                   "Slicer_EXTENSION_CPACK"):
        assert needle in top, needle


def test_the_module_loads_before_the_heavy_packages_are_installed(moduleSource, tmp_path):
    """Slicer must be able to load the module (and offer to install packages) on a fresh
    install without torch, MONAI, scipy or scikit-learn: import every Lib module the module
    imports, in a real interpreter where those packages cannot be imported."""
    import subprocess

    libModules = sorted({alias.name for node in ast.walk(ast.parse(moduleSource))
                         if isinstance(node, ast.ImportFrom) and node.module == "ParanasalSSLLib"
                         for alias in node.names}
                        | {node.module.split(".")[1] for node in ast.walk(ast.parse(moduleSource))
                           if isinstance(node, ast.ImportFrom)
                           and (node.module or "").startswith("ParanasalSSLLib.")})
    code = (
        "import sys\n"
        "for name in ('torch', 'monai', 'scipy', 'sklearn', 'tqdm', 'matplotlib'):\n"
        "    sys.modules[name] = None  # any import of it raises ImportError\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        f"for m in {libModules!r}:\n"
        "    __import__('ParanasalSSLLib.' + m)\n"
        "print('ok', len(sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
    assert {"analysis", "analysis_panel", "dependencies", "jobs_panel", "logic",
            "sample_data"} <= set(libModules)
