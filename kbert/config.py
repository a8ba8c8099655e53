"""`BertConfig`: the architecture of a BERT encoder, its presets and its JSON form.

The field names are the words `build_encoder` (and keras-hub's `BertBackbone`) take, so a
config is written once and read everywhere. Unknown keys in JSON are errors, never ignored:
a typo such as `num_layer` must not silently build a different model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

ACTIVATIONS = ("gelu", "gelu_approximate", "relu")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder (Devlin et al., 2018).

    Attributes:
        vocabulary_size: V, rows of the token embedding (30,522 for the English models).
        num_layers: L, Transformer blocks.
        num_heads: A, attention heads; must divide `hidden_dim`.
        hidden_dim: H, width of every hidden state.
        intermediate_dim: width of the feed-forward layer (4H in the paper).
        max_sequence_length: rows of the position embedding; the longest T accepted.
        num_segments: rows of the segment (token type) embedding.
        dropout: rate used after embeddings, on attention probabilities and after each
            sub-layer, as in the original implementation.
        layer_norm_epsilon: epsilon of every LayerNorm.
        activation: `gelu` (exact, erf-based, as BERT and Hugging Face use),
            `gelu_approximate` (tanh form, as keras-hub uses) or `relu`.
        initializer_range: standard deviation of the truncated-normal initialiser.
    """

    vocabulary_size: int = 30522
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    intermediate_dim: int = 3072
    max_sequence_length: int = 512
    num_segments: int = 2
    dropout: float = 0.1
    layer_norm_epsilon: float = 1e-12
    activation: str = "gelu"
    initializer_range: float = 0.02

    def __post_init__(self):
        for name in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                     "intermediate_dim", "max_sequence_length", "num_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"BertConfig.hidden_dim ({self.hidden_dim}) must be divisible by "
                f"num_heads ({self.num_heads})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"BertConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, H / A."""
        return self.hidden_dim // self.num_heads

    def replace(self, **changes) -> "BertConfig":
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)

    # JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "BertConfig":
        """Builds a config; an unknown key raises `ValueError` naming it and `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown BertConfig key(s) {', '.join(map(repr, unknown))}; "
                f"known keys are {', '.join(sorted(known))}")
        return cls(**dict(values))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> "BertConfig":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source=source)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BertConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read(), source=os.fspath(path))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BertConfig":
        """One of `PRESETS` (tiny, mini, small, medium, base, large), optionally changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def _preset(layers: int, hidden: int, heads: int) -> BertConfig:
    # The paper's and Turc et al.'s compact models all use a 4H feed-forward layer.
    return BertConfig(num_layers=layers, hidden_dim=hidden, num_heads=heads,
                      intermediate_dim=4 * hidden)


PRESETS: dict[str, BertConfig] = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),
    "large": _preset(24, 1024, 16),
}
