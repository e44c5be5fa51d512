"""keras_at's callbacks on the JAX backend, where the training state lives outside the
variables during an epoch (a callback reading `self.model` copies it back)."""

import keras
import numpy as np
import pytest
from conftest import AtBatch
from test_distiller_jax import distiller, training_data

import keras_at

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")


def interrupt(model):
    """An `AtBatch` action: stops the run as a kill would."""
    raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_mid_epoch_to_the_uninterrupted_weights(tmp_path):
    x, y = training_data()
    fit = dict(x=x, y=y, batch_size=8, epochs=3, shuffle=False, verbose=0)  # 4 batches an epoch

    def callbacks():
        return [keras_at.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1),
                keras_at.callbacks.BetaDecay(factor=0.5, epochs=(1, 2))]

    straight = distiller(beta=1e3, alpha=0.5)
    straight.fit(**{**fit, "callbacks": [keras_at.callbacks.BetaDecay(factor=0.5, epochs=(1, 2))]})
    with pytest.raises(RuntimeError, match="interrupted"):
        distiller(beta=1e3, alpha=0.5).fit(
            **fit, callbacks=[*callbacks(), AtBatch(1, 1, interrupt)])  # after batch 1, epoch 1
    resumed = distiller(beta=1e3, alpha=0.5)
    history = resumed.fit(**fit, callbacks=callbacks())
    assert history.epoch == [1, 2]
    assert resumed.beta == straight.beta == 250.0
    for a, b in zip(straight.student.get_weights(), resumed.student.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_terminate_on_nan_names_the_term_and_stops():
    x, y = training_data()
    x = x.copy()
    x[9] = np.nan  # batch 1
    model = distiller(beta=1e3)
    with pytest.raises(RuntimeError, match=r"non-finite loss nan.*at_loss=nan"):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[keras_at.callbacks.TerminateOnNaN(raise_error=True)])
