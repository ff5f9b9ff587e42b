"""Regenerate tests/data/tf_reference.npz: TensorFlow's colour ops and Keras' schedules on fixed inputs, the
reference tests/test_notebook_ops.py holds gsimclr's versions against (TensorFlow is not a dependency).

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python scripts/make_tf_reference.py    # from the repository root
"""

import numpy as np
import tensorflow as tf

rng = np.random.default_rng(0)
x = rng.random((6, 8, 8, 3)).astype(np.float32)
x[0, :2] = 0.5  # some gray pixels
x[1] = x[1] * 1.6 - 0.3  # values outside [0, 1], as after additive brightness
brightness = np.float32([0.3, -0.4, 0.1, 0.0, 0.7, -0.2])
contrast = np.float32([0.2, 1.0, 1.8, 0.6, 1.4, 0.9])
saturation = np.float32([0.2, 1.0, 1.8, 0.0, 1.4, 0.9])
hue = np.float32([0.2, -0.2, 0.05, 0.0, -0.15, 0.1])
out = {"x": x, "brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
out["adjust_brightness"] = np.stack([tf.image.adjust_brightness(x[i], brightness[i]).numpy() for i in range(6)])
out["adjust_contrast"] = np.stack([tf.image.adjust_contrast(x[i], contrast[i]).numpy() for i in range(6)])
out["adjust_saturation"] = np.stack([tf.image.adjust_saturation(x[i], saturation[i]).numpy() for i in range(6)])
out["adjust_hue"] = np.stack([tf.image.adjust_hue(x[i], hue[i]).numpy() for i in range(6)])
chain = []
for i in range(6):
    y = tf.image.adjust_brightness(x[i], brightness[i])
    y = tf.image.adjust_contrast(y, contrast[i])
    y = tf.image.adjust_saturation(y, saturation[i])
    y = tf.image.adjust_hue(y, hue[i])
    chain.append(tf.clip_by_value(y, 0, 1).numpy())
out["jitter"] = np.stack(chain)
out["grayscale"] = tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3]).numpy()
steps = np.arange(0, 8000, 7)
restarts = tf.keras.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=1000)
out["restart_steps"] = steps
out["restarts"] = np.array([float(restarts(int(s))) for s in steps], np.float32)
restarts_m = tf.keras.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=300, t_mul=1.5, m_mul=0.8)
out["restarts_m"] = np.array([float(restarts_m(int(s))) for s in steps], np.float32)
decay = tf.keras.optimizers.schedules.CosineDecay(0.1, decay_steps=1000)
out["decay"] = np.array([float(decay(int(s))) for s in steps], np.float32)
np.savez_compressed("tests/data/tf_reference.npz", **out)
