"""HyenaLM and the GPT baseline: causality, learning, cached generation, checkpoints, original-weight loading;
the LM trainer (a run, exact resume, config errors), perplexity and sampling on a tiny corpus."""

import json
import pathlib
import types

import pytest
import timm
import torch
import torch.nn.functional as F
from hv_testing import load_script
from safari_reference import random_safari_state_dict, safari_operator_forward

from hyena_vision.data.associative_recall import associative_recall_batch
from hyena_vision.engine import lm as train_lm
from hyena_vision.engine import perplexity, sample
from hyena_vision.engine.checkpoint import load_checkpoint, save_checkpoint
from hyena_vision.engine.config import ConfigError, load_config
from hyena_vision.models.gpt import GPT, create_lm
from hyena_vision.models.hyena_lm import HyenaLM, convert_safari_lm_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(
    vocab_size=13, d_model=16, n_layer=2, d_mlp=32, l_max=24, filter_cfg=dict(filter_order=16, emb_dim=5, w=14.0)
)


def tiny_hyena(order=2, **kwargs):
    return HyenaLM(**{**TINY, "order": order, **kwargs}, dtype=torch.float64)


def tiny_gpt():
    return GPT(vocab_size=13, d_model=16, n_layer=2, n_head=2, d_mlp=32, l_max=24, dtype=torch.float64)


@pytest.mark.parametrize(
    "make", [lambda: tiny_hyena(2), lambda: tiny_hyena(3), tiny_gpt], ids=["hyena2", "hyena3", "gpt"]
)
def test_causal(make):
    """Logits at positions <= t do not change when tokens after t change."""
    torch.manual_seed(0)
    model = make().eval()
    ids = torch.randint(0, 13, (2, 24))
    changed = ids.clone()
    changed[:, 10:] = torch.randint(0, 13, (2, 14))
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (2, 24, 13)
    assert torch.allclose(a[:, :10], b[:, :10], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_attention_matches_naive_masked_softmax():
    """CausalSelfAttention == an explicit float64 causal softmax(q k^T / sqrt(d_head)) v over heads."""
    torch.manual_seed(0)
    attention = GPT(vocab_size=13, d_model=16, n_layer=1, n_head=4, d_mlp=32, l_max=24, dtype=torch.float64)
    attention = attention.layers[0].mixer
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, v = (t.view(2, 9, 4, 4).transpose(1, 2) for t in attention.qkv(x).split(16, dim=-1))  # (B, H, L, 4)
    scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    expected = attention.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 16))
    assert torch.allclose(attention(x), expected, rtol=1e-12, atol=1e-12)


def test_loss_decreases_on_tiny_corpus():
    torch.manual_seed(0)
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 8)
    model = HyenaLM(**TINY, order=2)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        starts = torch.randint(0, len(text) - 17, (8,))
        chunk = torch.stack([text[s : s + 17] for s in starts])
        loss = F.cross_entropy(model(chunk[:, :-1]).flatten(0, 1), chunk[:, 1:].flatten())
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about ln(13) = 2.56 at the start
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


@pytest.mark.parametrize("order", [2, 3])
def test_cached_logits_match_full_forward(order):
    torch.manual_seed(1)
    model = tiny_hyena(order).eval()
    ids = torch.randint(0, 13, (3, 20))
    with torch.no_grad():
        full = model(ids)  # (B, L, V)
        logits, caches = model.prefill(ids[:, :7], total_len=20)
        cached = [logits]
        for t in range(7, 19):
            cached.append(model.step(ids[:, t], caches))
    expected = full[:, 6:19]
    assert torch.allclose(torch.stack(cached, dim=1), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_cached_and_uncached_generation_identical(order):
    torch.manual_seed(2)
    model = tiny_hyena(order)
    prompt = torch.randint(0, 13, (2, 5))
    cached = model.generate(prompt, 15, temperature=0)
    uncached = model.generate(prompt, 15, temperature=0, use_cache=False)
    assert cached.shape == (2, 20) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, uncached)
    assert model.training  # mode restored
    sampled = [
        model.generate(prompt, 15, top_k=4, generator=torch.Generator().manual_seed(3), use_cache=c) for c in (1, 0)
    ]
    assert torch.equal(*sampled)


def test_generation_errors():
    model = tiny_hyena()
    with pytest.raises(ValueError, match="exceeds the model's l_max=24"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 15)
    with pytest.raises(ValueError, match="prompt_ids must lie in"):
        model.generate(torch.full((1, 3), 13), 2)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 2, top_k=0)


