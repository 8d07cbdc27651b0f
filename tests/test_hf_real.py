"""Real-checkpoint path, by *path*: tiny Qwen2 and Llama checkpoints built and saved here (random weights,
a byte-level BPE tokenizer trained here, a ChatML template), then load -> compatibility check -> LoRA ->
OPD / GRPO / ExOPD steps through the Trainer -> adapter save / reload."""
import shutil

import math

import pytest
import torch

from workbench import hf, memory
from workbench.compat import check_names, check_pair
from workbench.config import ConfigError
from workbench.rollout import completion_logits, pad_prompts, positions_from_mask
from workbench.tasks.gsm8k import GSM8K


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_ckpts")
    tok = hf.make_tiny_tokenizer(384)
    return {arch: hf.make_tiny_pair(d, arch=arch, tokenizer=tok) for arch in ("qwen2", "llama")}


def _task():
    return GSM8K(max_new_tokens=8)


def _batch(tok, n=3):
    t = _task()
    ids, mask = pad_prompts([t.encode_prompt(tok, p.prompt) for p in t.train[:n]], tok.pad_token_id)
    return ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        model.train(was)
        return out


def _bump_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_load_by_path_lora_and_checks(ckpts, arch):
    t_dir, s_dir = ckpts[arch]
    pair = hf.load_pair(str(t_dir), str(s_dir), lora=hf.LoraSpec(r=4, alpha=8), device="cpu")
    assert pair.report.ok and not pair.report.warnings, str(pair.report)
    assert type(pair.student.get_base_model()).__name__.lower().startswith(arch)
    assert hf.is_peft(pair.student) and pair.dtype == torch.float32
    shape = memory.Shape.from_config(pair.student.config)
    summary = hf.lora_summary(pair.student)
    assert summary["trainable"] == shape.lora_params(4) and summary["r"] == 4
    assert all(not p.requires_grad for p in pair.teacher.parameters()) and not pair.teacher.training
    assert pair.info["gradient_checkpointing"] is True
    assert "trainable" in pair.describe()


def _copy_without_weights(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, dst / f.name)
    return dst


def test_compat_reads_configs_and_tokenizers_only(ckpts, tmp_path):
    t_dir, s_dir = ckpts["qwen2"]
    t_meta = _copy_without_weights(t_dir, tmp_path / "t")
    s_meta = _copy_without_weights(s_dir, tmp_path / "s")
    rep = check_names(str(t_meta), str(s_meta))
    assert rep.ok and rep.tokenizer_size == 384 and rep.teacher_vocab == rep.student_vocab == 384
    assert "OK" in str(rep)


def _refused(t_tok, s_tok, t_cfg, s_cfg, **kw):
    rep = check_pair(t_tok, s_tok, t_cfg, s_cfg, **kw)
    with pytest.raises(ConfigError) as e:
        rep.raise_if_errors()
    return str(e.value)


def test_compat_errors_come_with_the_fix(ckpts):
    t_dir, s_dir = ckpts["qwen2"]
    tok, cfg = hf.load_tokenizer(s_dir), hf.load_config(s_dir)
    # a different vocabulary
    other = hf.make_tiny_tokenizer(300)
    msg = _refused(other, tok, hf.tiny_config(other, "teacher"), cfg)
    assert "tokenizers differ" in msg and "fix:" in msg and "share a tokenizer" in msg
    # different EOS
    t_tok = hf.load_tokenizer(t_dir)
    t_tok.eos_token = "<|endoftext|>"
    msg = _refused(t_tok, tok, cfg, cfg)
    assert "EOS differs" in msg and "teacher_tokenizer.eos_token = '<|im_end|>'" in msg
    # different PAD
    t_tok = hf.load_tokenizer(t_dir)
    t_tok.pad_token = "<|im_start|>"
    msg = _refused(t_tok, tok, cfg, cfg)
    assert "PAD differs" in msg and "teacher_tokenizer.pad_token = '<|endoftext|>'" in msg
    # one tokenizer, embedding matrices padded differently: refused unless alignment='truncate'
    big = hf.tiny_config(tok, "teacher", vocab_size=448)
    msg = _refused(tok, tok, big, cfg)
    assert "embedding sizes differ" in msg and "alignment='truncate'" in msg
    rep = check_pair(tok, tok, big, cfg, alignment="truncate")
    assert rep.ok and rep.teacher_logits_slice == 384
    msg = _refused(tok, tok, cfg, big, alignment="truncate")          # teacher smaller: cannot cut
    assert "fewer embedding rows" in msg
    # a tokenizer larger than the model's embedding
    small = hf.tiny_config(tok, "student", vocab_size=256)
    assert "resize_token_embeddings(384)" in _refused(tok, tok, cfg, small)
    # GRPO never asks the teacher: a mismatch is only a warning
    rep = check_pair(other, tok, hf.tiny_config(other, "teacher"), cfg, uses_teacher=False)
    assert rep.ok and rep.warnings
    with pytest.raises(ConfigError, match="alignment must be one of"):
        check_pair(tok, tok, cfg, cfg, alignment="guess")


