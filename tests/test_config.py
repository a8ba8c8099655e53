import json

import pytest

from kbert.config import PRESETS, BertConfig


def test_defaults_are_bert_base_with_exact_gelu():
    config = BertConfig()
    assert (config.num_layers, config.hidden_dim, config.num_heads) == (12, 768, 12)
    assert config.intermediate_dim == 3072 and config.vocabulary_size == 30522
    assert config.max_sequence_length == 512 and config.num_segments == 2
    assert config.dropout == 0.1 and config.layer_norm_epsilon == 1e-12
    assert config.activation == "gelu"


@pytest.mark.parametrize("name,layers,hidden,heads", [
    ("tiny", 2, 128, 2), ("mini", 4, 256, 4), ("small", 4, 512, 8),
    ("medium", 8, 512, 8), ("base", 12, 768, 12), ("large", 24, 1024, 16)])
def test_presets(name, layers, hidden, heads):
    config = BertConfig.from_preset(name)
    assert (config.num_layers, config.hidden_dim, config.num_heads) == (layers, hidden, heads)
    assert config.intermediate_dim == 4 * hidden


def test_json_round_trip(tmp_path):
    config = BertConfig.from_preset("mini", dropout=0.2, activation="gelu_approximate")
    assert BertConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "config.json")
    assert BertConfig.load(tmp_path / "config.json") == config
    assert json.loads(config.to_json())["hidden_dim"] == 256


def test_unknown_key_is_an_error_naming_it(tmp_path):
    values = BertConfig().to_dict()
    values["num_layer"] = 3
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="'num_layer'") as error:
        BertConfig.load(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("changes,message", [
    ({"hidden_dim": 100, "num_heads": 12}, "divisible"),
    ({"num_layers": 0}, "num_layers"),
    ({"activation": "swish"}, "activation"),
    ({"dropout": 1.5}, "dropout"),
])
def test_invalid_values(changes, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**changes)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        BertConfig.from_preset("huge")


def test_not_json(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json("{", source="x")
    assert set(PRESETS) == {"tiny", "mini", "small", "medium", "base", "large"}
