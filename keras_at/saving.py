"""Saving without losing what was there: atomic writes, and loads that say what does not fit.

Keras writes a `.keras` or `.weights.h5` file in place, so a process killed mid-save (a
`ModelCheckpoint`, a `BackupAndRestore` backup) leaves a partial file under the target name,
and the good file it replaced is gone. Here every save writes a temporary file in the same
folder and renames it over the target (`os.replace`, atomic on POSIX and Windows): the target
is always either the old file or the complete new one. The temporary file's name holds its
writer's process id, so the next save of the same target removes those a killed process left.

A Distiller's weights file also records its pairs, so loading it into a Distiller with other
pairs (and hence other hint adapters) names both lists instead of failing on an adapter, and
loading it into networks of another shape names the first layer whose shapes differ.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
import uuid
import zipfile

import h5py
import keras
import numpy as np

from keras_at._argument_checks import refuse_overwrite

# The key under which a Distiller's weights record its pairs and hint adapters.
PAIRS_KEY = "pairs"


def _temporary_pattern(name: str, suffix: str) -> re.Pattern:
    """The names of `replacing`'s temporary files for the target `name`; group 1 is the pid."""
    return re.compile(rf"\.{re.escape(name)}\.(\d+)-[0-9a-f]{{12}}\.tmp{re.escape(suffix)}")


def _suffix(name: str) -> str:
    return ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]


def _is_temporary(filepath) -> bool:
    """Whether `filepath` is a temporary file of `replacing` (already not the target itself)."""
    name = os.path.basename(os.fspath(filepath))
    match = re.fullmatch(r"\.(.+)\.\d+-[0-9a-f]{12}\.tmp(.*)", name)
    return bool(match) and match[2] == _suffix(match[1])


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # no signal 0 to ask with: never taken for a dead writer
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_stale_temporaries(folder: str, name: str, suffix: str, since: float) -> None:
    """Removes the temporary files of target `name` whose writer is gone: a process that no
    longer exists, killed mid-save, and a file not modified since this save began."""
    pattern = _temporary_pattern(name, suffix)
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or int(match[1]) == os.getpid() or _process_exists(int(match[1])):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < since:
                    os.remove(entry.path)


@contextlib.contextmanager
def replacing(filepath, overwrite: bool = True):
    """Yields a temporary path beside `filepath`, renamed over it when the block succeeds.

    The temporary name keeps the target's extension (Keras picks the format from it) and holds
    this process's id: temporary files of the same target left by a killed process (on POSIX,
    one whose id no longer runs) are removed first. On any error the temporary file is removed
    and the target is left as it was. Without `overwrite`, a file that appeared at `filepath`
    while the block ran is not replaced either.
    """
    since = time.time()
    filepath = os.fspath(filepath)
    folder, name = os.path.split(os.path.abspath(filepath))
    suffix = _suffix(name)
    _remove_stale_temporaries(folder, name, suffix, since)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        refuse_overwrite(filepath, overwrite)
        os.replace(temporary, filepath)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def save_atomically(save, filepath, overwrite: bool = True, **kwargs) -> None:
    """Calls `save(path, overwrite=True, **kwargs)` (a model's `save` or `save_weights`) on a
    temporary file and renames it over `filepath`; an existing file is kept unless `overwrite`.

    Remote paths (`gs://...`), sharded weights (`max_shard_size`, several files), unzipped
    models (`zipped=False`, a folder) and `replacing`'s own temporary files (a save that is
    already atomic, such as a backup's) are written by Keras directly.
    """
    refuse_overwrite(filepath, overwrite)
    several = kwargs.get("max_shard_size") is not None or kwargs.get("zipped") is False
    if "://" in str(filepath) or several or _is_temporary(filepath):
        save(filepath, overwrite=True, **kwargs)
        return
    with replacing(filepath, overwrite) as temporary:
        save(temporary, overwrite=True, **kwargs)


