import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_to_longest


def test_trims_sequence_tensors_only():
    mask = np.zeros((3, 32), np.int32)
    mask[0, :5] = 1
    mask[1, :11] = 1
    mask[2, :2] = 1
    x = {"token_ids": tf.constant(np.arange(96).reshape(3, 32), tf.int32),
         "segment_ids": tf.zeros((3, 32), tf.int32), "padding_mask": tf.constant(mask)}
    y = {"logits": tf.ones((3, 32), tf.int32), "start": tf.constant([1, 2, 3])}
    w = {"logits": tf.ones((3, 32))}
    tx, ty, tw = trim_to_longest(x, y, w, multiple=8)
    assert tx["token_ids"].shape == (3, 16)  # longest 11 -> 16
    np.testing.assert_array_equal(tx["token_ids"].numpy(), np.arange(96).reshape(3, 32)[:, :16])
    assert ty["logits"].shape == (3, 16) and ty["start"].shape == (3,)
    assert tw["logits"].shape == (3, 16)


def test_in_dataset_map_and_cap_at_T():
    mask = np.ones((2, 12), np.int32)
    ds = tf.data.Dataset.from_tensor_slices(
        ({"token_ids": mask, "segment_ids": mask, "padding_mask": mask}, np.array([0, 1])))
    ds = ds.batch(2).map(trim_to_longest)
    (x, y), = list(ds)
    assert x["token_ids"].shape == (2, 12) and y.shape == (2,)  # 16 capped at T = 12
