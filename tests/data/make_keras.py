"""Generates the Keras and TensorFlow samples that `tests/keras.rs` reads, with expected outputs.

Usage: python tests/data/make_keras.py OUT_DIR   (keras, numpy; tensorflow for the TF files)

Writes into OUT_DIR, for each model (`mlp`, `cnn`, `mixed`: two inputs through most
other supported layers, and `lstm`, `gru`, `birnn`, `mha`, `deconv`, `nested`):
  * `<model>.keras` (zip of config.json, model.weights.h5, metadata.json),
    `<model>.weights.h5` + `<model>.config.json`, and the legacy `<model>_legacy.h5`;
  * `<model>_x.npy` (fixed input; `<model>_x0.npy`, `_x1.npy`… for several) and
    `<model>_y.npy` (Keras's prediction on it).
With tensorflow importable, also:
  * `ckpt/ckpt.index` + data shards (`tf.train.Checkpoint`) and `saved_model/` (`tf.saved_model`),
  * `tf_expected.json`: for each, every stored key → the `.npy` file holding its value.
Keras runs on whichever backend KERAS_BACKEND names (torch works without tensorflow).
Expected values come from Keras / TensorFlow, never from the reader under test.
"""

import json
import os
import sys

import numpy as np

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)

import keras  # noqa: E402  (after OUT exists: keras may print on import)
from keras import layers  # noqa: E402

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)


def mlp():
    return keras.Sequential(
        [
            keras.Input(shape=(8,)),
            layers.Dense(16, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(12, activation="tanh"),
            layers.Dense(4),
            layers.Softmax(),
        ],
        name="mlp",
    )


def cnn():
    x = keras.Input(shape=(12, 12, 3), name="image")
    y = layers.Conv2D(8, 3, padding="same", name="conv_a")(x)
    y = layers.BatchNormalization(name="bn_a")(y)
    y = layers.Activation("relu")(y)
    y = layers.MaxPooling2D(2)(y)
    z = layers.Conv2D(8, 3, padding="same", activation="sigmoid", name="conv_b")(y)
    y = layers.Add()([y, z])
    y = layers.AveragePooling2D(2)(y)
    y = layers.Conv2D(6, 2, strides=1, padding="valid", activation="swish")(y)
    y = layers.Flatten()(y)
    y = layers.Dense(5, name="logits")(y)
    return keras.Model(x, y, name="cnn")


def mixed():
    """Two inputs through most other supported layers."""
    img = keras.Input(shape=(10, 10, 3), name="img")
    y = layers.Rescaling(0.5, offset=0.1)(img)
    y = layers.ZeroPadding2D(((1, 0), (2, 1)))(y)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, activation="elu")(y)
    y = layers.SeparableConv2D(6, 3, strides=2, padding="same")(y)
    y = layers.LeakyReLU(negative_slope=0.1)(y)
    y = layers.UpSampling2D(2)(y)
    y = layers.Conv2D(4, 1, activation="gelu")(y)
    y = layers.GlobalAveragePooling2D()(y)
    tokens = keras.Input(shape=(7,), dtype="int32", name="tokens")
    e = layers.Embedding(20, 6)(tokens)
    e = layers.Conv1D(5, 3, padding="causal", activation="selu")(e)
    e = layers.LayerNormalization()(e)
    e = layers.MaxPooling1D(2, padding="same")(e)
    e = layers.Permute((2, 1))(e)
    e = layers.Reshape((20,))(e)
    e = layers.Dense(4, activation="hard_sigmoid")(e)
    m = layers.Multiply()([y, e])
    d = layers.Subtract()([y, e])
    c = layers.Concatenate()([m, d, layers.ReLU(max_value=0.5)(y)])
    c = layers.Normalization(mean=0.1, variance=2.0)(c)
    # A linear head: logits show any difference more plainly than probabilities.
    return keras.Model([img, tokens], layers.Dense(3)(c), name="mixed")


