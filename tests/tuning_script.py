"""One process of a distributed keras-tuner run (tests/test_tuning.py).

`python tests/tuning_script.py DIRECTORY` with KERASTUNER_TUNER_ID ("chief",
"tuner0", ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set. The
chief serves the oracle until the workers have finished `MAX_TRIALS` trials,
then prints `RESULT <json>` with the trials and the best hyperparameters; a
worker prints the trials it ran. Not collected by pytest (no `test_` prefix).

keras-tuner's chief polls for the end of the search every 30 s and then waits
another 30 s for late worker calls (`oracle_chief.start_server`); to keep the
test short, the chief here waits at most `POLL_SECONDS` per sleep. Nothing
else is changed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow resolves tf.keras

# isort: split
import keras_tuner as kt
import tensorflow as tf

from bnas_tf.tuning import TrainHyperModel

MAX_TRIALS = 3
POLL_SECONDS = 3.0
IMAGE = (8, 8, 3)


def tiny_genotype() -> bn.Genotype:
    space = bn.SearchSpace(["none", "skip_connect", "bin_conv_3x3"], nodes=2)
    return bn.SuperNet(space, num_classes=4, layers=2, channels=4, seed=0).genotype()


def tiny_data():
    """Training batches and the held-out validation batches the objective is computed on."""
    data = bn.data.synthetic(40, 16, image_shape=IMAGE, num_classes=4, seed=0)
    train, held_out = bn.data.holdout(data, 0.2, seed=0)
    return (bn.data.make_dataset(train, batch_size=16, training=True, seed=0),
            bn.data.make_dataset(held_out, batch_size=16))


def make_tuner(directory: str) -> kt.RandomSearch:
    hypermodel = TrainHyperModel(tiny_genotype(), num_classes=4, input_shape=IMAGE,
                                 channels=(4, 8), layers=2, epochs=(1, 1))
    return kt.RandomSearch(hypermodel, objective="val_accuracy", max_trials=MAX_TRIALS,
                           seed=0, directory=directory, project_name="distributed")


def main(directory: str) -> int:
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    if tuner_id == "chief":
        from keras_tuner.distribute import oracle_chief

        oracle_chief.time = types.SimpleNamespace(
            sleep=lambda seconds: time.sleep(min(seconds, POLL_SECONDS)))
        tuner = make_tuner(directory)  # serves the oracle; returns when the search is over
        trials = tuner.oracle.trials.values()
        best = tuner.get_best_hyperparameters(1)[0]
        result = {"role": "chief",
                  "statuses": sorted(t.status for t in trials),
                  "scores": [t.score for t in trials],
                  "best_hyperparameters": best.values,
                  "best_score": tuner.oracle.get_best_trials(1)[0].score}
    else:
        tuner = make_tuner(directory)
        train, val = tiny_data()
        ran = []

        class Record(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if not ran or ran[-1] != id(self.model):
                    ran.append(id(self.model))

        tuner.search(train, validation_data=val, callbacks=[Record()], verbose=0)
        result = {"role": tuner_id, "trials_run": len(ran)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
