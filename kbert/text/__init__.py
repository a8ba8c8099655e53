"""Text ops that run in `tf.data` and in exported graphs: tokenizer, packer, MLM masking."""