def test_gpt_generation_shape():
    prompt = torch.randint(0, 13, (2, 4))
    assert tiny_gpt().generate(prompt, 6, temperature=0.8, top_k=5).shape == (2, 10)


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        HyenaLM(**TINY, filter_ordr=8)
    with pytest.raises(TypeError):
        create_lm("gpt", vocab_size=13, d_model=16, n_layer=1, n_head=2, d_mlp=32, l_max=8, order=2)
    with pytest.raises(ValueError, match="exceeds l_max=24"):
        tiny_hyena()(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds l_max=24"):
        tiny_gpt()(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        tiny_hyena()(torch.zeros(1, 5))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    model = tiny_hyena(3)
    save_checkpoint(tmp_path / "ckpt.pt", {"model": model.state_dict()})
    restored = tiny_hyena(3)
    restored.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt")["model"])
    ids = torch.randint(0, 13, (2, 24))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), restored.eval()(ids))


def test_hyena_and_gpt_share_one_block_class_with_timm_mlp():
    hyena, gpt = tiny_hyena(), tiny_gpt()
    assert type(hyena.layers[0]) is type(gpt.layers[0])
    assert isinstance(hyena.layers[0].mlp, timm.layers.Mlp) and isinstance(gpt.layers[0].mlp, timm.layers.Mlp)
    assert hyena.layers[0].mlp.act.approximate == "tanh"
    assert hyena.layers[0].mixer.filter.filter_cfg is hyena.layers[1].mixer.filter.filter_cfg  # built once


def test_gpt2_init():
    model = HyenaLM(vocab_size=50, d_model=64, n_layer=8, d_mlp=256, l_max=16)
    std = 0.02 / (2 * 8) ** 0.5
    assert abs(model.layers[0].mlp.fc2.weight.std().item() - std) < 0.2 * std
    assert abs(model.layers[0].mixer.out_proj.weight.std().item() - std) < 0.2 * std
    assert abs(model.layers[0].mixer.in_proj.weight.std().item() - 0.02) < 0.002
    assert model.layers[0].mlp.fc1.bias.abs().max() == 0


def test_paper_config_sizes():
    """Parameter counts on the meta device (nothing allocated): the original's Hyena small has 153.7M."""
    small = timm.create_model("hyena_lm_153m", device="meta")
    assert round(small.num_params() / 1e5) == 1537
    assert small.word_embeddings.weight.shape == (50264, 864)
    base = timm.create_model("hyena_lm_125m", device="meta")
    assert base.layers[0].mixer.order == 3 and base.layers[0].mixer.in_proj.out_features == 4 * 768


# ----------------------------------------------------------------------------------------------------------------
# Original (safari ConvLMHeadModel) weights


def _layer_norm(x, sd, prefix):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]


def _safari_lm_reference(sd, ids, n_layer, order, modulate):
    """The original LM's forward from its state dict, in float64, with the independent operator reference."""
    emb = sd["backbone.embeddings.word_embeddings.weight"]
    x = emb[ids]
    for i in range(n_layer):
        p = f"backbone.layers.{i}"
        mixer_sd = {k[len(p) + 7 :]: v for k, v in sd.items() if k.startswith(f"{p}.mixer.")}
        x = x + safari_operator_forward(
            mixer_sd, _layer_norm(x, sd, f"{p}.norm1"), order, layout="hyena", modulate=modulate
        )
        h = _layer_norm(x, sd, f"{p}.norm2") @ sd[f"{p}.mlp.fc1.weight"].T + sd[f"{p}.mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
        x = x + h @ sd[f"{p}.mlp.fc2.weight"].T + sd[f"{p}.mlp.fc2.bias"]
    return _layer_norm(x, sd, "backbone.ln_f") @ sd["lm_head.weight"].T  # (B, L, padded V)


def _random_safari_lm(d_model, n_layer, d_mlp, vocab, l_max, order):
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, dtype=torch.float64, generator=g) * scale

    emb = rand(vocab, d_model, scale=0.5)
    sd = {"backbone.embeddings.word_embeddings.weight": emb, "lm_head.weight": emb}
    for i in range(n_layer):
        p = f"backbone.layers.{i}"
        mixer = random_safari_state_dict(d_model, l_max, order, emb_dim=5, filter_order=16, w=14.0, generator=g)
        sd.update({f"{p}.mixer.{k}": v for k, v in mixer.items()})
        for norm in ("norm1", "norm2"):
            sd[f"{p}.{norm}.weight"], sd[f"{p}.{norm}.bias"] = 1 + 0.1 * rand(d_model), 0.1 * rand(d_model)
        sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"] = rand(d_mlp, d_model, scale=d_model**-0.5), rand(d_mlp)
        sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"] = rand(d_model, d_mlp, scale=d_mlp**-0.5), rand(d_model)
    sd["backbone.ln_f.weight"], sd["backbone.ln_f.bias"] = 1 + 0.1 * rand(d_model), 0.1 * rand(d_model)
    return sd


