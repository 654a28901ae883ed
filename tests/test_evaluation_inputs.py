"""Evaluation inputs prepared once (XRM/engine/evaluation_inputs.py): the same logits and records as streaming them."""
import backbone_fixtures as fx
import numpy as np
import pytest
import torch
from conftest import comparable
from transformers import BertConfig, BertModel

from XRM.common.errors import UserError
from XRM.data.image_datasets import ImageInputs
from XRM.data.images import load_image_split
from XRM.engine.batches import evaluation_batches
from XRM.engine.evaluation_inputs import (EVALUATION_INPUTS_VARIABLE,
                                          EvaluationInputs, InMemoryRows,
                                          LengthSortedTokens, length_batches,
                                          prepare)
from XRM.engine.model_stacks import ModuleStack
from XRM.networks.backbones import BackboneSpec
from XRM.networks.classifiers import TextClassifier, TwinNetwork, build_network

CPU = torch.device("cpu")
TINY_RESNET = ["--image_backbone", "resnet18", "--backbone_weights", "none"]


def _streamed(network, inputs, batch_size: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([network(x).float() for x in evaluation_batches(inputs, batch_size, CPU, 0)])


def _tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    network = build_network("image", (3, 32, 32), 2, {}, BackboneSpec("resnet18", pretrained=False))
    torch.nn.init.normal_(network.backbone.fc.weight)  # a zero head gives zero logits: nothing to compare
    return network.eval()


def _tiny_bert_classifier(dtype: torch.dtype = torch.float32) -> TextClassifier:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    network = TextClassifier(BertModel(config), 3)
    torch.nn.init.normal_(network.head.weight)  # a zero head gives zero logits: nothing to compare
    return network.to(dtype).eval()


def _token_rows(lengths: list[int], width: int = 24) -> torch.Tensor:
    """Right-padded rows [n, width, 3] of random ids with the given real lengths, int32 as cached."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(len(lengths), width, 3, dtype=torch.int32)
    for row, length in enumerate(lengths):
        tokens[row, :length, 0] = torch.randint(5, 50, (length,), generator=generator, dtype=torch.int32)
        tokens[row, :length, 1] = 1
        tokens[row, length // 2 : length, 2] = 1
    return tokens


def test_length_batches_sort_stably_and_keep_rows_times_longest_within_the_budget():
    batches = length_batches(np.array([5, 2, 9, 2, 3]), budget=10)
    # sorted: rows 1, 3 (2 tokens), 4 (3), 0 (5), 2 (9); 3 x 3 <= 10 < 4 x 5; 2 x 9 > 10
    assert [b.tolist() for b in batches] == [[1, 3, 4], [0], [2]]
    assert [b.tolist() for b in length_batches(np.array([30, 1]), budget=10)] == [[1], [0]]  # too long: alone
    assert [b.tolist() for b in length_batches(np.array([4, 4, 4]), budget=100)] == [[0, 1, 2]]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_length_sorted_tokens_give_the_logits_of_dataset_order(dtype, tolerance):
    network = _tiny_bert_classifier(dtype)
    lengths = [7, 3, 24, 12, 3, 18, 5, 9, 24, 1, 16, 11]
    tokens = _token_rows(lengths)
    expected = _streamed(network, tokens)
    prepared = LengthSortedTokens(tokens, budget=40)
    # ordered by length, cut where rows x longest row would pass 40: 5 x 7, 3 x 12, 2 x 18, then each 24 alone
    assert [index.tolist() for index, _ in prepared.batches] == [[9, 1, 4, 6, 0], [7, 11, 3], [10, 5], [2], [8]]
    with torch.inference_mode():
        found = prepared.predict(network, CPU)
    assert found.shape == (12, 3) and found.dtype == torch.float32
    assert torch.allclose(found, expected, atol=tolerance, rtol=0)
    assert found.std() > 0.1  # the head is not zero: the comparison compares something


def test_twin_text_networks_keep_their_twin_axis_in_dataset_order():
    twins = TwinNetwork(_tiny_bert_classifier(), _tiny_bert_classifier())
    torch.nn.init.normal_(twins.twins[1].head.weight)
    tokens = _token_rows([4, 20, 2, 9, 13])
    with torch.inference_mode():
        found = prepare(tokens, twins, CPU, 0).predict(twins, CPU)
    assert found.shape == (5, 3, 2)
    assert torch.allclose(found, _streamed(twins, tokens), atol=1e-5, rtol=0)


def _image_inputs(tmp_path) -> ImageInputs:
    fx.write_waterbirds(tmp_path / "data", with_features=False)
    return ImageInputs(load_image_split(tmp_path / "data", "waterbirds", "tr"))


def test_images_decoded_once_give_the_streamed_logits_and_no_file_is_read_again(tmp_path):
    network, inputs = _tiny_resnet(), _image_inputs(tmp_path)
    expected = _streamed(network, inputs, batch_size=4)
    evaluation = EvaluationInputs(CPU, 0)
    with torch.inference_mode():
        first = evaluation.predict(inputs, network, batch_size=4)
    prepared = evaluation.prepared[id(inputs)][1]
    assert isinstance(prepared, InMemoryRows)
    assert prepared.rows.dtype == torch.uint8 and prepared.rows.shape == (6, 3, 224, 224)  # the geometry applied
    assert torch.allclose(first, expected, atol=1e-5, rtol=0) and first.abs().max() > 0
    for path in inputs.split.paths:  # every later evaluation reads the decoded pixels, never the files
        (tmp_path / "data" / path).unlink(missing_ok=True)
    with torch.inference_mode():
        assert torch.equal(evaluation.predict(inputs, network, batch_size=4), first)
        with pytest.raises(UserError, match="cannot read image"):  # streaming would need them
            _streamed(network, inputs)


def test_images_read_once_are_streamed_and_token_rows_still_ordered(tmp_path):
    network, inputs = _tiny_resnet(), _image_inputs(tmp_path)
    evaluation = EvaluationInputs(CPU, 0)
    with torch.inference_mode():
        assert torch.allclose(evaluation.predict(inputs, network, 4, once=True), _streamed(network, inputs, 4),
                              atol=1e-5, rtol=0)
        assert evaluation.prepared == {}  # nothing decoded into memory for one pass
        tokens = _token_rows([6, 2, 11])
        bert = _tiny_bert_classifier()
        evaluation.predict(tokens, bert, 4, once=True)
    assert isinstance(evaluation.prepared[id(tokens)][1], LengthSortedTokens)  # ordering rows costs no memory


def test_streamed_mode_reads_the_files_at_every_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv(EVALUATION_INPUTS_VARIABLE, "streamed")
    network, inputs = _tiny_resnet(), _image_inputs(tmp_path)
    evaluation = EvaluationInputs(CPU, 0)
    with torch.inference_mode():
        assert torch.equal(evaluation.predict(inputs, network, 4), _streamed(network, inputs, 4))
    assert evaluation.prepared == {}


def test_an_unknown_evaluation_inputs_mode_is_one_user_error(monkeypatch):
    monkeypatch.setenv(EVALUATION_INPUTS_VARIABLE, "cached")
    with pytest.raises(UserError, match=f"^{EVALUATION_INPUTS_VARIABLE}=cached: use prepared"):
        EvaluationInputs(CPU, 0)


def test_module_stack_predicts_with_prepared_inputs_and_restores_training_modes():
    network = _tiny_bert_classifier().train()
    stack = ModuleStack(network, {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "num_steps": 2}, CPU, 0)
    tokens = _token_rows([5, 9, 2, 14])
    logits = stack.predict(tokens)
    assert logits.shape == (1, 4, 3) and network.training and network.dropout.training
    assert torch.allclose(logits[0], _streamed(network.eval(), tokens), atol=1e-5, rtol=0)


def _records_of(tmp_path, monkeypatch, mode: str, dataset_args: list[str], algorithm: str) -> list[str]:
    monkeypatch.setenv(EVALUATION_INPUTS_VARIABLE, mode)
    out = tmp_path / f"out_{mode}"
    hparams = '{"num_steps": 5, "eval_every": 2, "batch_size": 4}'
    assert fx.run_main(fx.main_args("--phase", "2", *dataset_args, "--algorithms", algorithm, "--out_dir", str(out),
                                    "--hparams", hparams, "--test_every_evaluation")) == 0
    results = next(out.glob(f"{algorithm}/*/group_labels_yes/results_hpcomb_0_seed0.json"))
    return comparable(fx.records(results)[1])  # the records (the header holds times and paths), less their timings


def test_a_text_run_writes_the_same_records_with_prepared_or_streamed_inputs(tmp_path, monkeypatch):
    bert = fx.write_tiny_bert(tmp_path / "tiny-bert")
    fx.write_civilcomments(tmp_path / "data")
    args = ["--datasets", "CivilComments", "--data_path", str(tmp_path / "data"), "--text_model", str(bert)]
    prepared = _records_of(tmp_path, monkeypatch, "prepared", args, "ERM")
    assert len(prepared) == 3  # steps 0, 2, 4
    assert prepared == _records_of(tmp_path, monkeypatch, "streamed", args, "ERM")


def test_an_image_run_writes_the_same_records_with_prepared_or_streamed_inputs(tmp_path, monkeypatch):
    fx.write_waterbirds(tmp_path / "data")
    args = ["--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"), "--inputs", "images", *TINY_RESNET]
    prepared = _records_of(tmp_path, monkeypatch, "prepared", args, "GroupDRO")
    assert len(prepared) == 3
    assert prepared == _records_of(tmp_path, monkeypatch, "streamed", args, "GroupDRO")


def test_xrm_phase_1_on_bert_ends_with_the_same_records_with_prepared_or_streamed_inputs(tmp_path, monkeypatch):
    bert = fx.write_tiny_bert(tmp_path / "tiny-bert")
    fx.write_civilcomments(tmp_path / "data")
    found = {}
    for mode in ("prepared", "streamed"):
        monkeypatch.setenv(EVALUATION_INPUTS_VARIABLE, mode)
        out = tmp_path / f"out_{mode}"
        assert fx.run_main(fx.main_args("--phase", "1", "--datasets", "CivilComments", "--data_path",
                                        str(tmp_path / "data"), "--text_model", str(bert), "--out_dir", str(out),
                                        "--hparams", '{"num_steps": 3, "eval_every": 2, "batch_size": 4}')) == 0
        found[mode] = fx.records(out / "XRM" / "CivilComments" / "group_labels_no" / "results_hpcomb_0_seed0.json")[1]
    # the last record comes from the twins' passes over the training and validation splits at the end
    # (read once: ModuleStack.predict(once=True)); six texts leave this tiny run's classes unsplit
    assert found["prepared"][-1] == {"step": 3, "flip_rate": 0.0, "degenerate": True}
    assert comparable(found["prepared"]) == comparable(found["streamed"])
