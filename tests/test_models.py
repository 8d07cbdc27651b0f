"""workbench.models: tiny presets, device/dtype choice, checkpoint save/load and its error messages."""
import json

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM

from workbench.models import (ARCHS, PRESETS, build_model, count_params, load_checkpoint, make_config,
                              pick_device, pick_dtype, save_checkpoint)
from workbench.tokenizer import build_tokenizer, vocab_mismatch


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("0123456789+=,|")


@pytest.mark.parametrize("arch,cls", [("llama", LlamaForCausalLM), ("qwen2", Qwen2ForCausalLM),
                                      ("gpt2", GPT2LMHeadModel)])
def test_presets_build(tok, arch, cls):
    model = build_model("nano", tok, arch, seed=0)
    assert type(model) is cls
    cfg = model.config
    d, layers, heads = PRESETS["nano"]
    assert cfg.vocab_size == len(tok) == 18
    if arch == "gpt2":
        assert (cfg.n_embd, cfg.n_layer, cfg.n_head) == (d, layers, heads)
    else:
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (d, layers, heads)
        assert cfg.intermediate_size == 4 * d
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 0)
    gc = model.generation_config
    assert (gc.bos_token_id, gc.eos_token_id, gc.pad_token_id) == (1, 2, 0)
    assert model.get_input_embeddings().weight.shape == (18, d)
    out = model(input_ids=torch.tensor([[1, 5, 6]]))
    assert out.logits.shape == (1, 3, 18)
    # deterministic for a seed, different across seeds
    same = build_model("nano", tok, arch, seed=0)
    other = build_model("nano", tok, arch, seed=1)
    sd, sd_same, sd_other = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_same[k]) for k in sd)
    assert not all(torch.equal(sd[k], sd_other[k]) for k in sd)


def test_build_model_does_not_touch_global_rng(tok):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("nano", tok, "llama", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_param_counts_grow_with_preset(tok):
    counts = [count_params(build_model(p, tok)) for p in ("nano", "tiny-student")]
    assert counts[0] < counts[1]
    m = build_model("nano", tok)
    # llama: tied embeddings (counted once), per layer 4 d^2 attention + 3 * d * 4d MLP + 2 norms, final norm
    d, V = 32, 18
    assert count_params(m) == V * d + (4 * d * d + 3 * d * 4 * d + 2 * d) + d
    m.requires_grad_(False)
    assert count_params(m, trainable_only=True) == 0
    assert count_params(m) > 0


def test_unknown_preset_and_arch(tok):
    with pytest.raises(ValueError) as e:
        make_config("huge", 18)
    assert "'huge'" in str(e.value) and "tiny-student" in str(e.value)
    with pytest.raises(ValueError) as e:
        build_model("nano", tok, arch="mamba")
    assert "'mamba'" in str(e.value) and str(list(ARCHS)) in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the no-CUDA error cannot be triggered")
def test_pick_device_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda:0")
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")


def test_pick_dtype():
    cpu = torch.device("cpu")
    assert pick_dtype(cpu) is torch.float32
    assert pick_dtype(cpu, "auto") is torch.float32
    assert pick_dtype(cpu, "bf16") is torch.bfloat16
    assert pick_dtype(cpu, "bfloat16") is torch.bfloat16
    assert pick_dtype(cpu, "fp16") is torch.float16
    assert pick_dtype(cpu, "float32") is torch.float32
    assert pick_dtype(cpu, torch.float64) is torch.float64
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        pick_dtype(cpu, "int8")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_save_and_load_checkpoint(tok, tmp_path, arch):
    model = build_model("nano", tok, arch, seed=3).eval()
    ck = save_checkpoint(model, tok, tmp_path / "ck", extra={"name": "x", "step": 7})
    assert (ck / "config.json").exists() and (ck / "model.safetensors").exists()
    assert json.loads((ck / "workbench.json").read_text()) == {"name": "x", "step": 7}
    loaded, ltok = load_checkpoint(ck, device="cpu")
    assert type(loaded) is type(model)
    assert vocab_mismatch(tok, ltok) is None
    assert ltok.padding_side == "left"
    sd, lsd = model.state_dict(), loaded.state_dict()
    assert sd.keys() == lsd.keys()
    assert all(torch.equal(sd[k], lsd[k]) for k in sd)
    x = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded.eval()(input_ids=x).logits)
    assert all(p.requires_grad for p in loaded.parameters())
    frozen, _ = load_checkpoint(str(ck), device="cpu", trainable=False, dtype="bf16")
    assert not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert next(frozen.parameters()).dtype is torch.bfloat16


def test_load_checkpoint_errors(tok, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(tmp_path / "missing")
    assert "does not exist" in str(e.value) and "save_pretrained" in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(empty)
    assert "no config.json" in str(e.value) and "model.save_pretrained(dir)" in str(e.value)

    model = build_model("nano", tok)
    no_tok = tmp_path / "no_tok"
    model.save_pretrained(no_tok)
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(no_tok)
    assert "no tokenizer files" in str(e.value) and "tokenizer.save_pretrained(dir)" in str(e.value)

    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(afile)
