"""Generates the small checkpoint fixtures under tests/fixtures/ and their reference outputs.

Reference implementation: Hugging Face transformers `BertForPreTraining` (PyTorch, CPU,
eager attention, float32). Requires the `reference` extra (torch 2.13.0 + transformers):

    pip install torch==2.13.0 && pip install transformers
    python scripts/make_fixtures.py

Writes
  tests/fixtures/hf_tiny_pretraining/  BertForPreTraining.save_pretrained ("bert." prefix,
                                       cls.* heads)
  tests/fixtures/hf_tiny_base/         BertModel.save_pretrained (no prefix, no heads)
  tests/fixtures/tf1_tiny/             the same weights as an original google-research/bert
                                       TF1 checkpoint (with Adam slots and global_step, as
                                       run_pretraining.py leaves them)
  tests/fixtures/tiny_reference.npz    inputs and the reference outputs on them

The weights are random and far from their initial values (LayerNorm gammas, biases all
perturbed), so a mapping that swaps or transposes a tensor cannot go unnoticed.
"""

import json
import os
import shutil

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an cat dog sat on mat and or of to in is was it he she they we you i "
         "this that with for as at by from be have do say go get make know think take "
         "see come want look use find give tell work call try ask need feel become "
         "leave put mean keep let begin seem help talk turn start show hear play run "
         "move like live believe hold bring happen write provide").split()
PIECES = ["##s", "##ed", "##ing", "##er", "##ly", "##est", "##ness", ".", ",", "!", "?",
          "'", "-", "(", ")", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def make_vocab():
    vocab = SPECIAL + WORDS + PIECES
    assert len(vocab) == len(set(vocab))
    return vocab


def write_vocab(path, vocab):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))


def hf_config(vocab_size):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64,
                      max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                      layer_norm_eps=1e-12)


def perturbed_model(config):
    import torch
    from transformers import BertForPreTraining

    torch.manual_seed(1234)
    model = BertForPreTraining._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.tie_weights()
    return model.eval()


def make_inputs(vocab_size):
    rng = np.random.default_rng(7)
    batch, length = 3, 12
    lengths = [12, 9, 5]
    token_ids = np.zeros((batch, length), np.int32)
    segment_ids = np.zeros((batch, length), np.int32)
    padding_mask = np.zeros((batch, length), np.int32)
    for b, n in enumerate(lengths):
        token_ids[b, :n] = rng.integers(9, vocab_size, n)
        token_ids[b, 0], token_ids[b, n - 1] = 7, 8  # [CLS] ... [SEP]
        segment_ids[b, n // 2:n] = 1
        padding_mask[b, :n] = 1
    return token_ids, segment_ids, padding_mask


def write_tf1(model, out, vocab, config_dict):
    """Writes the torch weights under the original BERT variable names (TF1 Saver)."""
    import tensorflow as tf

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    t = {}
    t["bert/embeddings/word_embeddings"] = sd["bert.embeddings.word_embeddings.weight"]
    t["bert/embeddings/position_embeddings"] = sd["bert.embeddings.position_embeddings.weight"]
    t["bert/embeddings/token_type_embeddings"] = sd["bert.embeddings.token_type_embeddings.weight"]
    t["bert/embeddings/LayerNorm/gamma"] = sd["bert.embeddings.LayerNorm.weight"]
    t["bert/embeddings/LayerNorm/beta"] = sd["bert.embeddings.LayerNorm.bias"]
    for i in range(config_dict["num_hidden_layers"]):
        hf, tf1 = f"bert.encoder.layer.{i}.", f"bert/encoder/layer_{i}/"
        linear = {"attention.self.query": "attention/self/query",
                  "attention.self.key": "attention/self/key",
                  "attention.self.value": "attention/self/value",
                  "attention.output.dense": "attention/output/dense",
                  "intermediate.dense": "intermediate/dense",
                  "output.dense": "output/dense"}
        for a, b in linear.items():
            t[tf1 + b + "/kernel"] = sd[hf + a + ".weight"].T  # TF1 kernels are [in, out]
            t[tf1 + b + "/bias"] = sd[hf + a + ".bias"]
        for a, b in {"attention.output.LayerNorm": "attention/output/LayerNorm",
                     "output.LayerNorm": "output/LayerNorm"}.items():
            t[tf1 + b + "/gamma"] = sd[hf + a + ".weight"]
            t[tf1 + b + "/beta"] = sd[hf + a + ".bias"]
    t["bert/pooler/dense/kernel"] = sd["bert.pooler.dense.weight"].T
    t["bert/pooler/dense/bias"] = sd["bert.pooler.dense.bias"]
    t["cls/predictions/transform/dense/kernel"] = sd["cls.predictions.transform.dense.weight"].T
    t["cls/predictions/transform/dense/bias"] = sd["cls.predictions.transform.dense.bias"]
    t["cls/predictions/transform/LayerNorm/gamma"] = sd["cls.predictions.transform.LayerNorm.weight"]
    t["cls/predictions/transform/LayerNorm/beta"] = sd["cls.predictions.transform.LayerNorm.bias"]
    t["cls/predictions/output_bias"] = sd["cls.predictions.bias"]
    # The original keeps the NSP weights as [2, H] and multiplies with transpose_b=True.
    t["cls/seq_relationship/output_weights"] = sd["cls.seq_relationship.weight"]
    t["cls/seq_relationship/output_bias"] = sd["cls.seq_relationship.bias"]

    os.makedirs(out)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(value))
                     for name, value in t.items()]
        # Optimizer state as run_pretraining.py leaves it: the converter must skip it.
        for name in list(t)[:3]:
            variables.append(tf.compat.v1.get_variable(
                name + "/adam_m", initializer=tf.zeros_like(t[name])))
            variables.append(tf.compat.v1.get_variable(
                name + "/adam_v", initializer=tf.zeros_like(t[name])))
        variables.append(tf.compat.v1.get_variable(
            "global_step", initializer=tf.constant(1000, tf.int64)))
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(out, "bert_model.ckpt"), write_meta_graph=False)
    os.remove(os.path.join(out, "checkpoint"))  # the released checkpoints ship without it
    with open(os.path.join(out, "bert_config.json"), "w") as f:
        json.dump(config_dict, f, indent=2)
    write_vocab(os.path.join(out, "vocab.txt"), vocab)


