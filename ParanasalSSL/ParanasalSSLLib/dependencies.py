"""Which Python packages the core needs inside Slicer, which are missing, and installing them.

Pure logic: the version lookup and the installers are passed in, so it runs and is tested
outside Slicer. The widget asks the user once; this module only reports and installs.

Rules
- torch goes through the PyTorch extension's ``PyTorchUtils`` (it picks the CUDA or CPU build
  that fits the machine); without that extension the user is told to install it.
- Slicer's own SimpleITK, numpy, requests and pydicom (its DICOM module's) are never
  replaced: if one is too old the user is told to update Slicer. Every pip call gets a
  constraints file pinning the installed versions of these (and of torch), so no other package
  can pull a different build in.
- Only what is missing is installed, with the same version floors as ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

TORCH = "torch"
PROTECTED = ("SimpleITK", "numpy", "requests", "pydicom")  # shipped with Slicer: never replaced


@dataclass(frozen=True)
class Requirement:
    name: str  # distribution name, as pip knows it
    minimum: str  # version floor

    @property
    def spec(self) -> str:
        return f"{self.name}>={self.minimum}"


# Keep in step with [project.dependencies] in pyproject.toml (a test checks it).
REQUIREMENTS = (
    Requirement("torch", "2.2"),
    Requirement("monai", "1.3"),
    Requirement("SimpleITK", "2.3"),
    Requirement("numpy", "1.24"),
    Requirement("scipy", "1.10"),
    Requirement("scikit-learn", "1.3"),
    Requirement("tqdm", "4.60"),
    Requirement("matplotlib", "3.7"),
    Requirement("pydicom", "2.0"),
)


@dataclass(frozen=True)
class Status:
    requirement: Requirement
    installed: Optional[str]  # version, or None when absent

    @property
    def ok(self) -> bool:
        return self.installed is not None and versionAtLeast(self.installed,
                                                             self.requirement.minimum)

    @property
    def protected(self) -> bool:
        return self.requirement.name.lower() in {p.lower() for p in PROTECTED}

    def describe(self) -> str:
        r = self.requirement
        if self.ok:
            return f"{r.name} {self.installed}"
        if self.installed is None:
            return f"{r.name}: missing (needs >= {r.minimum})"
        return f"{r.name}: {self.installed} is too old (needs >= {r.minimum})"


class DependencyError(RuntimeError):
    """A requirement that cannot be installed from here, with what the user should do."""


def installedVersion(name: str) -> Optional[str]:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versionAtLeast(version: str, minimum: str) -> bool:
    """``version >= minimum`` by PEP 440 (local labels such as ``+cpu`` ignored)."""
    try:
        from packaging.version import Version

        return Version(version) >= Version(minimum)
    except Exception:  # packaging absent or a non-PEP 440 version: compare the numbers
        return _numbers(version) >= _numbers(minimum)


def _numbers(version: str) -> tuple:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def checkDependencies(requirements: Sequence[Requirement] = REQUIREMENTS,
                      versionOf: Callable[[str], Optional[str]] = installedVersion
                      ) -> List[Status]:
    """The status of every requirement."""
    return [Status(r, versionOf(r.name)) for r in requirements]


def missing(statuses: Sequence[Status]) -> List[Status]:
    return [s for s in statuses if not s.ok]


def summary(statuses: Sequence[Status]) -> str:
    """A few lines for the question the widget asks before installing."""
    lacking = missing(statuses)
    if not lacking:
        return "All required Python packages are installed."
    lines = ["ParanasalSSL needs these Python packages:"]
    lines += [f"  - {s.describe()}" for s in lacking]
    return "\n".join(lines)


def constraintsText(versionOf: Callable[[str], Optional[str]] = installedVersion) -> str:
    """pip constraints pinning the installed torch and Slicer's own packages."""
    lines = []
    for name in (TORCH, *PROTECTED):
        version = versionOf(name)
        if version:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def installMissing(statuses: Sequence[Status], installer: Callable[[List[str]], None],
                   torchInstaller: Optional[Callable[[str], None]] = None,
                   versionOf: Callable[[str], Optional[str]] = installedVersion,
                   workDir: Optional[Path] = None) -> List[str]:
    """Install what is missing; returns the requirement specs installed.

    ``installer(args)``: runs ``pip install *args`` (``slicer.util.pip_install`` in Slicer).
    ``torchInstaller(spec)``: installs torch for this machine (``PyTorchUtils`` in Slicer).
    Raises ``DependencyError`` for a protected package that is too old, or torch without a
    torch installer; nothing is installed in that case.
    """
    lacking = missing(statuses)
    for status in lacking:
        if status.protected:
            raise DependencyError(
                f"{status.describe()}; it ships with Slicer and is not replaced here. "
                "Install a newer Slicer release.")
    torchMissing = [s for s in lacking if s.requirement.name == TORCH]
    if torchMissing and torchInstaller is None:
        raise DependencyError(f"{torchMissing[0].describe()}; install the PyTorch extension "
                              "from the Extensions Manager, restart Slicer and try again.")
    installed = []
    if torchMissing:
        torchInstaller(torchMissing[0].requirement.spec)
        installed.append(torchMissing[0].requirement.spec)
    specs = [s.requirement.spec for s in lacking if s.requirement.name != TORCH]
    if specs:
        folder = Path(workDir or tempfile.mkdtemp(prefix="paranasal-deps-"))
        folder.mkdir(parents=True, exist_ok=True)
        constraints = folder / "constraints.txt"
        constraints.write_text(constraintsText(versionOf), encoding="utf-8")
        installer([*specs, "-c", str(constraints)])
        installed += specs
    return installed


# -- the real installers inside Slicer (not importable without the application) --------------


def slicerPipInstaller(args: List[str]) -> None:
    """``pip install *args`` through Slicer's ``slicer.util.pip_install``."""
    import slicer

    slicer.util.pip_install(args)


def pyTorchUtilsInstaller() -> Optional[Callable[[str], None]]:
    """A torch installer through the PyTorch extension, or None if it is not installed."""
    try:
        import PyTorchUtils
    except ImportError:
        return None

    def install(spec: str) -> None:
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            logic.installTorch(askConfirmation=False,
                               torchVersionRequirement=spec[len(TORCH):])

    return install


def ensureInSlicer(askUser: bool = True) -> bool:
    """True if every package is there; otherwise ask the user once (a Slicer dialog) and
    install what is missing. For the widget: the logic never pops dialogs."""
    import slicer

    statuses = checkDependencies()
    if not missing(statuses):
        return True
    if askUser and not slicer.util.confirmOkCancelDisplay(
            summary(statuses) + "\n\nInstall them now?", "ParanasalSSL"):
        return False
    try:
        with slicer.util.WaitCursor():
            installMissing(statuses, slicerPipInstaller, pyTorchUtilsInstaller())
    except DependencyError as error:
        slicer.util.errorDisplay(str(error))
        return False
    return not missing(checkDependencies())
