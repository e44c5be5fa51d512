"""Saving without losing what was there: atomic writes, and loads that say what does not fit.

Keras writes a `.keras` or `.weights.h5` file in place, so a process killed mid-save (a
`ModelCheckpoint`, a `BackupAndRestore` backup) leaves a partial file under the target name,
and the good file it replaced is gone. Here every save writes a temporary file in the same
folder and renames it over the target (`os.replace`, atomic on POSIX and Windows): the target
is always either the old file or the complete new one.

A Distiller's weights file also records its pairs, so loading it into a Distiller with other
pairs (and hence other hint adapters) names both lists instead of failing on an adapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid

import keras
import numpy as np

from keras_at._validate import refuse_overwrite

# The key under which a Distiller's weights record its pairs and hint adapters.
PAIRS_KEY = "pairs"


@contextlib.contextmanager
def replacing(filepath, overwrite: bool = True):
    """Yields a temporary path beside `filepath`, renamed over it when the block succeeds.

    The temporary name keeps the target's extension (Keras picks the format from it). On any
    error the temporary file is removed and the target is left as it was. Without `overwrite`,
    a file that appeared at `filepath` while the block ran is not replaced either.
    """
    filepath = os.fspath(filepath)
    folder, name = os.path.split(os.path.abspath(filepath))
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
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

    Remote paths (`gs://...`), sharded weights (`max_shard_size`, several files) and unzipped
    models (`zipped=False`, a folder) are written by Keras directly.
    """
    refuse_overwrite(filepath, overwrite)
    several = kwargs.get("max_shard_size") is not None or kwargs.get("zipped") is False
    if "://" in str(filepath) or several:
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