def main():
    import torch
    import transformers

    vocab = make_vocab()
    config = hf_config(len(vocab))
    model = perturbed_model(config)
    for name in ("hf_tiny_pretraining", "hf_tiny_base", "tf1_tiny"):
        shutil.rmtree(os.path.join(FIXTURES, name), ignore_errors=True)
    os.makedirs(FIXTURES, exist_ok=True)

    pre_dir = os.path.join(FIXTURES, "hf_tiny_pretraining")
    model.save_pretrained(pre_dir)
    base_dir = os.path.join(FIXTURES, "hf_tiny_base")
    model.bert.save_pretrained(base_dir)
    for d in (pre_dir, base_dir):
        write_vocab(os.path.join(d, "vocab.txt"), vocab)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)

    tf1_config = {k: v for k, v in config.to_dict().items() if k in (
        "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
        "initializer_range", "intermediate_size", "max_position_embeddings",
        "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size")}
    write_tf1(model, os.path.join(FIXTURES, "tf1_tiny"), vocab, tf1_config)

    token_ids, segment_ids, padding_mask = make_inputs(len(vocab))
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(token_ids).long(),
                    token_type_ids=torch.from_numpy(segment_ids).long(),
                    attention_mask=torch.from_numpy(padding_mask).long(),
                    output_hidden_states=True)
        bert_out = model.bert(input_ids=torch.from_numpy(token_ids).long(),
                              token_type_ids=torch.from_numpy(segment_ids).long(),
                              attention_mask=torch.from_numpy(padding_mask).long())
    np.savez(
        os.path.join(FIXTURES, "tiny_reference.npz"),
        token_ids=token_ids, segment_ids=segment_ids, padding_mask=padding_mask,
        sequence_output=bert_out.last_hidden_state.numpy(),
        pooled_output=bert_out.pooler_output.numpy(),
        encoder_outputs=np.stack([h.numpy() for h in out.hidden_states[1:]]),
        mlm_logits=out.prediction_logits.numpy(),
        nsp_logits=out.seq_relationship_logits.numpy(),
    )
    with open(os.path.join(FIXTURES, "REFERENCE.md"), "w") as f:
        f.write(
            "# Checkpoint fixtures\n\nMade by `scripts/make_fixtures.py` with transformers "
            f"{transformers.__version__} and torch {torch.__version__} (CPU, float32, eager "
            "attention).\n`tiny_reference.npz` holds the inputs and the outputs of "
            "`BertForPreTraining` on them:\n`sequence_output` / `pooled_output` "
            "(`BertModel`), `encoder_outputs` (hidden_states[1:]),\n`mlm_logits` "
            "(prediction_logits at every position), `nsp_logits`.\nThe three directories "
            "hold the same random weights in three layouts.\n")
    print("wrote fixtures to", os.path.abspath(FIXTURES))


if __name__ == "__main__":
    main()
