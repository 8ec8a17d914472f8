import torch

import ssdlite_model
from ssdlite_model.boxes import BoxCoder, PriorMatcher
from ssdlite_model.loss import MultiBoxLoss
from ssdlite_model.postprocess import postprocess_detections
from torchvision.ops import box_convert


def _priors():
    return ssdlite_model.build_ssdlite(ssdlite_model.tiny(image_size=96)).priors


def test_encode_decode_round_trip():
    coder = BoxCoder((0.1, 0.2))
    priors = _priors()
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(len(priors), 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(len(priors), 2, generator=g) * 0.4], dim=1)
    offsets = coder.encode(boxes, priors)
    assert not torch.allclose(offsets, torch.zeros_like(offsets))
    torch.testing.assert_close(coder.decode(offsets, priors), boxes, atol=1e-5, rtol=1e-5)


def test_matching_gives_every_box_a_prior():
    priors_xyxy = box_convert(_priors(), "cxcywh", "xyxy")
    # Small boxes overlap no prior at IoU >= 0.5; forcing must still give each one a prior.
    gt = torch.tensor([[0.0, 0.0, 0.05, 0.05], [0.5, 0.5, 0.56, 0.52], [0.1, 0.1, 0.9, 0.9]])
    matches = PriorMatcher(0.5)(gt, priors_xyxy)
    assert set(matches[matches >= 0].tolist()) == {0, 1, 2}
    assert (PriorMatcher(0.5)(torch.zeros(0, 4), priors_xyxy) == -1).all()


def test_loss_is_finite_with_empty_targets():
    priors = _priors()
    loc = torch.randn(2, len(priors), 4, requires_grad=True)
    conf = torch.randn(2, len(priors), 4, requires_grad=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    out = MultiBoxLoss()(loc, conf, priors, [empty, empty])
    assert torch.isfinite(out["loss"]) and out["loc"] == 0 and out["conf"] > 0
    out["loss"].backward()
    assert torch.isfinite(conf.grad).all()


def test_hard_negative_mining_keeps_three_to_one():
    loss = MultiBoxLoss(neg_pos_ratio=3)
    conf_loss = torch.rand(2, 100)
    positive = torch.zeros(2, 100, dtype=torch.bool)
    positive[0, :5] = True
    positive[1, :7] = True
    negative = loss.mine_negatives(conf_loss, positive)
    assert negative.sum(dim=1).tolist() == [15, 21]
    assert not (negative & positive).any()
    # The mined negatives are the hardest ones.
    hardest = conf_loss[0, 5:].topk(15).indices + 5
    assert set(hardest.tolist()) == set(negative[0].nonzero().flatten().tolist())


def test_nms_hand_made_case():
    coder = BoxCoder()
    priors = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.26, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    loc = torch.zeros(1, 3, 4)  # boxes equal to the priors
    conf = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 3.0]]])
    (det,) = postprocess_detections(loc, conf, priors, [(100, 100)], coder, score_threshold=0.5, nms_threshold=0.5)
    # Prior 1 overlaps prior 0 (same class, IoU ~0.9) and is suppressed; prior 2 is another class.
    assert det["labels"].tolist() == [1, 2]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([15.0, 15.0, 35.0, 35.0]))
    assert det["scores"][0] > det["scores"][1]


def test_detect_with_no_objects_returns_empty_tensors():
    model = ssdlite_model.build_ssdlite(ssdlite_model.tiny(image_size=96)).eval()
    dets = model.detect(torch.rand(3, 3, 96, 96), score_threshold=1.1)
    assert len(dets) == 3
    for d in dets:
        assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["labels"].shape == (0,)
        assert d["labels"].dtype == torch.int64


def _per_image_reference(loc, conf, priors, image_sizes, coder, score_threshold=0.01, nms_threshold=0.6,
                         max_detections=100, per_class_candidates=200):
    """The former per-image loop, kept here as the reference the batched post-processing must equal."""
    from torchvision.ops import batched_nms

    scores_all = conf.softmax(dim=-1)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        boxes = coder.decode(loc[i], priors).clamp(0.0, 1.0) * torch.tensor([w, h, w, h], dtype=loc.dtype)
        scores = scores_all[i, :, 1:]
        top_scores, top_idx = scores.topk(min(per_class_candidates, scores.shape[0]), dim=0)
        rank_idx, class_idx = (top_scores > score_threshold).nonzero(as_tuple=True)
        prior_idx = top_idx[rank_idx, class_idx]
        cand_boxes, cand_scores, cand_labels = boxes[prior_idx], top_scores[rank_idx, class_idx], class_idx + 1
        kept = batched_nms(cand_boxes, cand_scores, cand_labels, nms_threshold)[:max_detections]
        results.append({"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]})
    return results


def test_batched_postprocess_equals_the_per_image_loop():
    from ssdlite_model.boxes import BoxCoder
    from ssdlite_model.postprocess import postprocess_detections

    torch.manual_seed(0)
    n, p, c = 5, 300, 6
    priors = torch.cat([torch.rand(p, 2) * 0.8 + 0.1, torch.rand(p, 2) * 0.3 + 0.05], dim=1)
    loc, conf = torch.randn(n, p, 4) * 0.5, torch.randn(n, p, c) * 3
    conf[2] = -10.0  # an image with nothing above the threshold
    conf[2, :, 0] = 10.0
    sizes = [(300, 300), (200, 400), (300, 300), (64, 128), (300, 300)]
    coder = BoxCoder()
    for max_det in (100, 7):
        got = postprocess_detections(loc, conf, priors, sizes, coder, max_detections=max_det, per_class_candidates=50)
        want = _per_image_reference(loc, conf, priors, sizes, coder, max_detections=max_det, per_class_candidates=50)
        assert len(got) == len(want) == n and len(got[2]["boxes"]) == 0
        for g, w in zip(got, want):
            assert len(g["scores"]) == len(w["scores"]) <= max_det
            assert torch.equal(g["scores"], w["scores"]) and torch.equal(g["labels"], w["labels"])
            assert torch.allclose(g["boxes"], w["boxes"], atol=1e-5)


def test_batchnorm_folding_keeps_outputs():
    import ssdlite_model
    from ssdlite_model.optimize import fold_batchnorm

    torch.manual_seed(0)
    model = ssdlite_model.build_ssdlite(ssdlite_model.tiny()).eval()
    for m in model.modules():  # non-trivial statistics, or folding would be checked against identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    n_bn = lambda net: sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert n_bn(folded) < n_bn(model) and n_bn(model) > 0
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        (l1, c1), (l2, c2) = model(x), folded(x)
    assert torch.allclose(l1, l2, atol=1e-4) and torch.allclose(c1, c2, atol=1e-4)
