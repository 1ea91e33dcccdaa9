"""Hyena CLIP through open_clip: creation by name, tokenizer, text tower pooling, loss, training/resume, zero-shot
evaluation, caption shards and CSV."""

import math
import random
from collections import Counter

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from hyena_vision.data import captions  # noqa: E402
from hyena_vision.engine.clip import evaluate_cifar, main, wilson_interval  # noqa: E402
from hyena_vision.engine.config import ConfigError  # noqa: E402
from hyena_vision.models.hyena_clip import HyenaTextEncoder, build_hyena_text_tower  # noqa: E402

NAMES = ("hyena_clip_cifar", "hyena_clip_cifar_bidir", "clip_vit_cifar")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_create_by_name_forward_shapes(name):
    torch.manual_seed(0)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    assert name in open_clip.list_models()
    assert tokenizer.context_length == 48
    texts = tokenizer(["a photo of a frog.", "a blurry photo of a ship, a vessel that carries passengers or freight."])
    assert texts.shape == (2, 48)
    image_features, text_features, logit_scale = model(torch.randn(2, 3, 32, 32), texts)
    assert image_features.shape == text_features.shape == (2, 64) and logit_scale.ndim == 0
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(2))
    if name.startswith("hyena"):
        assert isinstance(model.text, HyenaTextEncoder) and model.text.causal == (name == "hyena_clip_cifar")
        assert model.visual.trunk.__class__.__name__ == "HyenaViT"


def test_baseline_matches_size():
    hyena, baseline = open_clip.create_model("hyena_clip_cifar"), open_clip.create_model("clip_vit_cifar")
    assert abs(_count(hyena) / _count(baseline) - 1) < 0.1
    assert abs(_count(hyena.visual) / _count(baseline.visual) - 1) < 0.1


def _ids(batch: int, length: int, eot_pos: list[int], vocab: int, generator) -> torch.Tensor:
    ids = torch.randint(1, vocab - 1, (batch, length), generator=generator)  # EOT (vocab - 1) is the largest id
    for row, pos in enumerate(eot_pos):
        ids[row, pos] = vocab - 1
    return ids


@pytest.mark.parametrize("causal", [True, False])
def test_eot_pooling_depends_only_on_tokens_up_to_eot(causal):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    enc = (
        HyenaTextEncoder(
            context_length=12,
            vocab_size=50,
            width=16,
            layers=2,
            output_dim=8,
            causal=causal,
            filter_cfg=dict(filter_order=16),
        )
        .double()
        .eval()
    )
    eot = [3, 7, 11]
    ids = _ids(3, 12, eot, 50, g)
    out = enc(ids)
    assert out.shape == (3, 8)
    after = ids.clone()
    after[0, 4:], after[1, 8:] = torch.randint(1, 49, (8,), generator=g), torch.randint(1, 49, (4,), generator=g)
    torch.testing.assert_close(enc(after), out, rtol=1e-10, atol=1e-12)
    before = ids.clone()
    rows = torch.arange(3)
    before[rows, torch.tensor(eot) - 1] = (ids[rows, torch.tensor(eot) - 1] % 48) + 1  # another token before EOT
    assert (enc(before) - out).abs().amax(dim=1).min() > 1e-6
    if causal:  # the feature is the EOT position's: the sequence cut right after EOT gives it too
        torch.testing.assert_close(enc(ids[:1, :4]), out[:1], rtol=1e-9, atol=1e-12)


