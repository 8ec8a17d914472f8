import torch

import ssdlite_model
from ssdlite_model.data import ShapesDataset, collate_detection
from ssdlite_model.loss import MultiBoxLoss, targets_to_fractions


def test_tiny_model_overfits_two_images():
    torch.manual_seed(0)
    model = ssdlite_model.build_ssdlite(ssdlite_model.tiny(num_classes=4, image_size=96))
    images, targets = collate_detection([ShapesDataset(2, 96, num_classes=3, seed=1)[i] for i in range(2)])
    targets = targets_to_fractions(targets, 96, 96)
    criterion = MultiBoxLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(200):
        loc, conf = model(images)
        loss = criterion(loc, conf, model.priors, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5
    model.eval()
    det = model.detect(images[:1], score_threshold=0.5)[0]
    assert sorted(det["labels"].tolist()) == sorted(targets[0]["labels"].tolist())
    from ssdlite_model.evaluate import evaluate_detections

    pixel_targets = [{**t, "boxes": t["boxes"] * 96} for t in targets]
    metrics = evaluate_detections(model.detect(images), pixel_targets, ("circle", "square", "triangle"))
    assert metrics.map50 > 0.9