@pytest.mark.parametrize("order,modulate", [(2, True), (3, True), (2, False)])
def test_original_checkpoint_matches_reference(order, modulate):
    d_model, n_layer, d_mlp, vocab, l_max = 8, 2, 16, 13, 20
    sd = _random_safari_lm(d_model, n_layer, d_mlp, 16, l_max, order)
    kwargs = dict(vocab_size=vocab, d_model=d_model, n_layer=n_layer, d_mlp=d_mlp, l_max=l_max, order=order)
    kwargs.update(filter_cfg=dict(filter_order=16, emb_dim=5, modulate=modulate), dtype=torch.float64)
    model = HyenaLM.from_safari_state_dict({f"model.{k}": v for k, v in sd.items()}, **kwargs).eval()
    ids = torch.randint(0, vocab, (2, 17))
    expected = _safari_lm_reference(sd, ids, n_layer, order, modulate)[..., :vocab]
    with torch.no_grad():
        actual = model(ids)
    assert (actual - expected).abs().max() < 1e-10 * expected.abs().max()


def test_original_checkpoint_through_timm(tmp_path):
    """A Lightning checkpoint of the original loads with timm's ``pretrained_cfg_overlay=dict(file=...)``."""
    sd = _random_safari_lm(8, 1, 16, 16, 20, 2)
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}}, tmp_path / "safari.ckpt")
    model = timm.create_model(
        "hyena_lm_153m",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "safari.ckpt")),
        **dict(vocab_size=13, d_model=8, n_layer=1, d_mlp=16, l_max=20),
        filter_cfg=dict(emb_dim=5, filter_order=16, modulate=False),
        dtype=torch.float64,
    ).eval()
    ids = torch.randint(0, 13, (1, 20))
    expected = _safari_lm_reference(sd, ids, 1, 2, modulate=False)[..., :13]
    with torch.no_grad():
        assert torch.allclose(model(ids), expected, rtol=1e-10, atol=1e-10)


def test_converter_rejects_unknown_and_untied_keys():
    sd = _random_safari_lm(4, 1, 8, 16, 8, 2)
    with pytest.raises(KeyError, match="backbone.layers.0.typo"):
        convert_safari_lm_state_dict({**sd, "backbone.layers.0.typo.weight": torch.zeros(1)}, 2)
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        convert_safari_lm_state_dict({**sd, "lm_head.weight": torch.zeros(16, 4)}, 2)


# ----------------------------------------------------------------------------------------------------------------
# Associative recall data


def test_associative_recall_targets():
    inputs, targets = associative_recall_batch(64, 31, 10, torch.Generator().manual_seed(0))
    assert inputs.shape == (64, 31) and targets.shape == (64,)
    keys, values, query = inputs[:, 0:-1:2], inputs[:, 1:-1:2], inputs[:, -1]
    assert keys.max() < 5 and values.min() >= 5 and query.max() < 5
    for b in range(64):
        hits = values[b][keys[b] == query[b]]
        assert len(hits) > 0 and (hits == targets[b]).all()
    even, _ = associative_recall_batch(4, 30, 10)
    assert even.shape == (4, 30) and even[:, 0].min() >= 5  # a leading value token outside every pair
    with pytest.raises(ValueError, match="seq_len must be >= 3"):
        associative_recall_batch(2, 2, 10)
    with pytest.raises(ValueError, match="vocab_size must be even"):
        associative_recall_batch(2, 9, 11)


# ----------------------------------------------------------------------------------------------------------------
# The LM trainer, perplexity and sampling (their main(argv) run in this process, saving interpreter start-ups)

TINY_RUN = [
    "model.d_model=16",
    "model.n_layer=2",
    "model.d_mlp=32",
    "model.l_max=16",
    "model.hyena.filter_cfg.filter_order=8",
    "model.gpt.n_head=2",
    "train.block_size=16",
    "train.batch_size=4",
    "train.steps=6",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.log_every=2",
    "optim.warmup_steps=2",
    "model.dropout=0.1",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40)
    return path