def test_text_tower_input_and_config_errors():
    enc = HyenaTextEncoder(
        context_length=8, vocab_size=20, width=8, layers=1, output_dim=4, filter_cfg=dict(filter_order=8)
    )
    with pytest.raises(ValueError, match="context_length=8"):
        enc(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        enc(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="heads"):
        build_hyena_text_tower(16, {"width": 8, "heads": 2, "hyena_text": {}})
    with pytest.raises(TypeError):
        build_hyena_text_tower(16, {"width": 8, "hyena_text": {"nonsense": 1}})
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['nonsense'\]"):
        build_hyena_text_tower(16, {"width": 8, "hyena_text": {"filter_cfg": {"nonsense": 1}}})


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = open_clip.create_model("hyena_clip_cifar")
    tokenizer = open_clip.get_tokenizer("hyena_clip_cifar")
    texts = tokenizer([f"a photo of a {c}." for c in ("cat", "dog", "ship", "frog", "horse", "bird")])
    images = torch.randn(6, 3, 32, 32)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):  # past the plateau at log(6), where CLIP losses start
        loss = loss_fn(*model(images, texts))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * math.log(6)  # well below chance on 6 pairs


def test_captions_templates_and_held_out(shared_data, cifar_subset):
    texts = captions.load_class_texts(shared_data / "class-glosses.tsv")
    assert len(texts) == 10 and texts["frog"].names[0] == "frog" and ";" not in texts["dog"].gloss
    caption = captions.make_caption("a blurry photo of a {}", texts["frog"], random.Random(1))
    assert caption.startswith("a blurry photo of a ") and caption.endswith(".")
    root = cifar_subset(2, 2)
    held_out, templates = captions.HELD_OUT_CLASSES, captions.TRAIN_TEMPLATES
    samples = captions.caption_samples(root / "train", texts, templates, exclude_classes=held_out, seed=0)
    assert len(samples) == 16 and not any(held in s.path for s in samples for held in held_out)
    tokenizer = captions.CaptionTokenizer(open_clip.get_tokenizer("hyena_clip_cifar"))
    for s in samples:  # every training caption fits the context
        tokenizer(s.caption)
    with pytest.raises(ValueError, match="truncate_captions"):
        tokenizer("a photo " * 40)


def test_shards_and_csv_read_what_was_written(shared_data, cifar_subset, tmp_path):
    from PIL import Image
    from torchvision.transforms import PILToTensor

    texts = captions.load_class_texts(shared_data / "class-glosses.tsv")
    samples = captions.caption_samples(cifar_subset(2, 2) / "train", texts, captions.TRAIN_TEMPLATES, seed=3)
    tokenize = captions.CaptionTokenizer(open_clip.get_tokenizer("hyena_clip_cifar"))
    shards = captions.write_caption_shards(samples, tmp_path / "shards", maxcount=7)
    assert len(shards) == 3
    csv_path = captions.write_caption_csv(samples, tmp_path / "captions.csv")

    def key(image, ids):  # integers only: exact comparison
        return tuple(ids.tolist()), tuple(image.flatten().tolist())

    expected = Counter(key(PILToTensor()(Image.open(s.path)), tokenize(s.caption)) for s in samples)
    pipeline = captions.caption_shard_pipeline(
        "::".join(shards), transform=PILToTensor(), tokenize=tokenize, batch_size=4, seed=0, shuffle_buffer=0
    )
    batches = list(pipeline)
    assert len(batches) == 5 and batches[0][0].shape == (4, 3, 32, 32) and batches[0][1].shape == (4, 48)
    from_shards = Counter(key(img, ids) for images, ids_b in batches for img, ids in zip(images, ids_b, strict=True))
    dataset = captions.CaptionCSV(csv_path, transform=PILToTensor(), tokenize=tokenize)
    from_csv = Counter(key(*dataset[i]) for i in range(len(dataset)))
    assert from_shards == expected and from_csv == expected


def _train(tmp_path, csv_path, out, *extra):
    args = [
        "model.name=hyena_clip_cifar",
        f"data.train={csv_path}",
        "train.batch_size=8",
        "train.steps=2",
        "optim.warmup_steps=1",
        "train.log_every=1",
        "eval.cifar=false",
        f"out_dir={tmp_path / out}",
        *extra,
    ]
    return main(args)