def write_text_atomically(filepath, text: str) -> None:
    """Writes `text` to `filepath` through a temporary file, as `save_atomically` does."""
    with replacing(filepath) as temporary, open(temporary, "w") as f:
        f.write(text)


def pairs_record(pairs, adapters) -> np.ndarray:
    """Pairs and their hint adapters' kernel shapes, as bytes a weights store can hold."""
    record = [
        [s, t, None if a is None else list(a.kernel.shape)]
        for (s, t), a in zip(pairs, adapters)
    ]
    return np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)


def check_saved_pairs(store, pairs, adapters) -> None:
    """A `ValueError` naming the saved and expected pairs when the adapters would not load.

    Pairs without adapters hold no weights: other pairs load, as the networks' weights do.
    The same pairs with adapters of other shapes mean networks of other widths: the message
    says so (`Distiller.load_weights` then names the first layer whose shapes differ).
    Files saved before pairs were recorded are not checked here (Keras names the adapter).
    """
    if PAIRS_KEY not in store.keys():
        return
    saved = json.loads(np.asarray(store[PAIRS_KEY], dtype=np.uint8).tobytes().decode())
    expected = json.loads(pairs_record(pairs, adapters).tobytes().decode())
    if saved == expected or not any(r[2] for r in saved + expected):
        return

    def listed(record):
        return "[" + ", ".join(
            f"({s!r}, {t!r})" + ("" if shape is None else f" with a {shape[2]}->{shape[3]} adapter")
            for s, t, shape in record
        ) + "]"

    if [r[:2] for r in saved] == [r[:2] for r in expected]:
        raise ValueError(
            f"These weights were saved by a Distiller with the same pairs but hint adapters "
            f"{listed(saved)}, and this Distiller's are {listed(expected)}: its student or "
            "teacher has layers of other widths than the saved ones."
        )
    raise ValueError(
        f"These weights were saved by a Distiller with pairs {listed(saved)}, but this "
        f"Distiller has pairs {listed(expected)}: their hint adapters differ. Load them into a "
        "Distiller built with the saved pairs (its `student` and `teacher` are then the trained "
        "networks)."
    )


def load_distiller_variables(distiller, store, optional) -> None:
    """A Distiller's `load_own_variables`: its pairs checked, then its variables loaded."""
    check_saved_pairs(store, distiller.pairs, distiller.hint_adapters)
    load_own_variables(distiller, store, optional=optional)


def refuse_legacy_h5(filepath) -> None:
    """A `ValueError` for a `.h5` model file: Keras's legacy HDF5 format cannot hold a
    Distiller (its student, teacher, pairs and loss weights); it fails deep inside Keras."""
    if str(filepath).lower().endswith((".h5", ".hdf5")):
        raise ValueError(
            f"A Distiller cannot be saved in Keras's legacy HDF5 format ({os.fspath(filepath)}). "
            "Save it as a `.keras` file (`distiller.save('distiller.keras')`), its weights alone "
            "with `distiller.save_weights('distiller.weights.h5')`, or the trained student with "
            "`distiller.student.save('student.keras')`."
        )


@contextlib.contextmanager
def _weights_h5(filepath):
    """The HDF5 weights inside a `.weights.h5` or `.keras` file, opened for reading."""
    filepath = os.fspath(filepath)
    if filepath.endswith(".keras"):
        with zipfile.ZipFile(filepath) as archive:
            data = io.BytesIO(archive.read("model.weights.h5"))
        with h5py.File(data, "r") as f:
            yield f
    else:
        with h5py.File(filepath, "r") as f:
            yield f


def _variable_shapes(group, found=None) -> dict:
    """`{path of a layer's "vars" group: (layer name, [its variables' shapes])}`, in the order
    the groups were created where the file tracks it (`visititems` would sort by name)."""
    found = {} if found is None else found
    for key, item in group.items():
        if not isinstance(item, h5py.Group):
            continue
        if key == "vars":
            keys = sorted((k for k in item.keys() if k.isdigit()), key=int)
            found[item.name.lstrip("/")] = (
                item.attrs.get("name", item.name), [tuple(item[k].shape) for k in keys]
            )
        else:
            _variable_shapes(item, found)
    return found