def lstm():
    """Stacked LSTMs: sequences out, backwards, and non-default activations."""
    x = keras.Input(shape=(6, 4), name="seq")
    y = layers.LSTM(5, return_sequences=True)(x)
    y = layers.LSTM(4, return_sequences=True, go_backwards=True, recurrent_activation="hard_sigmoid")(y)
    y = layers.LSTM(3, go_backwards=True, activation="softsign")(y)
    return keras.Model(x, y, name="lstm")


def gru():
    """GRUs with and without reset_after, backwards, and a SimpleRNN."""
    x = keras.Input(shape=(6, 4), name="seq")
    y = layers.GRU(5, return_sequences=True)(x)
    y = layers.GRU(4, return_sequences=True, reset_after=False, go_backwards=True)(y)
    y = layers.SimpleRNN(3, return_sequences=True, go_backwards=True)(y)
    y = layers.GRU(3, use_bias=False, return_sequences=True)(y)
    y = layers.SimpleRNN(2, activation="relu")(y)
    return keras.Model(x, y, name="gru")


def birnn():
    """Bidirectional wrappers, merged by concat, sum and mul."""
    x = keras.Input(shape=(7, 3), name="seq")
    y = layers.Bidirectional(layers.LSTM(4, return_sequences=True))(x)
    y = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="sum")(y)
    y = layers.Bidirectional(layers.SimpleRNN(2), merge_mode="mul")(y)
    return keras.Model(x, y, name="birnn")


def mha():
    """Cross-attention with a mask and a separate value width; causal self-attention without
    biases; a separate key with both masks (causal over queries 5 × keys 7)."""
    q = keras.Input(shape=(5, 8), name="q")
    kv = keras.Input(shape=(7, 6), name="kv")
    mask = keras.Input(shape=(5, 7), dtype="bool", name="mask")
    a = layers.MultiHeadAttention(2, 4, value_dim=3, name="cross")(q, kv, attention_mask=mask)
    b = layers.MultiHeadAttention(3, 2, use_bias=False, name="self_attn")(a, a, use_causal_mask=True)
    key = layers.Dense(4)(kv)
    c = layers.MultiHeadAttention(1, 3, name="keyed")(b, kv, key=key, attention_mask=mask, use_causal_mask=True)
    return keras.Model([q, kv, mask], layers.Add()([b, c]), name="mha")


def deconv():
    """Transposed convolutions: same/valid padding, strides above and below the kernel."""
    img = keras.Input(shape=(5, 4, 3), name="img")
    y = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(img)
    y = layers.Conv2DTranspose(3, 2, strides=2, activation="relu")(y)
    y = layers.Conv2DTranspose(2, (3, 2), strides=(1, 3), padding="same", use_bias=False)(y)
    seq = keras.Input(shape=(6, 2), name="seq")
    z = layers.Conv1DTranspose(3, 3, strides=2, padding="same")(seq)
    z = layers.Conv1DTranspose(2, 4, padding="valid")(z)
    c = layers.Concatenate()([layers.Flatten()(y), layers.Flatten()(z)])
    return keras.Model([img, seq], c, name="deconv")


def nested():
    """A Sequential and a Functional model as layers, the latter called twice (shared)."""
    inner_seq = keras.Sequential(
        [keras.Input(shape=(8,)), layers.Dense(6, activation="relu"), layers.Dense(4)], name="inner_seq"
    )
    h = keras.Input(shape=(4,))
    block = keras.Model(h, layers.Add()([h, layers.Dense(4, activation="tanh")(h)]), name="block")
    x = keras.Input(shape=(8,), name="x")
    y = block(block(inner_seq(x)))
    return keras.Model(x, layers.Dense(2, name="head")(y), name="nested")


def randomize_biases(model):
    """Moves every bias off its zero initialization so it matters."""
    for w in model.weights:
        if "bias" in w.path:
            w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))