def test_template_warnings(ckpts):
    _, s_dir = ckpts["qwen2"]
    tok, cfg = hf.load_tokenizer(s_dir), hf.load_config(s_dir)
    t_tok = hf.load_tokenizer(s_dir)
    t_tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    rep = check_pair(t_tok, tok, cfg, cfg)
    assert rep.ok and any("render the same prompt differently" in w.what for w in rep.warnings)
    s_tok = hf.load_tokenizer(s_dir)
    s_tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['content'] }}<|endoftext|>{% endfor %}"
                           "{% if add_generation_prompt %}<|im_start|>{% endif %}")
    rep = check_pair(s_tok, s_tok, cfg, cfg)
    assert any("not with EOS" in w.what for w in rep.warnings)


def test_load_pair_refuses_before_loading_weights(ckpts, tmp_path):
    t_dir, _ = ckpts["qwen2"]
    other_tok = hf.make_tiny_tokenizer(300)
    _, s_other = hf.make_tiny_pair(tmp_path, tokenizer=other_tok)
    for f in s_other.glob("*.safetensors"):
        f.unlink()                    # no weights: the refusal must come from configs + tokenizers
    with pytest.raises(ConfigError, match="tokenizers differ"):
        hf.load_pair(str(t_dir), str(s_other), device="cpu")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_opd_and_grpo_steps_then_adapter_save_and_reload(ckpts, arch, tmp_path):
    t_dir, s_dir = ckpts[arch]
    pair = hf.load_pair(str(t_dir), str(s_dir), lora={"r": 4, "alpha": 8}, device="cpu")
    task = _task()
    before = {n: p.detach().clone() for n, p in pair.student.named_parameters()}
    tr = hf.trainer_for(pair, task, "opd", steps=2, batch_size=4, eval_every=2, eval_problems=2, lr=1e-2,
                        out=str(tmp_path / "opd_run"))
    summary = tr.run()
    assert summary["reason"] == "completed" and tr.step_count == 2
    changed = [n for n, p in pair.student.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)          # only the adapters trained
    ck = sorted((tmp_path / "opd_run" / "checkpoints").glob("step_*"))[-1]
    assert (ck / "adapter_config.json").exists()                  # the run directory holds the adapter
    # adapter save -> reload on a fresh base gives identical logits
    ids, mask = _batch(pair.tokenizer)
    want = _logits(pair.student, ids, mask)
    path = hf.save_adapter(pair.student, tmp_path / "adapter", pair.tokenizer)
    reloaded = hf.load_adapter(hf.load_model(str(s_dir), device="cpu"), path)
    assert torch.equal(_logits(reloaded, ids, mask), want)
    assert all(not p.requires_grad for p in reloaded.parameters())
    # GRPO on a fresh adapter of the same base (no teacher involved)
    hf.use_new_adapter(pair.student, "grpo")
    base = hf.load_model(str(s_dir), device="cpu", trainable=False)
    assert torch.allclose(_logits(pair.student, ids, mask), _logits(base, ids, mask), atol=1e-6)   # B = 0
    g = hf.trainer_for(pair, task, "grpo", steps=2, batch_size=4, num_generations=2, eval_every=0)
    assert g.teacher is None
    recs = [g.step() for _ in range(2)]
    assert all(r["method"] == "grpo" and torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    assert recs[-1]["cost/student_tokens"] > 0
    # the OPD adapter is untouched by the GRPO run
    pair.student.set_adapter("default")
    assert torch.equal(_logits(pair.student, ids, mask), want)


def test_opd_record_and_chat_prompts(ckpts):
    t_dir, s_dir = ckpts["qwen2"]
    pair = hf.load_pair(str(t_dir), str(s_dir), lora=hf.LoraSpec(r=4), device="cpu", gradient_checkpointing=False)
    tr = hf.trainer_for(pair, _task(), "opd", steps=1, batch_size=2, eval_every=0)
    rec = tr.step()
    for k in ("teacher/reverse_kl", "teacher/token_reward_mean", "policy/entropy", "cost/teacher_tokens"):
        assert k in rec and math.isfinite(rec[k]), k
    assert rec["teacher/reverse_kl"] >= 0 and rec["cost/teacher_tokens"] > 0
    assert 0 <= rec["policy/entropy"] <= math.log(pair.student.config.vocab_size) + 1e-4
    assert "nonfinite/skipped" not in rec and rec["grad/norm"] > 0
    # prompt tokens are counted from the chat-formatted ids, not the question's characters
    t = _task()
    n_prompt = max(len(t.encode_prompt(pair.tokenizer, p.prompt)) for p in t.train)
    assert rec["cost/student_tokens"] <= 2 * (n_prompt + 8)
    assert rec["samples"] and rec["samples"][0]["token_reward"] is not None


def test_pi_ref_is_the_base_with_adapters_disabled(ckpts):
    t_dir, s_dir = ckpts["qwen2"]
    pair = hf.load_pair(str(t_dir), str(s_dir), lora=hf.LoraSpec(r=4), device="cpu")
    n_before = sum(p.numel() for p in pair.student.parameters())
    tr = hf.trainer_for(pair, _task(), "exopd", steps=1, batch_size=2, eval_every=0)
    assert isinstance(tr.ref, hf.AdapterDisabledRef) and tr.ref.model is pair.student   # no second copy
    _bump_lora(pair.student)
    ids, mask = _batch(pair.tokenizer)
    base = hf.load_model(str(s_dir), device="cpu", trainable=False)
    ref_out = tr.ref(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    assert torch.allclose(ref_out, _logits(base, ids, mask), atol=1e-6)
    assert not torch.allclose(ref_out, _logits(pair.student, ids, mask), atol=1e-4)
    assert pair.student.training                      # the ref call restores train mode
    rec = tr.step()
    assert math.isfinite(rec["loss"]) and "nonfinite/skipped" not in rec and rec["grad/norm"] > 0   # an update
    assert sum(p.numel() for p in pair.student.parameters()) == n_before
    with pytest.warns(RuntimeWarning, match="not at their initial value"):
        hf.reference_policy(pair.student)


def test_gradient_checkpointing_gives_the_same_gradients(ckpts):
    _, s_dir = ckpts["llama"]
    grads = []
    for gc_on in (False, True):
        m = hf.load_model(str(s_dir), device="cpu")
        if gc_on:
            hf.enable_gradient_checkpointing(m)
        torch.manual_seed(0)
        m = hf.add_lora(m, hf.LoraSpec(r=4))
        _bump_lora(m)
        m.train()
        ids, mask = _batch(hf.load_tokenizer(s_dir), 2)
        from workbench.rollout import Rollout
        r = Rollout(ids, mask, ids[:, -4:], torch.ones(2, 4), torch.zeros(2, 4), torch.full((2,), 4),
                    torch.zeros(2, dtype=torch.bool))
        completion_logits(m, r).logsumexp(-1).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for n, p in sorted(m.named_parameters()) if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_teacher_view_truncates_and_stays_put(ckpts):
    t_dir, s_dir = ckpts["qwen2"]
    t = hf.load_model(str(t_dir), device="cpu", trainable=False)
    view = hf.TeacherView(t, out_device="cpu", vocab_size=300)
    assert view.to("meta") is view and view.config.vocab_size == 300 and t.config.vocab_size == 384
    ids, mask = _batch(hf.load_tokenizer(s_dir), 2)
    out = _logits(view, ids, mask)
    assert out.shape[-1] == 300 and torch.equal(out, _logits(t, ids, mask)[..., :300])
    from workbench.rollout import sample
    r = sample(view, ids, mask, max_new_tokens=3, eos_token_id=2, pad_token_id=0, temperature=0)
    assert r.completion_ids.max() < 300


def test_eight_bit_teacher_is_refused_with_the_reason(ckpts):
    t_dir, _ = ckpts["qwen2"]
    if hf.has_bitsandbytes() and torch.cuda.is_available():
        pytest.skip("bitsandbytes + CUDA present: 8-bit loading is possible here")
    with pytest.raises(ConfigError, match="bitsandbytes"):
        hf.load_model(str(t_dir), device="cpu", trainable=False, load_in_8bit=True)


def test_resolve_and_missing_paths(tmp_path):
    assert hf.resolve("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"     # a hub id, untouched
    assert not hf.is_local("Qwen/Qwen2.5-0.5B-Instruct") and hf.is_local(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.resolve(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hf.resolve(str(tmp_path))
    with pytest.raises(ConfigError, match="rank and alpha"):
        hf.LoraSpec(r=0)