def train(corpus, out, *extra, resume=False) -> dict:
    data = [f"data.text={corpus}", f"data.cache_dir={out.parent / 'cache'}", f"out_dir={out}"]
    return train_lm.main([*TINY_RUN, *data, *extra, *(["--resume"] if resume else [])])


@pytest.mark.parametrize("arch", ["hyena", "gpt"])
def test_resume_is_exact(corpus, tmp_path, arch):
    summary = train(corpus, tmp_path / "full", f"model.arch={arch}")
    # a job script that always passes --resume: the first start finds no checkpoint and starts from scratch
    train(corpus, tmp_path / "split", f"model.arch={arch}", "train.stop_after=4", resume=True)
    assert torch.load(tmp_path / "split" / "last.pt")["step"] == 4
    train(corpus, tmp_path / "split", f"model.arch={arch}", resume=True)
    full, split = (torch.load(tmp_path / r / "last.pt") for r in ("full", "split"))
    assert full["step"] == split["step"] == 6
    for key, value in full["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert summary["full_val_tokens"] > 0 and summary["val_loss"] < 4.0
    rows = [json.loads(line) for line in (tmp_path / "split" / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 3, 6]


def test_unknown_config_key_fails(tmp_path):
    with pytest.raises(ConfigError, match="fliter_order"):
        train_lm.main(["model.hyena.fliter_order=8", f"out_dir={tmp_path}"])


def test_perplexity_and_sample(corpus, tmp_path, capsys):
    summary = train(corpus, tmp_path / "run")
    result = perplexity.main([str(tmp_path / "run"), "--json", str(tmp_path / "ppl.json")])
    assert abs(result["loss"] - summary["full_val_loss"]) < 1e-5
    assert json.loads((tmp_path / "ppl.json").read_text())["tokens"] == summary["full_val_tokens"]
    texts = sample.main([str(tmp_path / "run"), "--prompt", "To be", "--max-new-tokens", "30", "--seed", "0"])
    assert texts[0].startswith("To be") and len(texts[0]) == 35  # 30 > l_max - 5: the sliding window path
    assert texts[0] in capsys.readouterr().out


def test_bench_mixers_and_associative_recall_scripts(tmp_path):
    bench = load_script("eval/bench_mixers.py")
    args = ["--device", "cpu", "--lengths", "32", "64", "--d-model", "16", "--heads", "2", "--iters", "1"]
    rows = bench.main([*args, "--warmup", "0", "--out", str(tmp_path / "bench")])
    assert [r["length"] for r in rows] == [32, 64] and rows[0]["hyena"]["fwd_ms"] > 0
    assert "Crossover" in (tmp_path / "bench" / "bench.md").read_text() and (tmp_path / "bench" / "bench.png").is_file()
    recall = load_script("eval/associative_recall.py")
    args = ["--lengths", "9", "--width", "16", "--max-steps", "4", "--eval-every", "2", "--test-size", "8"]
    results = recall.main([*args, "--out", str(tmp_path / "recall")])
    assert [(r["model"], r["steps"]) for r in results] == [("hyena", 4), ("attention", 4)]
    assert 0 <= results[0]["accuracy"] <= 1 and "| hyena | 9 |" in (tmp_path / "recall" / "results.md").read_text()
    # GPT-2's init std 0.02 left the width-64 attention baseline at chance (uniform attention): it uses 0.1
    assert "attention 0.0005, init std 0.1" in (tmp_path / "recall" / "results.md").read_text()
    gpt = recall.build_model("attention", 10, 64, types.SimpleNamespace(width=64, heads=1, attn_init_std=0.1))
    assert 0.09 < gpt.layers[0].mixer.qkv.weight.std() < 0.11 and 0.09 < gpt.position_embeddings.weight.std() < 0.11


@pytest.mark.parametrize("name", ["shakespeare_char_cpu", "shakespeare_char"])
def test_lm_configs_load_and_build(name):
    cfg = load_config(train_lm.LMConfig, f"lm/{name}", ["optim.lr=3e-4"])
    assert cfg.optim.lr == 3e-4 and cfg.train.steps > 0 and cfg.model.arch == "hyena"
    with pytest.raises(ConfigError, match="n_layers"):
        load_config(train_lm.LMConfig, f"lm/{name}", ["model.n_layers=2"])
    with torch.device("meta"):
        model = create_lm(cfg.model.arch, **train_lm.model_arguments(cfg, 65))
    assert sum(p.numel() for p in model.parameters()) > 0