def first_shape_difference(distiller, filepath):
    """`(network, layer name, saved name, saved shapes, current shapes)` of the first layer of the
    Distiller's student or teacher (in saving order) whose variables have other shapes in
    `filepath`, or None. The current shapes are read from a temporary save of the Distiller,
    which gives every layer the path Keras gives it in the file."""
    with tempfile.TemporaryDirectory() as folder:
        current = os.path.join(folder, "current.weights.h5")
        config = h5py.get_config()
        tracked, config.track_order = config.track_order, True  # the layers in saving order
        try:
            keras.Model.save_weights(distiller, current)
        finally:
            config.track_order = tracked
        with h5py.File(current, "r") as now, _weights_h5(filepath) as saved:
            now_shapes, saved_shapes = _variable_shapes(now), _variable_shapes(saved)
            owners = {path: now[path].attrs.get("name") for path in now_shapes}
    networks = {distiller.student.name: "student", distiller.teacher.name: "teacher"}
    for path, (name, shapes) in now_shapes.items():
        parts = path.split("/")
        saved_name, saved = saved_shapes.get(path, (None, None))
        if parts[0] != "layers" or len(parts) < 4 or saved == shapes:
            continue
        owner = owners.get("/".join(parts[:2]) + "/vars")
        return networks.get(owner, f"network {owner!r}"), name, saved_name, saved, shapes
    return None


def explain_load_failure(distiller, filepath, error: Exception) -> None:
    """Raises a `ValueError` naming the first network layer whose shapes differ between
    `filepath` and `distiller`, from Keras's `error`; returns when none differs or the file
    cannot be read here (sharded, remote), for Keras's error to stand."""
    try:
        difference = first_shape_difference(distiller, filepath)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return
    if difference is None:
        return
    network, name, saved_name, saved, shapes = difference
    called = "" if saved_name in (None, name) else f" (saved as {saved_name!r})"
    held = "not in the file" if saved is None else f"saved {saved}"
    raise ValueError(
        f"{os.fspath(filepath)} does not fit this Distiller: the first layer whose shapes differ "
        f"is the {network}'s {name!r}{called}, variable shapes {held}, now {shapes}. Load it into "
        "a Distiller whose student and teacher are built as when it was saved (the same widths "
        "and depths)."
    ) from error


def distiller_config(distiller, base: dict, weights, input_shape) -> dict:
    """A Distiller's `get_config`: `base` (Keras's) with every constructor argument."""
    return {
        **base,
        "student": keras.saving.serialize_keras_object(distiller.student),
        "teacher": keras.saving.serialize_keras_object(distiller.teacher),
        "pairs": [list(pair) for pair in distiller.pairs],
        "p": distiller.p,
        "reduction": distiller.reduction,
        "temperature": distiller.temperature,
        "input_shape": input_shape,
        "hint_weight_decay": distiller.hint_weight_decay,
        **{name: getattr(distiller, name) for name in weights},
    }


def networks_deserialized(config: dict) -> dict:
    """A Distiller's config with its `student` and `teacher` deserialised (`from_config`)."""
    config = dict(config)
    for network in ("student", "teacher"):
        config[network] = keras.saving.deserialize_keras_object(config[network])
    return config


def load_own_variables(layer, store, optional=()) -> None:
    """Assigns `layer`'s own variables from `store` (numbered keys), as
    `keras.layers.Layer.load_own_variables` does, except that a file without the trailing
    `optional` variables (saved before they existed) still loads."""
    variables = layer._trainable_variables + layer._non_trainable_variables
    keys = sorted((k for k in store.keys() if k.isdigit()), key=int)
    missing = variables[len(keys):]
    if len(keys) > len(variables) or any(all(v is not o for o in optional) for v in missing):
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} expected {len(variables)} variables, but the "
            f"file holds {len(keys)}."
        )
    for key, variable in zip(keys, variables):
        variable.assign(store[key])
