"""HOICLIPModule end to end: a tiny model overfits 8 synthetic images and recovers their triplets."""

import pytest
import torch

from hoiclip_lightning.data import (
    ClipTransform,
    HOIDataset,
    HOIEvalTransform,
    collate_hoi,
    generate_synthetic_dataset,
    load_annotations,
)
from hoiclip_lightning.metrics import HICODetMAP
from hoiclip_lightning.models import HOICLIPConfig, HOICLIPModule, OptimizerConfig, PostProcessConfig
from hoiclip_lightning.vocabulary import HOIVocabulary

TINY = dict(backbone="resnet10", hidden_dim=64, nheads=4, dim_feedforward=128, dropout=0.0, enc_layers=1,
            dec_layers=2, inter_dec_layers=2, inter_nheads=2, num_queries=8, clip_model="hoiclip-tiny",
            clip_pretrained=None)


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth8")
    generate_synthetic_dataset(root, seed=5, num_train=8, num_test=2, image_size=128)
    vocab = HOIVocabulary.from_json(root / "vocabulary.json")
    records = load_annotations(root / "annotations/trainval_hico.json", vocab, root / "images/train2015").records
    dataset = HOIDataset(records, vocab, train=False, transform=HOIEvalTransform(128, 128),
                         clip_transform=ClipTransform(64), max_boxes=None, return_gt=True)
    batch = collate_hoi([dataset[i] for i in range(len(dataset))])
    return vocab, batch, root


@pytest.mark.slow
def test_tiny_model_overfits_eight_images(eight_images):
    vocab, batch, root = eight_images
    torch.manual_seed(0)
    module = HOICLIPModule(vocabulary=str(root / "vocabulary.json"), net=HOICLIPConfig(**TINY),
                           optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3),
                           postprocess=PostProcessConfig(topk=20, tfe=False))
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    losses = []
    for _ in range(200):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], f"loss {losses[0]:.2f} -> {losses[-1]:.2f}"

    module.eval()
    with torch.no_grad():
        outputs = module(batch, all_classes=True)
    orig = torch.stack([t.orig_size for t in batch.targets])
    preds = module.postprocessor(outputs, orig, [t.image_id for t in batch.targets])
    gts = [t.gt for t in batch.targets]
    metric = HICODetMAP(num_hois=vocab.num_hois, protocol="official", rare_hois=vocab.rare_hois,
                        hoi_to_object=vocab.hoi_to_object().tolist())
    metric.update(preds, gts)
    result = metric.compute()
    # most annotated triplets of the training images are found again (an untrained model scores ~0)
    assert result["mAP_full"] >= 50.0, result["mAP_full"]


def test_module_pickles_and_keeps_its_outputs(eight_images):
    """`ddp_spawn` and multiprocessing pickle the LightningModule: no lambdas or open handles inside."""
    import pickle

    vocab, batch, root = eight_images
    torch.manual_seed(0)
    module = HOICLIPModule(vocabulary=str(root / "vocabulary.json"), net=HOICLIPConfig(**TINY)).eval()
    copy = pickle.loads(pickle.dumps(module))
    with torch.no_grad():
        a, b = module(batch, all_classes=True), copy(batch, all_classes=True)
    torch.testing.assert_close(a.hoi_logits, b.hoi_logits)
    assert type(copy.val_metric) is HICODetMAP and copy.val_metric.num_hois == vocab.num_hois