def test_train_one_step_and_resume_equivalence(shared_data, cifar_subset, tmp_path):
    texts = captions.load_class_texts(shared_data / "class-glosses.tsv")
    samples = captions.caption_samples(cifar_subset(2, 2) / "train", texts, captions.TRAIN_TEMPLATES, seed=0)
    csv_path = captions.write_caption_csv(samples, tmp_path / "captions.csv")
    summary = _train(tmp_path, csv_path, "full")
    assert summary["steps"] == 2 and (tmp_path / "full" / "model.safetensors").is_file()
    assert _train(tmp_path, csv_path, "split", "train.stop_after=1") == {}
    with pytest.raises(FileExistsError):
        _train(tmp_path, csv_path, "split")
    main(["--config", str(tmp_path / "split" / "config.yaml"), "--resume", "train.stop_after=0"])
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    for key, value in full.items():
        torch.testing.assert_close(split[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the exported weights load through open_clip by name with pretrained=<file>
    model = open_clip.create_model("hyena_clip_cifar", pretrained=str(tmp_path / "full" / "model.safetensors"))
    torch.testing.assert_close(model.state_dict()["text.text_projection.weight"], full["text.text_projection.weight"])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nonsense"):
        main([f"out_dir={tmp_path}", "train.nonsense=1"])
    with pytest.raises(ValueError, match="batch_size"):
        main([f"out_dir={tmp_path}", "train.batch_size=1"])
    with pytest.raises(ValueError, match="warmup_steps"):
        main([f"out_dir={tmp_path}", "train.steps=10", "optim.warmup_steps=10"])
    with pytest.raises(FileNotFoundError, match="caption CSV"):
        main([f"out_dir={tmp_path / 'csv'}", f"data.train={tmp_path / 'missing.csv'}", "eval.cifar=false"])


def _evaluate(pretrained, cifar_root, shared_data, retrieval_per_class: int) -> dict:
    model, _, preprocess = open_clip.create_model_and_transforms("hyena_clip_cifar", pretrained=pretrained)
    tokenizer, glosses = open_clip.get_tokenizer("hyena_clip_cifar"), str(shared_data / "class-glosses.tsv")
    return evaluate_cifar(
        model,
        preprocess,
        tokenizer,
        cifar=str(cifar_root),
        glosses=glosses,
        held_out_classes=captions.HELD_OUT_CLASSES,
        retrieval_per_class=retrieval_per_class,
        batch_size=7,
    )


def test_zero_shot_and_retrieval_eval_runs(shared_data, cifar_subset):
    torch.manual_seed(0)
    out = _evaluate(None, cifar_subset(1, 3), shared_data, retrieval_per_class=2)
    assert out["zero_shot_top1"]["n"] == 30 and out["zero_shot_top1_held_out"]["n"] == 6
    assert out["zero_shot_top1_seen"]["n"] == 24 and out["i2t_recall@5"]["n"] == 20
    for m in out.values():
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1] and m["successes"] == round(m["value"] * m["n"])
    assert out["i2t_recall@1"]["value"] <= out["i2t_recall@5"]["value"]


def test_wilson_interval():
    z2 = 1.959964**2
    lo, hi = wilson_interval(0, 20)  # closed form at p = 0: [0, z^2 / (n + z^2)]
    assert lo == 0 and hi == pytest.approx(z2 / (20 + z2), rel=1e-9)
    lo, hi = wilson_interval(50, 100)  # at p = 1/2: centred on 1/2, width 2 z sqrt(n/4 + z^2/4) / (n + z^2)
    assert (lo + hi) / 2 == pytest.approx(0.5, rel=1e-12)
    assert hi - lo == pytest.approx(2 * math.sqrt(z2) * math.sqrt(100 * 0.25 + z2 / 4) / (100 + z2), rel=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_shipped_weights_load_by_tag_and_beat_chance(shared_data, cifar_subset):
    assert open_clip.list_pretrained_tags_by_model("hyena_clip_cifar") == ["cifar_captions"]
    out = _evaluate("cifar_captions", cifar_subset(1, 10), shared_data, retrieval_per_class=1)
    assert out["zero_shot_top1"]["n"] == 100 and out["zero_shot_top1"]["ci95"][0] > 0.1  # above 10-class chance
