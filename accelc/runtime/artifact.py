"""Reading and writing the ``.accelc`` artifact format (see docs/INTERNALS.md, "Artifact").

An artifact is a stored (uncompressed) zip, or a directory with the same layout:
``manifest.json`` plus every member the backend produced (``weights.bin``, the library, the header,
generated source). ``manifest["members"]`` holds the sha256 of every other member; nothing is used
before all hashes have been checked, so a tampered or damaged artifact is refused as a whole instead of
half-loaded. Members are stored, not compressed: weights are incompressible floats and the zip stays
readable by any tool.

This module imports only the standard library (the runtime must work on a deployment box that has
nothing of the compiler).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Artifact:
    """An artifact in memory: its manifest and the bytes of every other member.

    ``manifest["members"]`` always describes ``members`` exactly (``pack`` computes it; ``read``
    checks it), so an ``Artifact`` object is trusted once it exists.
    """
    manifest: dict[str, Any]
    members: dict[str, bytes] = field(repr=False)

    @property
    def signature(self) -> dict[str, Any]:
        return self.manifest["signature"]

    def member(self, path: str) -> bytes:
        try:
            return self.members[path]
        except KeyError:
            raise ArtifactError(f"artifact has no member '{path}'; it is incomplete, recompile the model") from None

    def manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest, indent=2, sort_keys=False) + "\n").encode()

    def save(self, path: str | os.PathLike, overwrite: bool = False, layout: str | None = None) -> Path:
        return write(self, path, overwrite=overwrite, layout=layout)


def pack(manifest: dict[str, Any], files: dict[str, bytes]) -> Artifact:
    """Builds an Artifact from a manifest (without ``members``) and member bytes, hashing every member."""
    for name in files:
        _check_member_name(name)
        if name == MANIFEST:
            raise ArtifactError(f"'{MANIFEST}' is reserved for the manifest and cannot be a member")
    manifest = dict(manifest)
    manifest.setdefault("format_version", FORMAT_VERSION)
    manifest["members"] = {name: sha256(data) for name, data in sorted(files.items())}
    return Artifact(manifest, dict(files))


# ---- writing -------------------------------------------------------------------------------------

def write(artifact: Artifact, path: str | os.PathLike, *, overwrite: bool = False,
          layout: str | None = None) -> Path:
    """Writes ``artifact`` to ``path`` as a zip (default) or a directory (``layout="dir"``, or a path
    ending with a slash). The write goes to a temporary sibling first and is renamed into place, so an
    interrupted save never leaves a half-written artifact under the user's name. An existing path is
    only replaced with ``overwrite=True``.
    """
    text = os.fspath(path)
    if layout is None:
        layout = "dir" if text.endswith(("/", os.sep)) else "zip"
    if layout not in ("zip", "dir"):
        raise ArtifactError(f"unknown artifact layout '{layout}'; use 'zip' or 'dir'")
    target = Path(text.rstrip("/" + os.sep) or text)
    if target.exists() and not overwrite:
        raise ArtifactError(f"'{target}' already exists; choose another output path or allow overwriting "
                            f"(--force on the command line, overwrite=True in Python)")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if layout == "zip":
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
            try:
                with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    zf.writestr(MANIFEST, artifact.manifest_bytes())
                    for name in sorted(artifact.members):
                        zf.writestr(name, artifact.members[name])
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            tmp = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
            try:
                for name, data in artifact.members.items():
                    dest = Path(tmp, *PurePosixPath(name).parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)
                Path(tmp, MANIFEST).write_bytes(artifact.manifest_bytes())
                if target.exists():
                    old = f"{tmp}.old"
                    os.replace(target, old)
                    os.replace(tmp, target)
                    shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.unlink(old)
                else:
                    os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except OSError as e:
        raise ArtifactError(f"cannot write artifact '{target}': {e.strerror or e}") from None
    return target


# ---- reading -------------------------------------------------------------------------------------

def read(path: str | os.PathLike) -> Artifact:
    """Reads an artifact (zip or directory) and checks its manifest and every member hash.

    Raises ArtifactError naming the problem: missing file, not an artifact, truncated or corrupted zip,
    a member whose hash differs from the manifest (tampered), a missing or unlisted member, or a format
    version newer than this runtime understands.
    """
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact '{p}' does not exist; compile one with `accelc compile MODEL -o {p}`")
    if p.is_dir():
        manifest_data, members = _read_dir(p)
    else:
        manifest_data, members = _read_zip(p)
    manifest = parse_manifest(manifest_data, p)
    verify_members(manifest, members, p)
    return Artifact(manifest, members)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest alone (for `accelc inspect`); member hashes are not checked."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact '{p}' does not exist")
    if p.is_dir():
        mp = p / MANIFEST
        if not mp.is_file():
            raise ArtifactError(f"'{p}' is a directory without {MANIFEST}; it is not an accelc artifact")
        return parse_manifest(mp.read_bytes(), p)
    try:
        with zipfile.ZipFile(p) as zf:
            return parse_manifest(zf.read(MANIFEST), p)
    except KeyError:
        raise ArtifactError(f"'{p}' has no {MANIFEST}; it is not an accelc artifact") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ArtifactError(f"'{p}' is not a readable accelc artifact ({_why(e)}); "
                            f"recompile the model or copy the file again") from None


def parse_manifest(data: bytes, origin: os.PathLike | str = "artifact") -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{MANIFEST} of '{origin}' is not valid JSON ({e}); the artifact is corrupted") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{MANIFEST} of '{origin}' is not a JSON object; the artifact is corrupted")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{MANIFEST} of '{origin}' has no format_version; it is not an accelc artifact")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"'{origin}' uses artifact format version {version}, but this accelc reads "
                            f"version {FORMAT_VERSION} and older; upgrade accelc (pip install -U accelc)")
    for key in ("signature", "members", "backend"):
        if not isinstance(manifest.get(key), dict):
            raise ArtifactError(f"{MANIFEST} of '{origin}' lacks the '{key}' section; the artifact is corrupted")
    return manifest


def verify_members(manifest: dict[str, Any], members: dict[str, bytes], origin: os.PathLike | str) -> None:
    expected: dict[str, str] = manifest["members"]
    for name in sorted(expected):
        if name not in members:
            raise ArtifactError(f"artifact '{origin}' is missing member '{name}' listed in its manifest; "
                                f"it is incomplete, recompile or copy it again")
        if sha256(members[name]) != expected[name]:
            raise ArtifactError(f"artifact '{origin}': member '{name}' does not match the sha256 in the "
                                f"manifest (tampered or corrupted); refusing to load it, recompile the model")
    extra = sorted(set(members) - set(expected))
    if extra:
        raise ArtifactError(f"artifact '{origin}' holds member '{extra[0]}' that its manifest does not list "
                            f"(tampered); refusing to load it")


def _read_zip(p: Path) -> tuple[bytes, dict[str, bytes]]:
    try:
        with zipfile.ZipFile(p) as zf:
            members: dict[str, bytes] = {}
            manifest_data = None
            for info in zf.infolist():
                if info.is_dir():
                    continue
                _check_member_name(info.filename, p)
                try:
                    data = zf.read(info)
                except (zipfile.BadZipFile, EOFError, OSError) as e:
                    raise ArtifactError(f"artifact '{p}': member '{info.filename}' cannot be read ({_why(e)}); "
                                        f"the file is corrupted or truncated, recompile or copy it again") from None
                if info.filename == MANIFEST:
                    manifest_data = data
                else:
                    members[info.filename] = data
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"'{p}' is not an accelc artifact: {_why(e)} (truncated or not a zip file); "
                            f"recompile the model or copy the file again") from None
    except OSError as e:
        raise ArtifactError(f"cannot read artifact '{p}': {e.strerror or e}") from None
    if manifest_data is None:
        raise ArtifactError(f"'{p}' has no {MANIFEST}; it is not an accelc artifact")
    return manifest_data, members


def _read_dir(p: Path) -> tuple[bytes, dict[str, bytes]]:
    mp = p / MANIFEST
    if not mp.is_file():
        raise ArtifactError(f"'{p}' is a directory without {MANIFEST}; it is not an accelc artifact")
    members: dict[str, bytes] = {}
    try:
        for f in sorted(p.rglob("*")):
            if f.is_dir() or f == mp:
                continue
            rel = f.relative_to(p).as_posix()
            if any(part.startswith(".") for part in PurePosixPath(rel).parts):
                continue    # editor/OS droppings (.DS_Store...) are not members
            members[rel] = f.read_bytes()
        return mp.read_bytes(), members
    except OSError as e:
        raise ArtifactError(f"cannot read artifact directory '{p}': {e.strerror or e}") from None


def _check_member_name(name: str, origin: os.PathLike | str = "artifact") -> None:
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or ".." in parts:
        raise ArtifactError(f"artifact '{origin}' has an unsafe member path '{name}'; refusing to load it")


def _why(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text[0].lower() + text[1:] if text else text