def randomize(model):
    """Moves BatchNormalization statistics off their 0/1 defaults so they matter."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=n).astype("float32"))
            layer.beta.assign(rng.normal(size=n).astype("float32"))


def normal(*shape):
    return rng.normal(size=shape).astype("float32")


mixed_x = [normal(2, 10, 10, 3), rng.integers(0, 20, (2, 7)).astype("int32")]
# Every query sees at least one key: Keras and ONNX differ on fully masked rows.
mha_mask = rng.uniform(size=(2, 5, 7)) < 0.7
mha_mask[:, :, 0] = True
models = [
    ("mlp", mlp, normal(3, 8)),
    ("cnn", cnn, normal(2, 12, 12, 3)),
    ("mixed", mixed, mixed_x),
]
# Newer layers; their biases are randomized too.
models_biased = [
    ("lstm", lstm, normal(3, 6, 4)),
    ("gru", gru, normal(3, 6, 4)),
    ("birnn", birnn, normal(2, 7, 3)),
    ("mha", mha, [normal(2, 5, 8), normal(2, 7, 6), mha_mask]),
    ("deconv", deconv, [normal(2, 5, 4, 3), normal(2, 6, 2)]),
    ("nested", nested, normal(3, 8)),
]
for name, make, x in models + models_biased:
    model = make()
    randomize(model)
    if (name, make) in [(n, m) for n, m, _ in models_biased]:
        randomize_biases(model)
    y = np.asarray(model.predict(x, verbose=0), dtype="float32")
    # Inputs in the model's order: <name>_x.npy, or <name>_x0.npy, <name>_x1.npy, ….
    if isinstance(x, list):
        for i, xi in enumerate(x):
            np.save(os.path.join(OUT, f"{name}_x{i}.npy"), xi)
    else:
        np.save(os.path.join(OUT, f"{name}_x.npy"), x)
    np.save(os.path.join(OUT, f"{name}_y.npy"), y)
    model.save(os.path.join(OUT, f"{name}.keras"))
    model.save_weights(os.path.join(OUT, f"{name}.weights.h5"))
    with open(os.path.join(OUT, f"{name}.config.json"), "w") as f:
        json.dump(keras.saving.serialize_keras_object(model), f)
    # The legacy format (h5py writes it; Keras 3 still saves it on request).
    model.save(os.path.join(OUT, f"{name}_legacy.h5"))

try:
    import tensorflow as tf
except ImportError:
    print("tensorflow not importable: no TF checkpoint / SavedModel samples", file=sys.stderr)
    sys.exit(0)

tf_expected = {}
dump = os.path.join(OUT, "tf_npy")
os.makedirs(dump, exist_ok=True)


class Module(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(rng.normal(size=(3, 4)).astype("float32"), name="w")
        self.b = tf.Variable(np.arange(4, dtype="float64"), name="b")
        self.steps = tf.Variable(np.array([7, -3, 2**40], dtype="int64"), name="steps")
        self.flags = tf.Variable(np.array([True, False]), name="flags")
        self.scalar = tf.Variable(np.int32(-5), name="scalar")
        self.half = tf.Variable(np.array([1.5, -2.25], dtype="float16"), name="half")
        self.empty = tf.Variable(np.zeros((0, 3), dtype="float32"), name="empty")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        return tf.matmul(x, self.w) + tf.cast(self.b, tf.float32)


m = Module()


def record(kind, reader):
    """Every stored key's value, as the TF reader gives it, dumped to `.npy`."""
    entries = {}
    for i, key in enumerate(sorted(reader.get_variable_to_shape_map())):
        value = np.asarray(reader.get_tensor(key))
        if value.dtype == object:  # strings (the object graph proto): compared as bytes
            continue
        path = f"tf_npy/{kind}_{i}.npy"
        np.save(os.path.join(OUT, path), value)
        entries[key] = path
    tf_expected[kind] = entries


prefix = tf.train.Checkpoint(model=m).write(os.path.join(OUT, "ckpt", "ckpt"))
record("ckpt", tf.train.load_checkpoint(prefix))
tf.saved_model.save(m, os.path.join(OUT, "saved_model"))
record("saved_model", tf.train.load_checkpoint(os.path.join(OUT, "saved_model", "variables", "variables")))
with open(os.path.join(OUT, "tf_expected.json"), "w") as f:
    json.dump(tf_expected, f, indent=1)
